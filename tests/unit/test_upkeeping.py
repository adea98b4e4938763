"""The operator's maintenance permits (kube.upkeeping): only inside the window, at most the
bound per node over every repository, ended when nothing is due any more."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from gitquorum.kube import context, planning, reconciler
from gitquorum.kube.metrics import OperatorMetrics
from gitquorum.kube.spec import RepositorySpec
from tests.unit import statuses

pytestmark = pytest.mark.unit


class FakePeers:
    def __init__(self) -> None:
        self.permits: list[tuple[str, float]] = []

    async def call(self, base: str, path: str, message: dict[str, Any], **_: Any) -> dict:
        assert path == "/admin/upkeep"
        self.permits.append((base, message["permitSeconds"]))
        return {"ok": True}


def _work() -> reconciler.Reconciler:
    return reconciler.Reconciler(
        None,  # type: ignore[arg-type]
        context.Settings(image="img", max_maintenance_per_node=1),
        events=lambda *args: None,
        metrics=OperatorMetrics(repositories=lambda: 0, leading=lambda: 1),
    )


def _spec(open_now: bool) -> RepositorySpec:
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(minutes=5) if open_now else now + datetime.timedelta(hours=2)
    window = {"start": start.strftime("%H:%M"), "durationMinutes": 60}
    return RepositorySpec(maintenance_window=window)


def _replica(name: str, node: str, ip: str, due: list[str]) -> planning.Observed:
    report = statuses.status(upkeep={"due": due, "permits": True})
    return planning.Observed(name, pod=True, phase="Running", ip=ip, node=node, report=report)


def _pass(work: reconciler.Reconciler, uid: str, observed: dict, open_now: bool) -> FakePeers:
    memory = context.Memory()
    peers = FakePeers()
    memory.peers = peers  # type: ignore[assignment]
    body = {"metadata": {"name": "r", "namespace": "ns", "uid": uid}}
    asyncio.run(work._permit_upkeep(body, _spec(open_now), observed, memory))
    return peers


def test_upkeeping_permits_one_replica_per_node_across_repositories() -> None:
    work = _work()
    first = _pass(work, "a", {"r-1": _replica("r-1", "n1", "10.0.0.1", ["maintenance"])}, True)
    assert [base for base, _ in first.permits] == ["http://10.0.0.1:8081"]
    assert 0 < first.permits[0][1] <= 3600
    other = _pass(
        work,
        "b",
        {
            "r-1": _replica("r-1", "n1", "10.0.0.2", ["scrub"]),
            "r-2": _replica("r-2", "n2", "10.0.0.3", ["scrub"]),
        },
        True,
    )
    assert [base for base, _ in other.permits] == ["http://10.0.0.3:8081"], "n1 is taken"


def test_upkeeping_nothing_outside_the_window() -> None:
    peers = _pass(_work(), "a", {"r-1": _replica("r-1", "n1", "10.0.0.1", ["scrub"])}, False)
    assert peers.permits == []


def test_upkeeping_ends_the_permit_when_nothing_is_due() -> None:
    work = _work()
    _pass(work, "a", {"r-1": _replica("r-1", "n1", "10.0.0.1", ["maintenance"])}, True)
    done = _pass(work, "a", {"r-1": _replica("r-1", "n1", "10.0.0.1", [])}, True)
    assert done.permits == [("http://10.0.0.1:8081", 0.0)]
    freed = _pass(work, "b", {"r-1": _replica("r-1", "n1", "10.0.0.2", ["scrub"])}, True)
    assert [base for base, _ in freed.permits] == ["http://10.0.0.2:8081"], "the slot is free"
