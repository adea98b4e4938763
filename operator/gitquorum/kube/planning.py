"""What the operator does next for one repository: pure decisions over what it observed.

Durable state (term, leader, the members and which of them vote) lives in the GitRepository's
status and changes one step at a time, each step written with optimistic concurrency before
any replica or object acts on it. Everything else is derived on every pass from the objects
and the replicas' own reports, so an operator restart loses nothing.

Membership changes follow the single-change rule: at most one voter joins or leaves per step,
so any majority of the old voters meets any majority of the new ones. A new replica joins as
a non-voter, is rebuilt from the leader, and votes only once it reports itself in sync. A
voter leaves (lost node, scale-down) only while enough of the remaining voters are in sync to
form their majority, so the last in-sync copies are never the ones given up.
"""

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from gitquorum.kube import names
from gitquorum.replication import decisions, membership, reports

UNREACHABLE = "http://127.0.0.1:1"
"""Address given for a voter with no pod address: nothing listens on port 1, so peers fail
at once, as they should for a replica that is down; the voter still counts in the majority."""


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    voter: bool


@dataclasses.dataclass(frozen=True)
class Durable:
    """The part of the status that decisions rest on."""

    term: int = 0
    leader: str | None = None
    members: tuple[Member, ...] = ()
    next_serial: int = 1
    handed_off: str | None = None
    """The leader that handed this term over by switchover: it serves no reads since, so the
    configuration lists it as stopped and the new leader need not wait for its lease."""

    @property
    def voters(self) -> frozenset[str]:
        return frozenset(member.name for member in self.members if member.voter)

    @property
    def member_names(self) -> frozenset[str]:
        return frozenset(member.name for member in self.members)

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> "Durable":
        members = tuple(
            Member(str(item["name"]), bool(item.get("voter", False)))
            for item in status.get("members") or ()
        )
        return cls(
            term=int(status.get("term") or 0),
            leader=status.get("leader") or None,
            members=members,
            next_serial=int(status.get("nextSerial") or 1),
            handed_off=status.get("handedOff") or None,
        )

    def to_status(self) -> dict[str, Any]:
        # No leader is "": the schema does not let leader be null, and the API server drops a
        # null it does not allow, so a pass comparing its status with the stored one would
        # find them different for ever (and write the same status again on every pass).
        return {
            "term": self.term,
            "leader": self.leader or "",
            "members": [{"name": m.name, "voter": m.voter} for m in self.members],
            "nextSerial": self.next_serial,
            "handedOff": self.handed_off,
        }


@dataclasses.dataclass(frozen=True)
class Observed:
    """One replica as the operator sees it on this pass."""

    name: str
    pod: bool = False
    deleting: bool = False
    phase: str | None = None
    ip: str | None = None
    node: str | None = None
    ready: bool = False
    unschedulable: str | None = None
    """The scheduler's reason when the pod cannot be placed (what the autoscaler reacts to)."""
    claim: bool = False
    node_lost: bool = False
    """The pod's (or its volume's) node is gone or NotReady past the grace period, or the
    replica waited for its cordoned node past ``cordonedNodeGraceSeconds``."""
    cordoned: str | None = None
    """Why the replica waits for a cordoned node (it was evicted by a drain), if it does."""
    revision: str = ""
    """The pod's revision annotation ("" for a pod rendered before revisions existed)."""
    report: reports.ReplicaStatus | None = None
    """The replica's /admin/status answer, None when it did not answer."""
    silent: float = 0.0
    """Seconds since the replica last answered (since the operator started, if never)."""

    @property
    def state(self) -> str:
        if self.node_lost:
            return "Lost"
        if self.report is not None:
            return self.report.state or "Starting"
        if not self.pod or self.phase == "Pending" or self.unschedulable:
            return "Pending"
        return "Starting"

    @property
    def in_sync(self) -> bool:
        return self.report is not None and self.state == "InSync" and not self.node_lost


class Kind(enum.Enum):
    BOOTSTRAP = "Bootstrapped"
    ELECT = "LeaderElected"
    NO_LEADER = "NoLeader"
    REMOVE_LOST = "ReplicaLost"
    ADD = "ReplicasAdded"
    PROMOTE = "ReplicaPromoted"
    REMOVE_EXCESS = "ReplicaRemoved"
    WAIT = "Waiting"


@dataclasses.dataclass(frozen=True)
class Step:
    """One decision: the durable state after it (None: unchanged) and why."""

    kind: Kind
    message: str
    durable: Durable | None = None


def next_step(
    durable: Durable,
    observed: Mapping[str, Observed],
    *,
    replicas: int,
    existing_claims: Iterable[str] = (),
    leader_timeout: float,
    repository: str,
) -> Step | None:
    """The one durable change to make now, or None when the membership is as it should be."""
    if not durable.members:
        return _bootstrap(durable, replicas, existing_claims, repository)
    if _leader_lost(durable, observed, leader_timeout):
        return _elect(durable, observed)
    for step in (
        _remove_lost(durable, observed, replicas),
        _remove_excess(durable, observed, replicas),
        _add(durable, replicas, repository),
        _promote(durable, observed, replicas),
    ):
        if step is not None:
            return step
    return None


def _bootstrap(
    durable: Durable, replicas: int, existing_claims: Iterable[str], repository: str
) -> Step:
    adopted = sorted(
        (claim for claim in existing_claims if names.serial(repository, claim) is not None),
        key=lambda claim: names.serial(repository, claim) or 0,
    )
    if adopted:
        # A status lost or wiped while volumes remain: their data is the repository, so the
        # volumes become the voters again rather than being replaced by empty ones.
        serials = [names.serial(repository, claim) or 0 for claim in adopted]
        members = tuple(Member(claim, True) for claim in adopted)
        return Step(
            Kind.BOOTSTRAP,
            f"adopted existing volumes {', '.join(adopted)} as the repository's replicas",
            dataclasses.replace(durable, members=members, next_serial=max(serials) + 1),
        )
    # A new repository is empty on every replica: all of them vote from the start.
    members = tuple(
        Member(names.replica(repository, serial), True) for serial in range(1, replicas + 1)
    )
    return Step(
        Kind.BOOTSTRAP,
        f"{replicas} replica(s) planned: {', '.join(m.name for m in members)}",
        dataclasses.replace(durable, members=members, next_serial=replicas + 1),
    )


def _leader_lost(durable: Durable, observed: Mapping[str, Observed], timeout: float) -> bool:
    if durable.leader is None or durable.leader not in durable.member_names:
        return True
    leader = observed.get(durable.leader)
    if leader is None or not leader.pod or leader.node_lost:
        return True
    if leader.report is None:
        # A leader pod being deleted that still answers is handed off (a switchover), not
        # replaced by an election; once it is silent, it is lost like any other.
        return leader.silent >= timeout or (leader.deleting and leader.silent > 0)
    return leadership_lost(durable, leader.report)


def leadership_lost(durable: Durable, answer: reports.ReplicaStatus) -> bool:
    """Whether a leader that answers has stopped leading the status's term: it reports a
    newer term (some message raised it), or it took this term and no longer leads it."""
    if answer.term > durable.term:
        return True
    return answer.configured_term == durable.term and not answer.leads


def _elect(durable: Durable, observed: Mapping[str, Observed]) -> Step:
    reports = [
        decisions.Report(
            replica=item.name,
            term=item.report.term,
            position=item.report.position,
            eligible=item.report.eligible,
            applied=item.report.position.generation == item.report.generation,
        )
        for item in observed.values()
        # A replica on its way out (pod deleting, node lost) must not be chosen, even if it
        # still answers.
        if item.report is not None and not item.node_lost and not item.deleting
    ]
    election = decisions.choose_leader(reports, voters=durable.voters, current_term=durable.term)
    if election.leader is None:
        return Step(Kind.NO_LEADER, election.reason)
    previous = f" (was {durable.leader})" if durable.leader else ""
    return Step(
        Kind.ELECT,
        f"term {election.term}: {election.leader} leads{previous}: {election.reason}",
        dataclasses.replace(durable, term=election.term, leader=election.leader, handed_off=None),
    )


def _safe_to_drop_voter(
    durable: Durable, observed: Mapping[str, Observed], name: str, replicas: int
) -> bool:
    """Whether ``name`` may stop voting: the voters left hold a majority in sync, and their
    majority is still a majority of ``spec.replicas`` (a write is never acknowledged by fewer
    copies than the spec promises, however many voters were lost)."""
    remaining = durable.voters - {name}
    if not remaining or decisions.quorum(len(remaining)) < decisions.quorum(replicas):
        return False
    in_sync = sum(1 for voter in remaining if voter in observed and observed[voter].in_sync)
    return in_sync >= decisions.quorum(len(remaining))


def _without(durable: Durable, name: str) -> Durable:
    return dataclasses.replace(durable, members=tuple(m for m in durable.members if m.name != name))


def _remove_lost(durable: Durable, observed: Mapping[str, Observed], replicas: int) -> Step | None:
    for member in durable.members:
        item = observed.get(member.name)
        if item is None or not item.node_lost or member.name == durable.leader:
            continue
        if member.voter and not _safe_to_drop_voter(durable, observed, member.name, replicas):
            return Step(
                Kind.WAIT,
                f"replica {member.name} is on a lost node ({item.node}); it is replaced once "
                "enough of the other replicas are in sync (and earlier replacements vote)",
            )
        cause = item.cordoned or f"replica {member.name} lost with node {item.node}"
        return Step(
            Kind.REMOVE_LOST,
            f"{cause}: it leaves the quorum and a new replica is built on another node",
            _without(durable, member.name),
        )
    return None


def _remove_excess(
    durable: Durable, observed: Mapping[str, Observed], replicas: int
) -> Step | None:
    if len(durable.members) <= replicas:
        return None

    def badness(member: Member) -> tuple[bool, bool, int]:
        item = observed.get(member.name)
        in_sync = item is not None and item.in_sync
        return (not member.voter, not in_sync, names.serial_or_zero(member.name))

    candidates = sorted(
        (m for m in durable.members if m.name != durable.leader), key=badness, reverse=True
    )
    for member in candidates:
        if member.voter and not _safe_to_drop_voter(durable, observed, member.name, replicas):
            continue
        return Step(
            Kind.REMOVE_EXCESS,
            f"scaling down to {replicas}: replica {member.name} leaves",
            _without(durable, member.name),
        )
    return Step(
        Kind.WAIT,
        f"scaling down to {replicas} waits: removing any replica now would leave too few "
        "in sync for a majority",
    )


def _add(durable: Durable, replicas: int, repository: str) -> Step | None:
    missing = replicas - len(durable.members)
    if missing <= 0:
        return None
    serials = range(durable.next_serial, durable.next_serial + missing)
    added = tuple(Member(names.replica(repository, serial), False) for serial in serials)
    return Step(
        Kind.ADD,
        f"new replica(s) {', '.join(m.name for m in added)} join as non-voters until rebuilt",
        dataclasses.replace(
            durable,
            members=durable.members + added,
            next_serial=durable.next_serial + missing,
        ),
    )


def _promote(durable: Durable, observed: Mapping[str, Observed], replicas: int) -> Step | None:
    if len(durable.voters) >= replicas:
        return None
    for member in durable.members:
        item = observed.get(member.name)
        if member.voter or item is None or not item.in_sync or item.report is None:
            continue
        if item.report.configured_term != durable.term:
            continue
        promoted = tuple(
            Member(m.name, True) if m.name == member.name else m for m in durable.members
        )
        return Step(
            Kind.PROMOTE,
            f"replica {member.name} is in sync and now votes",
            dataclasses.replace(durable, members=promoted),
        )
    return None


def configuration(durable: Durable, observed: Mapping[str, Observed]) -> membership.Configuration:
    """What every replica is told: the term, the leader, each member's address."""
    assert durable.leader is not None
    members = []
    for member in durable.members:
        item = observed.get(member.name)
        if item is not None and item.ip and not item.node_lost:
            url = f"http://{item.ip}:{names.GIT_PORT}"
            peer_url = f"http://{item.ip}:{names.PEER_PORT}"
        elif member.voter or member.name == durable.leader:
            url = peer_url = UNREACHABLE
        else:
            continue  # a non-voter with no address yet: nobody needs to reach it
        members.append(membership.Member(member.name, url, peer_url, member.voter))
    stopped = frozenset(
        member.name
        for member in durable.members
        if (item := observed.get(member.name)) is None
        or not item.pod
        or item.node_lost
        or item.phase not in ("Running",)
        or member.name == durable.handed_off
    )
    return membership.Configuration(
        term=durable.term, leader=durable.leader, members=tuple(members), stopped=stopped
    )


def diverged(durable: Durable, observed: Mapping[str, Observed]) -> list[str]:
    """Replicas whose refs differ from the leader's at the same generation (or that say so):
    they repair themselves from the leader; the operator records that it happened."""
    leader = observed.get(durable.leader or "")
    if leader is None or leader.report is None:
        return []
    generation, checksum = leader.report.generation, leader.report.checksum
    found = []
    for item in observed.values():
        if item.report is None or item.name == durable.leader:
            continue
        same_generation = item.report.generation == generation
        if item.report.state == "Diverged" or (
            same_generation and item.report.checksum != checksum
        ):
            found.append(item.name)
    return sorted(found)


def serving(item: Observed, timeout: float) -> bool | None:
    """Whether clients should be sent to this replica: yes while it answers the operator, no
    once it has been silent for ``timeout`` or its node is lost; None: leave it as it is."""
    if item.node_lost or item.deleting:
        return False
    if item.report is not None:
        return True
    return False if item.silent >= timeout else None


def orphans(durable: Durable, present: Iterable[str]) -> list[str]:
    """Replica pods or volumes that no member owns (removed members): to be deleted."""
    return sorted(set(present) - durable.member_names)
