"""The operator reads a replica pod again when its watch cache looks stale for too long."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from gitquorum.kube import reconciler
from gitquorum.kube.metrics import OperatorMetrics

pytestmark = pytest.mark.unit


class FakeApi:
    """The one call this path makes: the pod as the API server has it now."""

    def __init__(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.reads = 0

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return self.pod


def _pod(version: str, ip: str | None) -> dict[str, Any]:
    return {
        "metadata": {"name": "repo-1", "namespace": "ns", "resourceVersion": version},
        "spec": {"nodeName": "node-1"},
        "status": {"phase": "Running", **({"podIP": ip} if ip else {})},
    }


def _reconciler(api: FakeApi, now: list[float]) -> reconciler.Reconciler:
    return reconciler.Reconciler(
        api,  # type: ignore[arg-type]
        reconciler.Settings(image="img"),
        events=lambda *args: None,
        metrics=OperatorMetrics(repositories=lambda: 0, leading=lambda: 1),
        clock=lambda: now[0],
    )


def test_stale_cache_pod_without_address_is_read_again_after_a_while() -> None:
    now = [100.0]
    api = FakeApi(_pod("2", "10.244.1.2"))
    work = _reconciler(api, now)
    memory = reconciler.Memory()
    cached = {"repo-1": _pod("1", None)}
    assert asyncio.run(work._reread_doubtful(cached, memory)) == {}, "too early to doubt"
    now[0] += work.settings.stale_after
    fresh = asyncio.run(work._reread_doubtful(cached, memory))
    assert fresh["repo-1"]["status"]["podIP"] == "10.244.1.2"
    assert api.reads == 1
    assert 'newer="true"' in work.metrics.render()
    # Not read again at once: at most one read per pod per stale_after.
    asyncio.run(work._reread_doubtful(cached, memory))
    assert api.reads == 1


def test_stale_cache_answering_replica_is_never_read_again() -> None:
    now = [100.0]
    api = FakeApi(_pod("2", "10.244.1.2"))
    work = _reconciler(api, now)
    memory = reconciler.Memory()
    cached = {"repo-1": _pod("1", "10.244.1.2")}
    for _ in range(3):
        memory.last_answer["repo-1"] = now[0]
        now[0] += work.settings.stale_after
        memory.last_answer["repo-1"] = now[0]
        assert asyncio.run(work._reread_doubtful(cached, memory)) == {}
    assert api.reads == 0


def test_stale_cache_pod_that_stays_without_address_is_read_less_and_less_often() -> None:
    now = [100.0]
    pending = _pod("1", None)
    api = FakeApi(pending)  # the API server agrees with the cache: no address yet
    work = _reconciler(api, now)
    memory = reconciler.Memory()
    cached = {"repo-1": pending}
    reads_at = []
    for _ in range(int(600 / work.settings.stale_after) * 4):
        before = api.reads
        asyncio.run(work._reread_doubtful(cached, memory))
        if api.reads > before:
            reads_at.append(now[0])
        now[0] += work.settings.stale_after / 4
    gaps = [b - a for a, b in itertools.pairwise(reads_at)]
    assert gaps == sorted(gaps), gaps
    assert gaps[0] == pytest.approx(2 * work.settings.stale_after), gaps
    assert max(gaps) <= reconciler.observing.REREAD_MAX + work.settings.stale_after / 4, gaps
    assert len(reads_at) <= 8, reads_at
    assert 'newer="false"' in work.metrics.render()
    # The address arrives in the cache: the pod is no longer doubtful, the back-off forgotten.
    cached = {"repo-1": _pod("2", "10.244.1.2")}
    memory.last_answer["repo-1"] = now[0]
    asyncio.run(work._reread_doubtful(cached, memory))
    assert "repo-1" not in memory.reread_every
