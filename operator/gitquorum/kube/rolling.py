"""Rolling updates: which outdated replica is replaced next, if any (pure decisions).

Every replica pod carries the revision of what the operator rendered into it
(``manifests.revision``). A pod of another revision than the one rendered now is outdated:
after an operator upgrade (a new image) or a change of the spec (resources, placement ...).
Outdated replicas are replaced one at a time, on their own volume, so a replacement catches
up from its own data. Followers go first; the leader goes last, after a switchover to an
updated follower, so that leadership moves once per update.

A replacement starts only while every member is in sync, votes and runs in the current term
(the previous replacement is complete), and only while the voters left without it still
form a majority of ``spec.replicas`` in sync: a planned step never lowers fault tolerance
below what a single replica down costs. Before the first replacement of an update, every
running replica must accept the protocol version that the new replicas speak.
"""

import dataclasses
import enum
from collections.abc import Mapping

from gitquorum.kube import planning
from gitquorum.replication import decisions, versions


class Action(enum.Enum):
    NONE = "None"
    """Every replica is of the wanted revision."""
    REPORT = "Report"
    """OnDelete: outdated replicas are only reported."""
    WAIT = "Wait"
    """An update is due but must wait (the message says for what)."""
    REPLACE = "Replace"
    """Delete this follower's pod; it is recreated at the new revision on its volume."""
    SWITCHOVER = "Switchover"
    """Only the leader is outdated: move leadership to ``replica`` first."""


@dataclasses.dataclass(frozen=True)
class Update:
    action: Action
    message: str
    replica: str | None = None
    outdated: tuple[str, ...] = ()


NO_UPDATE = Update(Action.NONE, "")


def plan(
    durable: planning.Durable,
    observed: Mapping[str, planning.Observed],
    *,
    revision: str,
    replicas: int,
    strategy: str,
) -> Update:
    """The update step for this pass."""
    outdated = outdated_replicas(durable, observed, revision)
    if not outdated:
        return Update(Action.NONE, f"all replicas run revision {revision}")
    listed = ", ".join(outdated)
    if strategy == "OnDelete":
        return Update(
            Action.REPORT,
            f"{len(outdated)} replica(s) outdated ({listed}); updateStrategy OnDelete: "
            "delete a replica's pod to update it",
            outdated=outdated,
        )
    blocker = _blocker(durable, observed, replicas)
    if blocker is not None:
        return Update(Action.WAIT, f"update of {listed} waits: {blocker}", outdated=outdated)
    followers = [name for name in outdated if name != durable.leader]
    if replicas == 1:
        # No copy to keep serving: the only replica restarts on its volume (documented).
        followers = list(outdated)
    if followers:
        chosen = followers[0]
        return Update(
            Action.REPLACE,
            f"replacing replica {chosen} with revision {revision} on its own volume "
            f"({len(outdated) - 1} more outdated after it)",
            replica=chosen,
            outdated=outdated,
        )
    target = switchover_target(durable, observed, revision=revision)
    if target is None:
        return Update(
            Action.WAIT,
            f"update of leader {durable.leader} waits for an updated follower in sync",
            outdated=outdated,
        )
    return Update(
        Action.SWITCHOVER,
        f"leader {durable.leader} is the last outdated replica: switching over to {target}",
        replica=target,
        outdated=outdated,
    )


def outdated_replicas(
    durable: planning.Durable, observed: Mapping[str, planning.Observed], revision: str
) -> tuple[str, ...]:
    """Members whose pod exists and is of another revision, in serial order."""
    found = []
    for member in durable.members:
        item = observed.get(member.name)
        if item is not None and item.pod and not item.deleting and item.revision != revision:
            found.append(member.name)
    return tuple(sorted(found, key=_serial))


def _blocker(
    durable: planning.Durable, observed: Mapping[str, planning.Observed], replicas: int
) -> str | None:
    """Why no replica may be replaced now, or None."""
    if len(durable.members) != replicas or len(durable.voters) != replicas:
        return "the membership is changing (scale or repair in progress)"
    if durable.leader is None:
        return "no leader"
    for member in durable.members:
        item = observed.get(member.name) or planning.Observed(member.name)
        if item.deleting or not item.pod:
            return f"replica {member.name} is being replaced"
        if not item.in_sync or item.report is None:
            return f"replica {member.name} is {item.state}, not in sync"
        if item.report.configured_term != durable.term:
            return f"replica {member.name} has not taken term {durable.term} yet"
        if not item.report.understands(versions.CURRENT):
            return (
                f"replica {member.name} does not accept protocol version {versions.CURRENT} "
                "that the new replicas speak: update through a release that does first"
            )
    # Every member is in sync: one down leaves replicas - 1 of them voting in sync.
    if replicas > 1 and replicas - 1 < decisions.quorum(replicas):
        return (
            f"with {replicas} replicas every push needs all of them, so replacing one would "
            "stop writes; delete a replica's pod to update it, or scale to 3"
        )
    return None


def switchover_target(
    durable: planning.Durable,
    observed: Mapping[str, planning.Observed],
    *,
    revision: str | None = None,
    wanted: str | None = None,
) -> str | None:
    """An in-sync voting follower to hand leadership to: ``wanted`` if it qualifies (None
    if it does not), else one of ``revision`` if there is one, else any."""
    candidates = []
    for member in durable.members:
        item = observed.get(member.name)
        if member.name == durable.leader or not member.voter or item is None:
            continue
        if not item.in_sync or item.deleting or item.report is None:
            continue
        if item.report.configured_term != durable.term or not item.report.eligible:
            continue
        candidates.append(item)
    if wanted is not None:
        return wanted if any(item.name == wanted for item in candidates) else None
    candidates.sort(key=lambda item: (item.revision != revision, _serial(item.name)))
    return candidates[0].name if candidates else None


def _serial(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class Slots:
    """How many repositories may roll at once (``--max-concurrent-updates``): an operator
    upgrade outdates every replica of every repository, and restarting them all together
    would take every repository through a switchover at the same moment."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.holders: set[str] = set()

    def take(self, repository: str) -> bool:
        """Whether ``repository`` may replace a replica now; it keeps its slot until done."""
        if repository in self.holders:
            return True
        if len(self.holders) >= self.limit:
            return False
        self.holders.add(repository)
        return True

    def release(self, repository: str) -> None:
        self.holders.discard(repository)
