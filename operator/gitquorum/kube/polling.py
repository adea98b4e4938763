"""Which replicas a pass asks for their report, and when the leader's word stands for the rest.

A pass runs every second while replicas run, so that a silent leader is noticed fast. Asking
every replica every second costs a repository of three replicas three HTTP requests a second,
3,000 a second at 1,000 repositories, for answers that do not change while it is steady. The
leader already knows its followers: every heartbeat and every prepare reaches each of them,
and its report says, per follower, whether it is reachable and holds the leader's own
generation and checksum (``leading.Leadership.describe``).

So a steady repository's pass asks its leader alone, and a follower's last report, brought up
to the leader's position, stands for it while all of these hold:

- the follower said InSync the last time it was asked, under the leader's term, with nothing
  of its upkeep due, running or under a permit (maintenance turns are granted on its own
  word);
- the leader, asked in this pass, calls it reachable and in sync, without an error;
- its pod still has the address it was asked at;
- it was asked less than ``Settings.follower_poll_interval`` ago;
- the previous pass decided nothing (``Memory.settled``): a pass that changes membership,
  configuration or versions wants every replica's own word.

Anything else, and the follower is asked in the same pass. Leader loss is noticed as fast as
before: the leader is asked in every pass, and a pass whose leader is silent asks everyone.
"""

import dataclasses

from gitquorum.kube import planning
from gitquorum.replication import decisions, reports


@dataclasses.dataclass(frozen=True)
class Asked:
    """A replica's report as the operator last heard it from the replica itself."""

    report: reports.ReplicaStatus
    ip: str
    at: float
    """When (clock) it answered."""


def vouched(
    asked: Asked | None,
    *,
    item: planning.Observed,
    leader: reports.ReplicaStatus | None,
    now: float,
    interval: float,
) -> reports.ReplicaStatus | None:
    """The follower's report as the leader's view of it stands for it now; None: ask it."""
    if asked is None or leader is None or leader.leading is None:
        return None
    if item.ip != asked.ip or now - asked.at >= interval:
        return None
    own = asked.report
    if own.state != decisions.Sync.IN_SYNC.value or own.term != leader.term or _busy(own):
        return None
    view = (leader.leading.get("followers") or {}).get(item.name)
    if not isinstance(view, dict) or not _in_sync(view, leader):
        return None
    return dataclasses.replace(
        own,
        generation=leader.generation,
        checksum=leader.checksum,
        transaction=leader.transaction,
        position=leader.position,
        refs=leader.refs,
        lag=0,
        leader=leader.leader,
    )


def _in_sync(view: dict[str, object], leader: reports.ReplicaStatus) -> bool:
    return (
        view.get("reachable") is True
        and view.get("inSync") is True
        and not view.get("error")
        and view.get("generation") == leader.generation
    )


def _busy(report: reports.ReplicaStatus) -> bool:
    upkeep = report.upkeep
    return upkeep is not None and bool(upkeep.due or upkeep.running or upkeep.permit_seconds > 0)
