"""Switchover: a planned leader change from a running leader, failing no client operation.

1. The operator asks the leader to hand off to an in-sync follower (``/admin/handoff``): the
   leader stops admitting writes (new ones are held by every replica's forwarding layer, not
   refused), lets the admitted ones finish and waits until the successor has applied
   everything it has.
2. The operator writes the new term with the successor as leader to the status (optimistic
   concurrency, like every durable step) and configures the successor first, then the rest.
3. The successor takes office as after any election (the old leases lapse first), and the
   held writes reach it; the old leader, now a follower, forwards what it held.

Nothing acknowledged can be lost: the successor holds every applied transaction before the
term changes, the old leader admits nothing after it answered, and the new term fences it as
any election would. If the operator stops between 1 and 2, the old leader takes writes again
after ``Timing.handoff``; a stale write of the status (409) changes nothing.
"""

import dataclasses
from collections.abc import Mapping

from gitquorum.kube import names, planning
from gitquorum.replication import peerclient

HANDOFF_SECONDS = 5.0
"""How long the leader may take to finish the writes in flight and bring the successor up."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    durable: planning.Durable | None
    """The durable state to write (the successor leads a new term); None: not now."""
    message: str


async def hand_off(
    peers: peerclient.Peers,
    durable: planning.Durable,
    observed: Mapping[str, planning.Observed],
    successor: str,
) -> Outcome:
    """Steps 1 and the choice of the term of step 2; the caller writes and configures."""
    leader = observed.get(durable.leader or "")
    target = observed.get(successor)
    if leader is None or leader.ip is None or target is None or target.ip is None:
        return Outcome(None, f"switchover to {successor} waits: the leader or it has no address")
    message = {"term": durable.term, "to": successor, "timeout": HANDOFF_SECONDS}
    try:
        handed = await peers.call(
            _peer_url(leader.ip), "/admin/handoff", message, timeout=HANDOFF_SECONDS + 2
        )
    except peerclient.PeerError as error:
        if error.status != 404:
            return Outcome(None, f"switchover to {successor} waits: {error}")
        # A leader of a release before switchovers: the new term fences it, and only the
        # pushes in flight there fail (they would fail on its deletion anyway).
        handed = {}
    try:
        now = await peers.call(_peer_url(target.ip), "/admin/status", timeout=2.0)
    except peerclient.PeerError as error:
        return Outcome(None, f"switchover to {successor} waits: it did not answer: {error}")
    if handed and (
        now.get("generation") != handed.get("generation")
        or now.get("checksum") != handed.get("checksum")
    ):
        return Outcome(
            None,
            f"switchover to {successor} waits: it is at generation {now.get('generation')}, "
            f"the leader handed off at {handed.get('generation')}",
        )
    terms = [durable.term, int(now.get("term") or 0), int(handed.get("term") or 0)]
    terms += [item.report.term for item in observed.values() if item.report is not None]
    term = max(terms) + 1
    how = "after a hand-off" if handed else "without a hand-off (the leader cannot do one)"
    return Outcome(
        dataclasses.replace(
            durable, term=term, leader=successor, handed_off=durable.leader if handed else None
        ),
        f"term {term}: leadership moved from {durable.leader} to {successor} {how}",
    )


def _peer_url(ip: str) -> str:
    return f"http://{ip}:{names.PEER_PORT}"
