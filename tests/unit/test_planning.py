"""The operator's decisions (kube.planning): membership steps, elections, safety rules."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from gitquorum.kube import planning
from gitquorum.kube.planning import Durable, Kind, Member, Observed
from gitquorum.replication.reports import ReplicaStatus
from tests.unit import statuses

pytestmark = pytest.mark.unit

REPO = "r"


def report(
    term: int = 1,
    generation: int = 0,
    *,
    state: str = "InSync",
    configured: int | None = 1,
    role: str = "Leader",
) -> ReplicaStatus:
    # Only the leader's role is read by the planning; followers may keep the default.
    return statuses.status(
        role=role, term=term, generation=generation, state=state, configuredTerm=configured
    )


def running(name: str, **changes) -> Observed:
    base = {"pod": True, "phase": "Running", "ip": "10.0.0.1", "node": f"n-{name}", "ready": True}
    base.update(changes)
    if "report" not in base:
        base["report"] = report()
    return Observed(name, claim=True, **base)


def three(leader: str = "r-1", term: int = 1) -> Durable:
    return Durable(
        term=term,
        leader=leader,
        members=tuple(Member(f"r-{i}", True) for i in (1, 2, 3)),
        next_serial=4,
    )


def step(durable: Durable, observed: dict[str, Observed], replicas: int = 3, **kwargs):
    return planning.next_step(
        durable,
        observed,
        replicas=replicas,
        leader_timeout=3.0,
        repository=REPO,
        **kwargs,
    )


def test_bootstrap_new_repository_makes_every_replica_a_voter():
    result = step(Durable(), {}, replicas=3)
    assert result is not None and result.kind is Kind.BOOTSTRAP
    assert result.durable.members == tuple(Member(f"r-{i}", True) for i in (1, 2, 3))
    assert result.durable.next_serial == 4


def test_bootstrap_with_existing_volumes_adopts_them():
    result = step(Durable(), {}, replicas=3, existing_claims=["r-4", "r-7", "other-1"])
    assert result is not None and result.durable is not None
    assert [m.name for m in result.durable.members] == ["r-4", "r-7"]
    assert result.durable.next_serial == 8


def test_election_without_majority_answering_chooses_nobody():
    durable = Durable(members=three().members, next_serial=4)
    observed = {"r-1": running("r-1", report=report(term=0, configured=None))}
    result = step(durable, observed)
    assert result is not None and result.kind is Kind.NO_LEADER and result.durable is None
    assert "1 of 3" in result.message


def test_election_first_leader_once_majority_answers():
    durable = Durable(members=three().members, next_serial=4)
    observed = {n: running(n, report=report(term=0, configured=None)) for n in ("r-2", "r-3")}
    result = step(durable, observed)
    assert result is not None and result.kind is Kind.ELECT
    assert result.durable.term == 1 and result.durable.leader == "r-2"


def test_election_silent_leader_replaced_by_most_up_to_date():
    observed = {
        "r-1": running("r-1", report=None, silent=5.0),
        "r-2": running("r-2", report=report(generation=4)),
        "r-3": running("r-3", report=report(generation=5)),
    }
    result = step(three(), observed)
    assert result is not None and result.kind is Kind.ELECT
    assert result.durable.leader == "r-3" and result.durable.term == 2


def test_election_leader_briefly_silent_is_kept():
    observed = {
        "r-1": running("r-1", report=None, silent=1.0),
        "r-2": running("r-2"),
        "r-3": running("r-3"),
    }
    assert step(three(), observed) is None


def test_election_not_started_while_deleting_leader_answers():
    # Its termination is the window of a switchover (reconciler), not a reason to elect.
    observed = {
        "r-1": running("r-1", deleting=True, report=report(generation=9)),
        "r-2": running("r-2", report=report(generation=9)),
        "r-3": running("r-3", report=report(generation=9)),
    }
    assert step(three(), observed) is None


def test_election_leader_pod_deleting_and_silent_is_not_chosen_again():
    observed = {
        "r-1": running("r-1", deleting=True, report=None, silent=0.5),
        "r-2": running("r-2", report=report(generation=9)),
        "r-3": running("r-3", report=report(generation=9)),
    }
    result = step(three(), observed)
    assert result is not None and result.durable.leader in ("r-2", "r-3")


def test_election_when_leader_answers_with_a_newer_term():
    # A message raised the leader's term: it stepped down while it still answers.
    observed = {
        "r-1": running("r-1", report=report(term=50, generation=9, role="Follower")),
        "r-2": running("r-2", report=report(generation=9)),
        "r-3": running("r-3", report=report(generation=9)),
    }
    result = step(three(), observed)
    assert result is not None and result.kind is Kind.ELECT
    assert result.durable.term == 51


def test_election_when_leader_configured_in_term_no_longer_leads():
    observed = {
        "r-1": running("r-1", report=report(generation=9, role="Follower")),
        "r-2": running("r-2", report=report(generation=9)),
        "r-3": running("r-3", report=report(generation=9)),
    }
    result = step(three(), observed)
    assert result is not None and result.kind is Kind.ELECT and result.durable.term == 2


def test_election_not_started_while_new_leader_is_not_configured_yet():
    # Just elected at term 2: it still reports term 1 and no configuration of term 2.
    observed = {
        "r-1": running("r-1", report=report(generation=9, role="Follower", configured=1)),
        "r-2": running("r-2", report=report(generation=9)),
        "r-3": running("r-3", report=report(generation=9)),
    }
    assert step(three(term=2), observed) is None


def test_remove_lost_follower_when_others_in_sync():
    observed = {
        "r-1": running("r-1"),
        "r-2": running("r-2", node_lost=True, report=None),
        "r-3": running("r-3"),
    }
    result = step(three(), observed)
    assert result is not None and result.kind is Kind.REMOVE_LOST
    assert result.durable.voters == {"r-1", "r-3"}


def test_remove_lost_follower_never_when_remaining_not_in_sync():
    observed = {
        "r-1": running("r-1"),
        "r-2": running("r-2", node_lost=True, report=None),
        "r-3": running("r-3", report=report(state="Rebuilding")),
    }
    result = step(three(), observed)
    assert result is not None and result.kind is Kind.WAIT and result.durable is None


def test_remove_lost_leader_waits_for_election_first():
    observed = {
        "r-1": running("r-1", node_lost=True, report=None),
        "r-2": running("r-2"),
        "r-3": running("r-3"),
    }
    result = step(three(), observed)
    assert result is not None and result.kind is Kind.ELECT
    assert result.durable.members == three().members


def test_scale_up_adds_non_voters_with_fresh_serials():
    observed = {n: running(n) for n in ("r-1", "r-2", "r-3")}
    result = step(three(), observed, replicas=5)
    assert result is not None and result.kind is Kind.ADD
    added = result.durable.members[3:]
    assert added == (Member("r-4", False), Member("r-5", False))
    assert result.durable.next_serial == 6


def test_promote_only_in_sync_and_configured_replica():
    durable = Durable(
        term=1,
        leader="r-1",
        members=(*three().members, Member("r-4", False), Member("r-5", False)),
        next_serial=6,
    )
    observed = {n: running(n) for n in ("r-1", "r-2", "r-3")}
    observed["r-4"] = running("r-4", report=report(state="Rebuilding"))
    observed["r-5"] = running("r-5", report=report(configured=None))
    assert step(durable, observed, replicas=5) is None
    observed["r-5"] = running("r-5")
    result = step(durable, observed, replicas=5)
    assert result is not None and result.kind is Kind.PROMOTE
    assert result.durable.voters == {"r-1", "r-2", "r-3", "r-5"}


def test_scale_down_removes_non_voters_first_and_never_the_leader():
    durable = Durable(
        term=1,
        leader="r-3",
        members=(*three("r-3").members, Member("r-4", False)),
        next_serial=5,
    )
    observed = {n: running(n) for n in ("r-1", "r-2", "r-3", "r-4")}
    result = step(durable, observed, replicas=3)
    assert result is not None and result.kind is Kind.REMOVE_EXCESS
    assert "r-4" not in result.durable.member_names
    one = step(three("r-3"), {n: running(n) for n in ("r-1", "r-2", "r-3")}, replicas=1)
    assert one is not None and one.durable is not None and "r-3" in one.durable.member_names


def test_scale_down_waits_rather_than_break_majority():
    durable = Durable(term=1, leader="r-1", members=three().members, next_serial=4)
    observed = {
        "r-1": running("r-1"),
        "r-2": running("r-2", report=report(state="Behind")),
        "r-3": running("r-3", report=report(state="Behind")),
    }
    result = step(durable, observed, replicas=2)
    assert result is not None and result.kind is Kind.WAIT


@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 5])
def test_membership_changes_one_voter_at_a_time(replicas: int):
    """Whatever the replicas report, a step adds or removes at most one voter."""
    states = ("InSync", "Behind", "Rebuilding", None, "lost")
    names = ["r-1", "r-2", "r-3", "r-4"]
    for voters in range(1, 4):
        members = tuple(Member(n, i < voters) for i, n in enumerate(names))
        durable = Durable(term=1, leader="r-1", members=members, next_serial=5)
        for combination in itertools.product(states, repeat=len(names)):
            observed = {}
            for name, state in zip(names, combination, strict=True):
                if state == "lost":
                    observed[name] = running(name, node_lost=True, report=None)
                elif state is None:
                    observed[name] = running(name, report=None)
                else:
                    observed[name] = running(name, report=report(state=state))
            result = step(durable, observed, replicas=replicas)
            if result is None or result.durable is None or result.kind is Kind.ELECT:
                continue
            change = durable.voters ^ result.durable.voters
            assert len(change) <= 1, (combination, result)
            if result.kind in (Kind.REMOVE_LOST, Kind.REMOVE_EXCESS) and change:
                left = result.durable.voters
                in_sync = [v for v in left if observed[v].in_sync]
                assert len(in_sync) >= len(left) // 2 + 1, (combination, result)
                # Never fewer acknowledging copies than a majority of the spec's replicas.
                assert len(left) // 2 + 1 >= replicas // 2 + 1, (combination, result)


def test_configuration_addresses_and_stopped():
    durable = Durable(
        term=2,
        leader="r-1",
        members=(*three().members, Member("r-4", False)),
        next_serial=5,
    )
    observed = {
        "r-1": running("r-1", ip="10.0.0.1"),
        "r-2": running("r-2", ip=None, pod=False, phase=None),
        "r-3": running("r-3", ip="10.0.0.3", node_lost=True),
        "r-4": running("r-4", ip=None, phase="Pending"),
    }
    configuration = planning.configuration(durable, observed)
    urls = {m.id: m.peer_url for m in configuration.members}
    assert urls == {
        "r-1": "http://10.0.0.1:8081",
        "r-2": planning.UNREACHABLE,
        "r-3": planning.UNREACHABLE,
    }
    assert configuration.voters == {"r-1", "r-2", "r-3"}
    assert configuration.stopped == {"r-2", "r-3", "r-4"}


def test_remove_lost_second_voter_of_five_waits_for_the_first_replacement():
    members = tuple(Member(f"r-{i}", i != 5) for i in (1, 2, 3, 4, 5))
    durable = Durable(term=1, leader="r-1", members=(*members[:4], Member("r-6", False)))
    observed = {n: running(n) for n in ("r-1", "r-2", "r-3")}
    observed["r-4"] = running("r-4", node_lost=True, report=None)
    observed["r-6"] = running("r-6", report=report(state="Rebuilding"))
    # Voters r-1..r-4 (a fifth was lost and removed before): dropping r-4 would leave 3 voters,
    # whose majority (2) is less than a majority of 5.
    result = step(durable, observed, replicas=5)
    assert result is not None and result.kind is Kind.WAIT


def test_serving_follows_what_the_operator_reaches():
    assert planning.serving(running("r-1"), 3.0) is True
    assert planning.serving(running("r-1", report=None, silent=1.0), 3.0) is None
    assert planning.serving(running("r-1", report=None, silent=4.0), 3.0) is False
    assert planning.serving(running("r-1", node_lost=True), 3.0) is False
    assert planning.serving(running("r-1", deleting=True), 3.0) is False


def test_diverged_replicas_found_by_checksum_at_same_generation():
    def at(generation: int, checksum: str, state: str = "InSync") -> ReplicaStatus:
        return dataclasses.replace(report(generation=generation, state=state), checksum=checksum)

    observed = {
        "r-1": running("r-1", report=at(5, "aa")),
        "r-2": running("r-2", report=at(5, "bb")),
        "r-3": running("r-3", report=at(4, "cc", "Behind")),
    }
    assert planning.diverged(three(), observed) == ["r-2"]
    observed["r-3"] = running("r-3", report=at(4, "cc", "Diverged"))
    assert planning.diverged(three(), observed) == ["r-2", "r-3"]
    observed["r-1"] = running("r-1", report=None)
    assert planning.diverged(three(), observed) == []


def test_configuration_lists_the_leader_that_handed_off_as_stopped():
    durable = dataclasses.replace(three(leader="r-2", term=2), handed_off="r-1")
    observed = {name: running(name) for name in ("r-1", "r-2", "r-3")}
    assert planning.configuration(durable, observed).stopped == frozenset({"r-1"})
    assert Durable.from_status(durable.to_status()) == durable


def test_election_forgets_the_hand_off_of_the_previous_term():
    durable = dataclasses.replace(three(leader="r-2", term=2), handed_off="r-1")
    observed = {
        "r-1": running("r-1", report=report(term=2, generation=9, configured=2)),
        "r-3": running("r-3", report=report(term=2, generation=9, configured=2)),
    }
    result = step(durable, observed)
    assert result is not None and result.kind is Kind.ELECT
    assert result.durable.handed_off is None
