"""The decisions of replication, as pure functions: quorums, leader choice, leases, catch-up.

Everything here is arithmetic over reported state, with no I/O and no clock of its own, so
that the replica, the local controller and the Kubernetes operator decide alike, and so that
the rules can be tested exhaustively over small clusters (see tests/unit/test_decisions.py).

The log. Every replica applies ref transactions in one order; the n-th applied transaction
gives the replica generation n. A leader proposes transaction n+1 (``prepare``): followers
store its objects and its exact ref updates durably but apply nothing. Once a majority of the
voters (leader included) holds it, it is decided: it will be applied everywhere, and the
leader applies it (``commit``). A log position is ``(term, generation, seq)`` of the newest
entry a replica holds, prepared or applied: the term of the leader that proposed it, its
generation, and the leader's count of proposals in that term, which orders two proposals
for the same generation (the first one failed to reach a majority and was abandoned).
Positions compare as tuples, newest term first, as Raft compares logs.

Why the leader choice is safe: a decided transaction is held by a majority of voters; a new
leader is chosen only from the answers of a majority of voters, which shares at least one
replica with it; the chosen one holds the newest position among the answers, so it holds
every decided transaction, and it proposes again whatever it holds prepared before any new
write.
"""

import dataclasses
import enum
from collections.abc import Collection, Iterable, Mapping


@dataclasses.dataclass(frozen=True, order=True)
class Position:
    """The newest entry of a replica's log: who proposed it, which generation, which try."""

    term: int = 0
    generation: int = 0
    seq: int = 0


ORIGIN = Position()
"""The position of an empty repository that never applied anything."""


def quorum(voters: int) -> int:
    """How many voters make a majority: with 2 voters both, with 3 two, with 5 three."""
    if voters < 1:
        raise ValueError(f"a repository needs at least one voter, got {voters}")
    return voters // 2 + 1


def has_quorum(holders: Iterable[str], voters: Collection[str]) -> bool:
    """Whether the replicas in ``holders`` that are voters make a majority of ``voters``."""
    return len(set(holders) & set(voters)) >= quorum(len(voters))


@dataclasses.dataclass(frozen=True)
class Report:
    """What one replica answered when asked for its state before a leader is chosen."""

    replica: str
    term: int
    """The newest term the replica has seen."""
    position: Position
    eligible: bool = True
    """False while the replica rebuilds or repairs: its refs may be half-way."""
    applied: bool = True
    """Whether the transaction at its position is applied here, not only prepared."""


class Verdict(enum.Enum):
    """The outcome of a leader choice."""

    CHOSEN = "Chosen"
    NO_QUORUM = "NoQuorum"
    NEWEST_INELIGIBLE = "NewestIneligible"


@dataclasses.dataclass(frozen=True)
class Election:
    """Who leads next, in which term, or why nobody can."""

    verdict: Verdict
    leader: str | None
    term: int
    reason: str


def choose_leader(
    reports: Iterable[Report],
    *,
    voters: Collection[str],
    current_term: int = 0,
    prefer: str | None = None,
) -> Election:
    """Chooses the next leader from the replicas that answered.

    Only voters' answers count, and a majority of them must have answered: fewer could all
    have missed a decided transaction. The leader must hold the newest position among the
    answers; of several that do, one that applied it wins over one that only prepared it,
    then ``prefer`` (the current leader, say), then the lowest name, so that repeated choices
    are stable. The new term is above every term seen.

    Applied first, because equal positions are the same transaction, decided if anyone
    applied it: a leader that only prepared it proposes it again as the next generation, which
    replicas that applied it are past and refuse, and with a majority of them it would wait
    for a quorum that never comes.
    """
    reports = list(reports)
    seen_term = max([current_term, *(report.term for report in reports)])
    # One answer per voter, however often it answered: a repeated answer is not a majority.
    answers = list({r.replica: r for r in reports if r.replica in voters}.values())
    if len(answers) < quorum(len(voters)):
        return Election(
            Verdict.NO_QUORUM,
            None,
            seen_term,
            f"{len(answers)} of {len(voters)} voters answered; "
            f"a leader needs {quorum(len(voters))}",
        )
    newest = max(report.position for report in answers)
    candidates = sorted(
        report.replica for report in answers if report.position == newest and report.eligible
    )
    if not candidates:
        holders = sorted(report.replica for report in answers if report.position == newest)
        return Election(
            Verdict.NEWEST_INELIGIBLE,
            None,
            seen_term,
            f"the newest state is on {', '.join(holders)}, which cannot lead while rebuilding",
        )
    applied = [r.replica for r in answers if r.replica in candidates and r.applied]
    if applied:
        candidates = sorted(applied)
    leader = prefer if prefer in candidates else candidates[0]
    return Election(
        Verdict.CHOSEN, leader, seen_term + 1, f"{leader} holds the newest state {newest}"
    )


class Prepared(enum.Enum):
    """What a new leader does with the transaction it holds prepared."""

    NONE = "none"
    PROPOSE_AGAIN = "propose-again"
    """It follows the applied state: propose it in the new term, as the next transaction."""
    DISCARD = "discard"
    """It is at or below the applied generation: superseded, never to be applied."""


def resolve_prepared(prepared: Position | None, *, generation: int) -> Prepared:
    """A new leader's decision on its prepared transaction, before it takes any write.

    The old leader may have applied it and readers may have seen it, and it may be held by
    a majority: it can only be completed, never dropped, as long as it is the next one.
    """
    if prepared is None:
        return Prepared.NONE
    if prepared.generation > generation + 1:
        # A replica stores only the generation after the one it applied: this state is a bug.
        raise ValueError(
            f"prepared generation {prepared.generation} does not follow applied {generation}"
        )
    if prepared.generation == generation + 1:
        return Prepared.PROPOSE_AGAIN
    return Prepared.DISCARD


class Sync(enum.Enum):
    """How a follower stands against the leader's applied state."""

    IN_SYNC = "InSync"
    APPLY_PREPARED = "ApplyPrepared"
    """The leader applied the very transaction the follower holds prepared."""
    BEHIND = "Behind"
    DIVERGED = "Diverged"
    """Same generation, different refs (or ahead of the leader): repaired from the leader."""


@dataclasses.dataclass(frozen=True)
class Applied:
    """An applied state as replicas compare it: generation, last transaction, checksum."""

    generation: int
    transaction: str
    """Identifier of the transaction that produced this generation ('' for none)."""
    checksum: str

    @classmethod
    def from_message(cls, message: Mapping[str, object]) -> "Applied":
        """The applied state a replication message or answer carries (KeyError if none)."""
        return cls(
            int(str(message["generation"])),
            str(message["transaction"]),
            str(message["checksum"]),
        )


def compare(
    follower: Applied, leader: Applied, *, prepared: str | None, prepared_generation: int = 0
) -> Sync:
    """Where a follower stands, from its applied state, its prepared one, and the leader's."""
    if follower.generation == leader.generation:
        return Sync.IN_SYNC if follower.checksum == leader.checksum else Sync.DIVERGED
    if follower.generation > leader.generation:
        return Sync.DIVERGED
    if (
        leader.generation == follower.generation + 1
        and prepared is not None
        and prepared == leader.transaction
        and prepared_generation == leader.generation
    ):
        return Sync.APPLY_PREPARED
    return Sync.BEHIND


def commit_wait(now: float, *, lease_ends: Mapping[str, float], applied: Collection[str]) -> float:
    """Seconds the leader waits before acknowledging a write, for read-your-writes.

    A follower that has not confirmed applying the write may still serve reads under the
    lease it was last granted; the acknowledgement waits until every such lease has lapsed.
    """
    pending = [end for replica, end in lease_ends.items() if replica not in applied]
    return max([0.0, *(end - now for end in pending)])


def promotion_wait(
    *,
    leader_lease: float,
    follower_lease: float,
    previous_leader_stopped: bool,
    unconfirmed: Collection[str],
) -> float:
    """Seconds a new leader waits, after a majority took its term, before reads and writes.

    The old leader serves reads while a majority answered its heartbeats within
    ``leader_lease``; those answers came before they took the new term, so that lease ends
    within ``leader_lease`` of now. A follower may hold a read lease from the old leader for
    ``follower_lease`` after that, unless it has since taken the new term (it drops its lease
    then). Nothing is waited for a leader known to be stopped (its process is gone) whose
    followers have all taken the new term.
    """
    own = 0.0 if previous_leader_stopped else leader_lease
    granted = leader_lease + follower_lease if unconfirmed else 0.0
    return max(own, granted)


def may_grant_lease(*, follower: Applied, leader: Applied, leading: bool) -> bool:
    """Whether the leader lets a follower serve reads: only a leader, only to one in sync.

    Transaction identifiers are not compared: a transaction proposed again by a new leader,
    or a state copied by catch-up, is the same state under another name.
    """
    return (
        leading
        and follower.generation == leader.generation
        and follower.checksum == leader.checksum
    )


def missing_generations(follower: Applied, leader: Applied) -> int:
    """How many transactions a follower lags behind (0 when in sync or ahead)."""
    return max(0, leader.generation - follower.generation)
