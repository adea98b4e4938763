"""A steady pass asks the leader alone; a follower's last report stands only while the leader
vouches for it (kube.polling, kube.observing)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

import pytest

from gitquorum.kube import polling, reconciler
from gitquorum.kube.metrics import OperatorMetrics
from gitquorum.kube.planning import Durable, Member, Observed
from gitquorum.replication import peerclient, reports
from tests.unit import statuses

pytestmark = pytest.mark.unit

INTERVAL = 10.0
CONDITIONS = (
    "asked",
    "leader_answered",
    "same_address",
    "fresh",
    "own_in_sync",
    "same_term",
    "upkeep_idle",
    "reachable",
    "leader_says_in_sync",
    "no_error",
    "leader_generation",
)


def _leader(followers: dict[str, dict[str, Any]], *, term: int = 2) -> reports.ReplicaStatus:
    return statuses.status(
        replica="r-1",
        role="Leader",
        term=term,
        leader="r-1",
        generation=7,
        checksum="7" * 64,
        position=[term, 7, 9],
        refs=4,
        leading={"ready": True, "followers": followers},
    )


def _case(holds: dict[str, bool]) -> tuple[polling.Asked | None, dict[str, Any]]:
    view = {
        "reachable": holds["reachable"],
        "generation": 7 if holds["leader_generation"] else 6,
        "inSync": holds["leader_says_in_sync"],
        "error": None if holds["no_error"] else "prepare timed out",
    }
    upkeep = {} if holds["upkeep_idle"] else {"upkeep": {"due": ["maintenance"]}}
    own = statuses.status(
        replica="r-2",
        term=2 if holds["same_term"] else 1,
        generation=5,
        state="InSync" if holds["own_in_sync"] else "Behind",
        **upkeep,
    )
    asked = polling.Asked(own, "10.0.0.2", at=100.0) if holds["asked"] else None
    return asked, view


def test_vouched_only_when_every_condition_holds() -> None:
    for values in itertools.product((True, False), repeat=len(CONDITIONS)):
        holds = dict(zip(CONDITIONS, values, strict=True))
        asked, view = _case(holds)
        item = Observed("r-2", ip="10.0.0.2" if holds["same_address"] else "10.0.0.9")
        leader = _leader({"r-2": view}) if holds["leader_answered"] else None
        now = 100.0 + (INTERVAL - 0.5 if holds["fresh"] else INTERVAL)
        report = polling.vouched(asked, item=item, leader=leader, now=now, interval=INTERVAL)
        assert (report is not None) == all(values), holds


def test_vouched_report_carries_the_leaders_position() -> None:
    asked, view = _case(dict.fromkeys(CONDITIONS, True))
    leader = _leader({"r-2": view})
    item = Observed("r-2", ip="10.0.0.2")
    report = polling.vouched(asked, item=item, leader=leader, now=101.0, interval=INTERVAL)
    assert report is not None
    assert (report.generation, report.checksum, report.position, report.refs) == (
        7,
        "7" * 64,
        leader.position,
        4,
    )
    assert (report.replica, report.role, report.lag) == ("r-2", "Follower", 0)


def test_vouched_follower_the_leader_does_not_name_is_asked() -> None:
    asked, _ = _case(dict.fromkeys(CONDITIONS, True))
    item = Observed("r-2", ip="10.0.0.2")
    leader = _leader({"r-3": {"reachable": True, "generation": 7, "inSync": True}})
    assert polling.vouched(asked, item=item, leader=leader, now=101.0, interval=INTERVAL) is None


class FakePeers:
    """Replicas' /admin/status answers by address; an address without one does not answer."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def call(self, url: str, path: str, **_: Any) -> dict[str, Any]:
        address = url.split("//")[1].split(":")[0]
        self.asked.append(address)
        if address not in self.answers:
            raise peerclient.PeerError(f"{address} did not answer")
        return self.answers[address]


def _answer(name: str, **fields: Any) -> dict[str, Any]:
    return statuses.status(**{"replica": name, "term": 2, "generation": 7, **fields}).to_json()


def _steady_answers() -> dict[str, dict[str, Any]]:
    view = {"reachable": True, "generation": 7, "inSync": True, "error": None}
    leader = _answer(
        "r-1", role="Leader", leader="r-1", leading={"followers": {"r-2": view, "r-3": view}}
    )
    return {
        "10.0.0.1": leader,
        "10.0.0.2": _answer("r-2", leader="r-1"),
        "10.0.0.3": _answer("r-3", leader="r-1"),
    }


class Steady:
    """A settled 3-replica repository whose leader r-1 vouches for r-2 and r-3, after one pass
    that asked everyone; ``gather`` runs the next pass's gathering a second later."""

    def __init__(self) -> None:
        self.now = 100.0
        self.work = reconciler.Reconciler(
            None,  # type: ignore[arg-type]
            reconciler.Settings(image="img", follower_poll_interval=INTERVAL),
            events=lambda *args: None,
            metrics=OperatorMetrics(repositories=lambda: 0, leading=lambda: 1),
            clock=lambda: self.now,
        )
        self.durable = Durable(
            term=2, leader="r-1", members=tuple(Member(f"r-{i}", True) for i in (1, 2, 3))
        )
        self.items = [Observed(f"r-{i}", pod=True, ip=f"10.0.0.{i}") for i in (1, 2, 3)]
        self.answers = _steady_answers()
        self.peers = FakePeers(self.answers)
        self.memory = reconciler.Memory(peers=self.peers)  # type: ignore[arg-type]
        self.first = self.gather(after=0.0)
        self.memory.settled = True

    def gather(
        self, *, after: float = 1.0, items: list[Observed] | None = None
    ) -> dict[str, reports.ReplicaStatus]:
        self.now += after
        self.peers.asked.clear()
        return asyncio.run(
            self.work._gather_reports(self.durable, items or self.items, self.memory)
        )


def test_polling_steady_pass_asks_the_leader_alone() -> None:
    steady = Steady()
    assert set(steady.first) == {"r-1", "r-2", "r-3"}
    assert sorted(steady.peers.asked) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "not settled yet"
    for _ in range(5):
        answers = steady.gather()
        assert steady.peers.asked == ["10.0.0.1"]
        assert {name: report.state for name, report in answers.items()} == dict.fromkeys(
            ("r-1", "r-2", "r-3"), "InSync"
        )
        assert steady.memory.last_answer["r-3"] == steady.now
    steady.gather(after=INTERVAL)
    assert sorted(steady.peers.asked) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "reports too old"


def test_polling_silent_leader_makes_the_pass_ask_every_follower() -> None:
    steady = Steady()
    del steady.answers["10.0.0.1"]
    heard = steady.gather()
    assert sorted(steady.peers.asked) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert set(heard) == {"r-2", "r-3"}
    assert "r-1" not in steady.memory.asked


def test_polling_follower_the_leader_lost_is_asked_itself() -> None:
    steady = Steady()
    leader = steady.answers["10.0.0.1"]
    lost = {"reachable": False, "generation": 6, "inSync": False, "error": "timed out"}
    followers = {**leader["leading"]["followers"], "r-3": lost}
    steady.answers["10.0.0.1"] = {
        **leader,
        "leading": {**leader["leading"], "followers": followers},
    }
    steady.answers["10.0.0.3"] = _answer("r-3", leader="r-1", state="Behind", generation=6)
    heard = steady.gather()
    assert sorted(steady.peers.asked) == ["10.0.0.1", "10.0.0.3"]
    assert (heard["r-3"].state, heard["r-3"].generation) == ("Behind", 6)


def test_polling_replaced_pod_is_asked_at_its_new_address() -> None:
    steady = Steady()
    steady.answers["10.0.0.4"] = steady.answers.pop("10.0.0.2")
    moved = [steady.items[0], dataclasses.replace(steady.items[1], ip="10.0.0.4"), steady.items[2]]
    steady.gather(items=moved)
    assert sorted(steady.peers.asked) == ["10.0.0.1", "10.0.0.4"]
    assert steady.memory.asked["r-2"].ip == "10.0.0.4"


def test_polling_forgets_replicas_no_longer_observed() -> None:
    steady = Steady()
    steady.gather(items=steady.items[:2])
    assert set(steady.memory.asked) == {"r-1", "r-2"}


def test_polling_unsettled_pass_asks_everyone() -> None:
    steady = Steady()
    steady.memory.settled = False
    for _ in range(3):
        steady.gather()
        assert sorted(steady.peers.asked) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
