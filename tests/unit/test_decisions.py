"""The decisions of replication, checked exhaustively over clusters of 1, 2, 3 and 5 replicas.

The safety of the protocol rests on a few lines of arithmetic: a decided transaction is held
by a majority of voters, a leader is chosen from a majority's answers, and the one chosen
holds the newest position. Small clusters have few enough histories to try every one of them:
every set of holders, every set of replicas that answers, every older position the others may
hold. Each exhaustive test counts the cases it checked, so that a generator that silently
yields nothing fails instead of passing.
"""

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

import pytest

from gitquorum.replication import decisions

pytestmark = pytest.mark.unit

SIZES = [1, 2, 3, 5]

Position = decisions.Position
Report = decisions.Report
Verdict = decisions.Verdict

DECIDED = Position(term=2, generation=5, seq=3)
"""The decided transaction of the safety histories, held by a majority of voters."""

HOLDING = (
    DECIDED,
    # A later transaction proposed by a later leader, which necessarily holds DECIDED too.
    Position(term=3, generation=6, seq=1),
)

OLDER = (
    decisions.ORIGIN,
    Position(term=2, generation=4, seq=3),  # an older generation
    Position(term=2, generation=5, seq=2),  # the same generation, an abandoned earlier try
    Position(term=1, generation=5, seq=7),  # an older term's prepared entry, same generation
    Position(term=1, generation=6, seq=1),  # an older term's entry one further, never decided
)

OLD = Position(term=1, generation=3, seq=1)
NEW = Position(term=2, generation=4, seq=1)

NON_VOTERS = ("n1", "n2")
"""Non-voters sort before every voter, so that a rule choosing the lowest name would pick them."""


def cluster(size: int) -> tuple[str, ...]:
    return tuple(f"r{index}" for index in range(1, size + 1))


T = TypeVar("T")


def subsets(items: Sequence[T], *, min_size: int = 0) -> Iterator[tuple[T, ...]]:
    for size in range(min_size, len(items) + 1):
        yield from itertools.combinations(items, size)


def report(
    replica: str,
    position: Position,
    *,
    term: int | None = None,
    eligible: bool = True,
    applied: bool = True,
) -> Report:
    return Report(
        replica=replica,
        term=position.term if term is None else term,
        position=position,
        eligible=eligible,
        applied=applied,
    )


def applied(generation: int, transaction: str = "", checksum: str = "c0") -> decisions.Applied:
    return decisions.Applied(generation=generation, transaction=transaction, checksum=checksum)


# Quorums


@pytest.mark.parametrize(
    ("voters", "expected"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)]
)
def test_quorum_is_smallest_strict_majority(voters: int, expected: int) -> None:
    assert decisions.quorum(voters) == expected
    assert 2 * expected > voters >= 2 * (expected - 1)


@pytest.mark.parametrize("voters", [0, -1])
def test_quorum_rejects_no_voters(voters: int) -> None:
    with pytest.raises(ValueError, match="at least one voter"):
        decisions.quorum(voters)


@pytest.mark.parametrize("size", range(1, 8))
def test_has_quorum_counts_holding_voters_only(size: int) -> None:
    voters = cluster(size)
    checked = 0
    for holders in subsets(voters):
        for strangers in subsets(NON_VOTERS):
            expected = len(holders) >= decisions.quorum(size)
            # Non-voters and repeated names add nothing.
            for given in (holders + strangers, holders + holders + strangers):
                assert decisions.has_quorum(given, voters) is expected, (holders, strangers)
                checked += 1
    assert checked == 2**size * 2 ** len(NON_VOTERS) * 2


@pytest.mark.parametrize("size", range(1, 8))
def test_has_quorum_any_two_quorums_intersect(size: int) -> None:
    voters = cluster(size)
    quorums = [set(holders) for holders in subsets(voters) if decisions.has_quorum(holders, voters)]
    assert len(quorums) == sum(math.comb(size, k) for k in range(decisions.quorum(size), size + 1))
    for first, second in itertools.combinations(quorums, 2):
        assert first & second, (first, second)


# Leader choice: safety


def decided_histories(replicas: Sequence[str]) -> Iterator[dict[str, Position]]:
    """Every history in which a quorum holds DECIDED (or later) and the others hold older."""
    for holders in subsets(replicas, min_size=decisions.quorum(len(replicas))):
        others = [replica for replica in replicas if replica not in holders]
        for held in itertools.product(HOLDING, repeat=len(holders)):
            for old in itertools.product(OLDER, repeat=len(others)):
                yield dict(zip(holders, held, strict=True)) | dict(zip(others, old, strict=True))


def test_decided_histories_positions_are_ordered_as_intended() -> None:
    assert all(position < DECIDED for position in OLDER)
    assert all(position >= DECIDED for position in HOLDING)


@pytest.mark.parametrize("size", SIZES)
def test_choose_leader_elects_holder_of_decided_transaction_from_every_majority(
    size: int,
) -> None:
    replicas = cluster(size)
    needed = decisions.quorum(size)
    checked = 0
    for number, history in enumerate(decided_histories(replicas)):
        current_term = (0, 2, 5)[number % 3]
        # Every other replica saw a newer term than its newest entry's (an election it lost).
        reports = {
            replica: report(replica, history[replica], term=history[replica].term + index % 2)
            for index, replica in enumerate(replicas)
        }
        for answering in subsets(replicas):
            answers = [reports[replica] for replica in answering]
            election = decisions.choose_leader(answers, voters=replicas, current_term=current_term)
            checked += 1
            if len(answering) < needed:
                assert election.verdict is Verdict.NO_QUORUM, (history, answering, election)
                assert election.leader is None, (history, answering, election)
                continue
            assert election.verdict is Verdict.CHOSEN, (history, answering, election)
            assert election.leader in answering, (history, answering, election)
            assert history[election.leader] >= DECIDED, (history, answering, election)
            assert election.term > max(current_term, *(a.term for a in answers)), (
                history,
                answering,
                current_term,
                election,
            )
    expected = sum(
        math.comb(size, k) * len(HOLDING) ** k * len(OLDER) ** (size - k) * 2**size
        for k in range(needed, size + 1)
    )
    assert checked == expected


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("current_term", [0, 1, 4])
def test_choose_leader_term_exceeds_every_reported_and_current_term(
    size: int, current_term: int
) -> None:
    replicas = cluster(size)
    checked = 0
    for terms in itertools.product(range(4), repeat=size):
        reports = [
            report(replica, Position(term=min(term, 1), generation=1, seq=1), term=term)
            for replica, term in zip(replicas, terms, strict=True)
        ]
        for answering in subsets(range(size), min_size=decisions.quorum(size)):
            answers = [reports[index] for index in answering]
            election = decisions.choose_leader(answers, voters=replicas, current_term=current_term)
            seen = max(current_term, *(a.term for a in answers))
            assert election.verdict is Verdict.CHOSEN
            assert election.term > seen, (terms, answering, election)
            checked += 1
    majorities = sum(math.comb(size, k) for k in range(decisions.quorum(size), size + 1))
    assert checked == 4**size * majorities


@pytest.mark.parametrize("size", SIZES)
def test_choose_leader_no_quorum_below_majority_of_voters(size: int) -> None:
    replicas = cluster(size)
    for answering in subsets(replicas):
        if len(answering) >= decisions.quorum(size):
            continue
        election = decisions.choose_leader(
            [report(replica, NEW) for replica in answering], voters=replicas, current_term=3
        )
        assert election.verdict is Verdict.NO_QUORUM
        assert election.leader is None
        assert election.term >= 3
        assert f"{len(answering)} of {size} voters answered" in election.reason
        assert f"needs {decisions.quorum(size)}" in election.reason


# Leader choice: eligibility, preference, determinism


STATES = list(itertools.product((OLD, NEW), (True, False)))


def eligibility_cases(
    size: int,
) -> Iterator[tuple[list[Report], str | None, decisions.Election]]:
    """Every majority of answers, every (position, eligible) of each, every preference."""
    replicas = cluster(size)
    for answering in subsets(replicas, min_size=decisions.quorum(size)):
        for states in itertools.product(STATES, repeat=len(answering)):
            answers = [
                report(replica, position, eligible=eligible)
                for replica, (position, eligible) in zip(answering, states, strict=True)
            ]
            for prefer in (None, *replicas, "stranger"):
                election = decisions.choose_leader(answers, voters=replicas, prefer=prefer)
                yield answers, prefer, election


def eligibility_case_count(size: int) -> int:
    return sum(
        math.comb(size, k) * len(STATES) ** k * (size + 2)
        for k in range(decisions.quorum(size), size + 1)
    )


@pytest.mark.parametrize("size", SIZES)
def test_choose_leader_never_chooses_ineligible_replica(size: int) -> None:
    checked = 0
    for answers, _, election in eligibility_cases(size):
        checked += 1
        if election.leader is None:
            continue
        chosen = next(a for a in answers if a.replica == election.leader)
        assert chosen.eligible, (answers, election)
        assert chosen.position == max(a.position for a in answers), (answers, election)
    assert checked == eligibility_case_count(size)


@pytest.mark.parametrize("size", SIZES)
def test_choose_leader_newest_ineligible_when_only_ineligible_hold_newest(size: int) -> None:
    checked = 0
    for answers, _, election in eligibility_cases(size):
        newest = max(a.position for a in answers)
        holders = [a for a in answers if a.position == newest]
        if any(a.eligible for a in holders):
            assert election.verdict is Verdict.CHOSEN, (answers, election)
            continue
        checked += 1
        assert election.verdict is Verdict.NEWEST_INELIGIBLE, (answers, election)
        assert election.leader is None
        for holder in holders:
            assert holder.replica in election.reason, (answers, election)
        for other in answers:
            if other.position != newest:
                assert other.replica not in election.reason, (answers, election)
    assert checked > 0


@pytest.mark.parametrize("size", SIZES)
def test_choose_leader_prefers_preferred_among_newest_else_lowest_name(size: int) -> None:
    checked = 0
    for answers, prefer, election in eligibility_cases(size):
        newest = max(a.position for a in answers)
        candidates = sorted(a.replica for a in answers if a.position == newest and a.eligible)
        if not candidates:
            continue
        checked += 1
        expected = prefer if prefer in candidates else candidates[0]
        assert election.leader == expected, (answers, prefer, election)
    assert checked > 0


@pytest.mark.parametrize("size", [1, 2, 3])
def test_choose_leader_prefers_a_replica_that_applied_the_newest(size: int) -> None:
    """Every majority of answers, every (position, eligible, applied) of each, every
    preference: of the eligible holders of the newest position, those that applied it come
    first, then the preferred one, then the lowest name."""
    replicas = cluster(size)
    states = list(itertools.product((OLD, NEW), (True, False), (True, False)))
    checked = 0
    for answering in subsets(replicas, min_size=decisions.quorum(size)):
        for chosen in itertools.product(states, repeat=len(answering)):
            answers = [
                report(replica, position, eligible=eligible, applied=applied)
                for replica, (position, eligible, applied) in zip(answering, chosen, strict=True)
            ]
            newest = max(a.position for a in answers)
            holders = [a for a in answers if a.position == newest and a.eligible]
            if not holders:
                continue
            pool = sorted(a.replica for a in holders if a.applied) or sorted(
                a.replica for a in holders
            )
            for prefer in (None, *replicas):
                election = decisions.choose_leader(answers, voters=replicas, prefer=prefer)
                checked += 1
                expected = prefer if prefer in pool else pool[0]
                assert election.leader == expected, (answers, prefer, election)
    assert checked > 0


def test_choose_leader_skips_a_replica_that_only_prepared_what_others_applied() -> None:
    """Seen in the fault tests: a replica came back from a cut holding generation 21 prepared
    while the two others had applied it; elected for its lower name, it proposed generation
    21 again, which both refused as behind them, and writes stopped."""
    position = Position(term=2, generation=21, seq=17)
    election = decisions.choose_leader(
        [report("r1", position, applied=False), report("r3", position)],
        voters=cluster(3),
        prefer="r1",
    )
    assert election.leader == "r3"


def test_choose_leader_reports_newest_ineligible_with_readable_reason() -> None:
    election = decisions.choose_leader(
        [
            report("r1", OLD),
            report("r3", NEW, eligible=False),
            report("r2", NEW, eligible=False),
        ],
        voters=cluster(3),
    )
    assert election.verdict is Verdict.NEWEST_INELIGIBLE
    assert election.leader is None
    assert "r2, r3" in election.reason
    assert "rebuilding" in election.reason
    assert "r1" not in election.reason


def test_choose_leader_prefers_preferred_replica_among_newest() -> None:
    answers = [report(replica, NEW) for replica in cluster(3)]
    election = decisions.choose_leader(answers, voters=cluster(3), prefer="r2")
    assert election.verdict is Verdict.CHOSEN
    assert election.leader == "r2"


@pytest.mark.parametrize(
    ("prefer", "why"),
    [("r1", "older"), ("r3", "ineligible"), ("n1", "non-voter"), ("r9", "unknown")],
)
def test_choose_leader_ignores_preference_outside_candidates(prefer: str, why: str) -> None:
    answers = [
        report("r1", OLD),
        report("r2", NEW),
        report("r3", NEW, eligible=False),
        report("r4", NEW),
        report("n1", NEW),
    ]
    election = decisions.choose_leader(answers, voters=cluster(5), prefer=prefer)
    assert election.verdict is Verdict.CHOSEN, why
    assert election.leader == "r2", why


def test_choose_leader_ignores_report_order() -> None:
    answers = [report(replica, NEW) for replica in cluster(5)]
    answers[0] = report("r1", OLD)
    leaders = {
        decisions.choose_leader(order, voters=cluster(5)).leader
        for order in itertools.permutations(answers)
    }
    assert leaders == {"r2"}


@pytest.mark.parametrize("size", SIZES)
def test_choose_leader_non_voters_neither_count_nor_lead(size: int) -> None:
    replicas = cluster(size)
    newer = Position(term=NEW.term, generation=NEW.generation + 1, seq=1)
    checked = 0
    for answering in subsets(replicas):
        for strangers in subsets(NON_VOTERS):
            answers = [report(replica, NEW) for replica in answering]
            # Non-voters hold a newer position, the lowest names, and are preferred.
            answers += [report(stranger, newer, term=NEW.term) for stranger in strangers]
            for prefer in (None, "n1"):
                election = decisions.choose_leader(answers, voters=replicas, prefer=prefer)
                checked += 1
                if len(answering) < decisions.quorum(size):
                    assert election.verdict is Verdict.NO_QUORUM, (answering, strangers)
                    assert f"{len(answering)} of {size} voters" in election.reason
                    continue
                assert election.verdict is Verdict.CHOSEN, (answering, strangers, election)
                assert election.leader == min(answering), (answering, strangers, election)
    assert checked == 2**size * 2 ** len(NON_VOTERS) * 2


def test_choose_leader_counts_each_voter_once() -> None:
    # The decided transaction NEW is on r2 and r3; only r1, which lacks it, answered (twice).
    stale = report("r1", OLD)
    election = decisions.choose_leader([stale, stale], voters=cluster(3))
    assert election.verdict is Verdict.NO_QUORUM
    assert election.leader is None


def test_choose_leader_term_exceeds_non_voter_terms() -> None:
    answers = [report(replica, NEW) for replica in cluster(3)]
    answers.append(report("n1", OLD, term=7))
    election = decisions.choose_leader(answers, voters=cluster(3))
    assert election.verdict is Verdict.CHOSEN
    assert election.term > 7


# A new leader's prepared transaction


@pytest.mark.parametrize("generation", range(4))
def test_resolve_prepared_none_without_prepared(generation: int) -> None:
    assert decisions.resolve_prepared(None, generation=generation) is decisions.Prepared.NONE


@pytest.mark.parametrize("generation", range(4))
@pytest.mark.parametrize(("term", "seq"), [(0, 0), (1, 1), (3, 7)])
def test_resolve_prepared_proposes_next_generation_again(
    generation: int, term: int, seq: int
) -> None:
    prepared = Position(term=term, generation=generation + 1, seq=seq)
    outcome = decisions.resolve_prepared(prepared, generation=generation)
    assert outcome is decisions.Prepared.PROPOSE_AGAIN


@pytest.mark.parametrize("generation", range(4))
def test_resolve_prepared_discards_at_or_below_generation(generation: int) -> None:
    for old in range(generation + 1):
        for term, seq in itertools.product(range(3), range(3)):
            prepared = Position(term=term, generation=old, seq=seq)
            outcome = decisions.resolve_prepared(prepared, generation=generation)
            assert outcome is decisions.Prepared.DISCARD, (prepared, generation)


@pytest.mark.parametrize("ahead", [2, 3])
def test_resolve_prepared_beyond_next_generation_is_not_discarded(ahead: int) -> None:
    prepared = Position(term=2, generation=4 + ahead, seq=1)
    try:
        outcome = decisions.resolve_prepared(prepared, generation=4)
    except ValueError:
        return
    assert outcome is not decisions.Prepared.DISCARD


# A follower against the leader


def expected_sync(
    follower: decisions.Applied,
    leader: decisions.Applied,
    prepared: str | None,
    prepared_generation: int,
) -> decisions.Sync:
    if follower.generation == leader.generation:
        same = follower.checksum == leader.checksum
        return decisions.Sync.IN_SYNC if same else decisions.Sync.DIVERGED
    if follower.generation > leader.generation:
        return decisions.Sync.DIVERGED
    if (
        leader.generation == follower.generation + 1
        and prepared == leader.transaction
        and prepared_generation == leader.generation
    ):
        return decisions.Sync.APPLY_PREPARED
    return decisions.Sync.BEHIND


def test_compare_every_small_state() -> None:
    checked = 0
    for follower_generation, leader_generation in itertools.product(range(4), repeat=2):
        leader = applied(leader_generation, f"t{leader_generation}", "c-leader")
        for checksum, transaction in itertools.product(("c-leader", "c-other"), ("t", "u")):
            follower = applied(follower_generation, f"{transaction}{follower_generation}", checksum)
            for prepared, prepared_generation in itertools.product(
                (None, leader.transaction, "other"), range(5)
            ):
                sync = decisions.compare(
                    follower, leader, prepared=prepared, prepared_generation=prepared_generation
                )
                expected = expected_sync(follower, leader, prepared, prepared_generation)
                assert sync is expected, (follower, leader, prepared, prepared_generation)
                checked += 1
    assert checked == 4 * 4 * 2 * 2 * 3 * 5


def test_compare_in_sync_at_same_generation_and_checksum() -> None:
    # A transaction proposed again under another identifier is the same state.
    sync = decisions.compare(applied(3, "t3", "c"), applied(3, "t3-again", "c"), prepared=None)
    assert sync is decisions.Sync.IN_SYNC


def test_compare_diverged_at_same_generation_with_other_checksum() -> None:
    sync = decisions.compare(applied(3, "t3", "c1"), applied(3, "t3", "c2"), prepared=None)
    assert sync is decisions.Sync.DIVERGED


@pytest.mark.parametrize("ahead", [1, 2])
def test_compare_follower_ahead_is_diverged(ahead: int) -> None:
    follower = applied(3 + ahead, f"t{3 + ahead}", "c-follower")
    sync = decisions.compare(follower, applied(3, "t3", "c-leader"), prepared=None)
    assert sync is decisions.Sync.DIVERGED


def test_compare_applies_prepared_matching_leader_last_transaction() -> None:
    sync = decisions.compare(
        applied(3, "t3", "c3"), applied(4, "t4", "c4"), prepared="t4", prepared_generation=4
    )
    assert sync is decisions.Sync.APPLY_PREPARED


@pytest.mark.parametrize(
    ("leader_generation", "prepared", "prepared_generation"),
    [
        (4, None, 0),  # nothing prepared
        (4, "t-other", 4),  # another transaction prepared for that generation
        (4, "t4", 3),  # the right identifier, the wrong generation
        (5, "t5", 5),  # the leader is two ahead: the prepared one is not the next
        (5, "t4", 4),  # the next one, but the leader went on since
    ],
)
def test_compare_behind_unless_prepared_is_leader_last_transaction(
    leader_generation: int, prepared: str | None, prepared_generation: int
) -> None:
    leader = applied(leader_generation, f"t{leader_generation}", "c-leader")
    sync = decisions.compare(
        applied(3, "t3", "c3"), leader, prepared=prepared, prepared_generation=prepared_generation
    )
    assert sync is decisions.Sync.BEHIND


@pytest.mark.parametrize(
    ("follower_generation", "leader_generation", "expected"),
    [(0, 0, 0), (2, 5, 3), (5, 2, 0), (0, 1, 1)],
)
def test_missing_generations_counts_lag_never_negative(
    follower_generation: int, leader_generation: int, expected: int
) -> None:
    missing = decisions.missing_generations(
        applied(follower_generation), applied(leader_generation)
    )
    assert missing == expected


# Leases


NOW = 100.0
LEASE_ENDS = (None, 90.0, 100.0, 103.0, 107.5)
"""No lease, lapsed, lapsing now, and two unexpired ones."""


def test_commit_wait_zero_when_every_follower_applied() -> None:
    followers = cluster(5)[1:]
    lease_ends = dict.fromkeys(followers, NOW + 30.0)
    assert decisions.commit_wait(NOW, lease_ends=lease_ends, applied=followers) == 0.0


def test_commit_wait_zero_without_leases() -> None:
    assert decisions.commit_wait(NOW, lease_ends={}, applied=()) == 0.0


def test_commit_wait_waits_for_latest_lease_of_followers_not_applied() -> None:
    followers = cluster(4)[1:]
    checked = 0
    for ends in itertools.product(LEASE_ENDS, repeat=len(followers)):
        lease_ends = {
            follower: end for follower, end in zip(followers, ends, strict=True) if end is not None
        }
        for confirmed in subsets(followers):
            wait = decisions.commit_wait(NOW, lease_ends=lease_ends, applied=confirmed)
            pending = [end for f, end in lease_ends.items() if f not in confirmed]
            expected = max((end - NOW for end in pending if end > NOW), default=0.0)
            assert wait == expected, (lease_ends, confirmed)
            assert wait >= 0.0
            checked += 1
    assert checked == len(LEASE_ENDS) ** len(followers) * 2 ** len(followers)


@pytest.mark.parametrize(
    ("stopped", "unconfirmed", "expected"),
    [
        (True, (), 0.0),  # nothing can still serve the old state
        (False, (), 2.0),  # the old leader's own lease
        (True, ("r3",), 7.0),  # a follower's lease granted up to the old leader's end
        (False, ("r3",), 7.0),
        (False, ("r2", "r3"), 7.0),
    ],
)
def test_promotion_wait_covers_old_leader_and_unconfirmed_followers(
    stopped: bool, unconfirmed: tuple[str, ...], expected: float
) -> None:
    wait = decisions.promotion_wait(
        leader_lease=2.0,
        follower_lease=5.0,
        previous_leader_stopped=stopped,
        unconfirmed=unconfirmed,
    )
    assert wait == expected


@pytest.mark.parametrize("leading", [True, False])
@pytest.mark.parametrize("same_generation", [True, False])
@pytest.mark.parametrize("same_checksum", [True, False])
@pytest.mark.parametrize("same_transaction", [True, False])
def test_may_grant_lease_only_leading_and_same_state(
    leading: bool, same_generation: bool, same_checksum: bool, same_transaction: bool
) -> None:
    leader = applied(4, "t4", "c4")
    follower = applied(
        4 if same_generation else 3,
        "t4" if same_transaction else "t4-copied",
        "c4" if same_checksum else "c-other",
    )
    granted = decisions.may_grant_lease(follower=follower, leader=leader, leading=leading)
    assert granted is (leading and same_generation and same_checksum)
