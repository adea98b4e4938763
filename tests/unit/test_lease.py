"""The operator's Lease: one holder at a time, takeover only after expiry, clean release."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import datetime
import threading
import time

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from gitquorum.kube import lease
from tests import waiting

pytestmark = pytest.mark.unit


class FakeLeases:
    """A Lease store with resourceVersion checks, like the API server's."""

    def __init__(self) -> None:
        self.stored: client.V1Lease | None = None
        self.version = 0

    def read_namespaced_lease(self, name: str, namespace: str) -> client.V1Lease:
        if self.stored is None:
            raise ApiException(status=404)
        return copy.deepcopy(self.stored)

    def create_namespaced_lease(self, namespace: str, body: client.V1Lease) -> None:
        if self.stored is not None:
            raise ApiException(status=409)
        self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: client.V1Lease) -> None:
        assert self.stored is not None
        if body.metadata.resource_version != self.stored.metadata.resource_version:
            raise ApiException(status=409)
        self._store(body)

    def _store(self, body: client.V1Lease) -> None:
        self.version += 1
        body = copy.deepcopy(body)
        body.metadata.resource_version = str(self.version)
        self.stored = body


def instance(store: FakeLeases, identity: str) -> lease.Lease:
    held = lease.Lease(client.ApiClient(), namespace="ns", name="op", identity=identity)
    held.api = store  # type: ignore[assignment]
    return held


def test_lease_one_holder_at_a_time():
    store = FakeLeases()
    first, second = instance(store, "a"), instance(store, "b")
    assert first.try_take() is True
    assert second.try_take() is False
    assert first.try_take() is True  # renewal
    assert store.stored is not None and store.stored.spec.holder_identity == "a"


def test_lease_taken_over_only_after_expiry():
    store = FakeLeases()
    first, second = instance(store, "a"), instance(store, "b")
    first.try_take()
    assert store.stored is not None
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=16)
    store.stored.spec.renew_time = old
    assert second.try_take() is True
    assert store.stored.spec.holder_identity == "b"
    assert store.stored.spec.lease_transitions == 1
    assert first.try_take() is False


def test_lease_release_hands_over_at_once():
    store = FakeLeases()
    first, second = instance(store, "a"), instance(store, "b")
    first.try_take()
    first.release()
    assert second.try_take() is True


def test_lease_concurrent_writers_one_wins():
    """Two instances read the same expired lease; the one writing second loses (409)."""
    store = FakeLeases()
    instance(store, "a").try_take()
    assert store.stored is not None
    store.stored.spec.renew_time = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
        seconds=30
    )
    seen_by_c = store.read_namespaced_lease("op", "ns")
    assert instance(store, "b").try_take() is True
    late = instance(store, "c")
    late.api.read_namespaced_lease = lambda name, namespace: copy.deepcopy(seen_by_c)  # type: ignore[method-assign]
    assert late.try_take() is False
    assert store.stored.spec.holder_identity == "b"


def test_lease_lost_process_exits_even_if_shutdown_hangs() -> None:
    from gitquorum.kube import running  # kopf loads only for this test

    exited: list[int] = []
    running.exit_if_still_running(0.05, exit=exited.append)
    waiting.until("the watchdog to end the process", lambda: exited, timeout=5, interval=0.01)
    assert exited == [1]


def test_lease_lost_watchdog_never_holds_a_clean_exit_back() -> None:
    from gitquorum.kube import running

    timer = running.exit_if_still_running(3600, exit=lambda code: None)
    try:
        assert timer.daemon
    finally:
        timer.cancel()


class HangingLeases(FakeLeases):
    """Answers until told to hang, then never (a connection dead without a reset)."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = threading.Event()
        self.released = threading.Event()

    def read_namespaced_lease(self, name: str, namespace: str) -> client.V1Lease:
        if self.hang.is_set():
            self.released.wait(30)
        return super().read_namespaced_lease(name, namespace)


def test_lease_keep_gives_up_in_time_while_renewals_hang() -> None:
    store = HangingLeases()
    held = instance(store, "a")
    held.duration, held.renew_every = 3.0, 0.2

    async def lose() -> float:
        await held.acquire()
        store.hang.set()
        started = time.monotonic()
        await asyncio.wait_for(held.keep(), 10)  # without a bound on attempts: for ever
        return time.monotonic() - started

    try:
        took = asyncio.run(lose())
    finally:
        store.released.set()
    # Given up after duration - margin (2 s) without a renewal, not after the hung call.
    assert not held.held and took < held.duration


def test_lease_renews_while_the_shared_threads_are_busy() -> None:
    store = FakeLeases()
    held = instance(store, "a")
    busy = threading.Event()

    async def renew_beside_a_busy_pool() -> bool:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(1))
        blocked = asyncio.to_thread(busy.wait, 30)  # the passes' pool, taken
        blocker = asyncio.ensure_future(blocked)
        try:
            return await held._attempting(2.0)
        finally:
            busy.set()
            await blocker

    assert asyncio.run(renew_beside_a_busy_pool())


def test_lease_kept_while_the_event_loop_is_busy_past_the_margin() -> None:
    store = FakeLeases()
    held = instance(store, "a")
    held.duration, held.renew_every = 3.0, 0.2

    async def busy_loop() -> tuple[bool, int, int]:
        await held.acquire()
        keeping = asyncio.ensure_future(held.keep())
        await asyncio.sleep(0)
        before = store.version
        time.sleep(2.5)  # the event loop held past duration - margin (2 s), as a big list does
        renewed = store.version - before
        await asyncio.sleep(0)
        still = not keeping.done()
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        stopped_at = store.version
        # Cancelled, the renewing thread stops (one renewal may be in flight).
        waiting.never(
            "a renewal after keep was cancelled",
            lambda: store.version > stopped_at + 1,
            window=4 * held.renew_every,
            interval=0.05,
        )
        return still and held.held, renewed

    kept, renewed = asyncio.run(busy_loop())

    assert kept and renewed >= 5, (kept, renewed)  # every 0.2 s while the loop was busy
