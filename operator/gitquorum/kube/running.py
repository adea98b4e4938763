"""The operator process: metrics, the Lease, then kopf with our handlers until told to stop."""

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

import kopf
from aiohttp import web

from gitquorum import allocator
from gitquorum.kube import api, handlers, lease, metrics, prepopulation, profiling, reconciler

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
    namespaces: tuple[str, ...]
    kubeconfig: str | None
    image: str
    lease_namespace: str
    lease_name: str
    identity: str
    metrics_host: str
    metrics_port: int
    node_loss_grace: float
    leader_timeout: float
    max_concurrent_updates: int = 2
    max_maintenance_per_node: int = 1
    trace_memory: int = 0
    """Frames per traced allocation for ``/debug/memory`` (0: no tracing)."""


LOST_LEASE_EXIT_SECONDS = 10.0
"""After losing its Lease, the process exits within this long, whatever still runs."""


def _exit_now(status: int) -> None:
    logging.shutdown()  # the log says why before the process goes
    os._exit(status)


def exit_if_still_running(
    seconds: float, *, exit: Callable[[int], object] = _exit_now
) -> threading.Timer:
    """Ends the process with status 1 in ``seconds`` unless it has ended by then.

    A process that lost its Lease must be gone soon, so that its container restarts as a
    standby: seen on the testbed, kopf's shutdown after an API server restart waited on
    cancelled daemons and threads stuck in calls to that API server for over 90 s, and the
    repository's status stood still meanwhile. A daemon thread, so a clean exit never waits
    for it.
    """

    def now() -> None:
        log.error("still running %.0f s after the lease was lost: exiting now", seconds)
        exit(1)

    timer = threading.Timer(seconds, now)
    timer.daemon = True
    timer.start()
    return timer


async def operate(options: Options, *, signals: Iterable[signal.Signals] = ()) -> int:
    """Runs until a signal (0) or until the Lease is lost (1: restart as a waiting instance)."""
    profiling.start(options.trace_memory)
    prepopulation.apply()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(api.THREADS, thread_name_prefix="api")
    )
    for number in signals:
        loop.add_signal_handler(number, stop.set)
    api_client = api.connect(options.kubeconfig)
    kube = api.Api(api_client)
    held = lease.Lease(
        api_client,
        namespace=options.lease_namespace,
        name=options.lease_name,
        identity=options.identity,
    )
    wakeups = handlers.Wakeups()
    registry_metrics = metrics.OperatorMetrics(
        repositories=lambda: float(len(wakeups.events)), leading=lambda: float(held.held)
    )
    # No access log: probes and scrapes every few seconds would drown the decisions.
    runner = web.AppRunner(
        metrics.application(registry_metrics, healthy=lambda: True), access_log=None
    )
    await runner.setup()
    await web.TCPSite(runner, options.metrics_host, options.metrics_port).start()
    log.info("metrics on %s:%s", options.metrics_host, options.metrics_port)
    work = reconciler.Reconciler(
        kube,
        reconciler.Settings(
            image=options.image,
            node_loss_grace=options.node_loss_grace,
            leader_timeout=options.leader_timeout,
            max_concurrent_updates=options.max_concurrent_updates,
            max_maintenance_per_node=options.max_maintenance_per_node,
        ),
        events=handlers.post_event,
        metrics=registry_metrics,
    )
    trimming = asyncio.ensure_future(allocator.trim_every())
    try:
        acquiring = asyncio.ensure_future(held.acquire())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            acquiring.cancel()
            return 0
        return await _act(options, work, kube, wakeups, held, stop)
    finally:
        trimming.cancel()
        await work.close()
        await runner.cleanup()
        if held.held:
            await asyncio.to_thread(held.release)


async def _act(
    options: Options,
    work: reconciler.Reconciler,
    kube: api.Api,
    wakeups: handlers.Wakeups,
    held: lease.Lease,
    stop: asyncio.Event,
) -> int:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    handlers.register(registry, work, kube, wakeups, frozenset(options.namespaces))
    keeping = asyncio.ensure_future(held.keep())
    operator = asyncio.ensure_future(
        kopf.operator(
            registry=registry,
            clusterwide=True,  # namespaces are filtered in the handlers (see handlers.register)
            standalone=True,
            # kopf would otherwise ask getpass for the user, which a non-root uid without a
            # passwd entry (the usual container) does not have.
            identity=options.identity,  # type: ignore[arg-type]  # kopf.Identity is a NewType of str
            stop_flag=stop,
        )
    )
    await asyncio.wait({keeping, operator}, return_when=asyncio.FIRST_COMPLETED)
    if keeping.done() and not stop.is_set():
        stop.set()  # the lease is gone: another instance may act now, this one must not
        exit_if_still_running(LOST_LEASE_EXIT_SECONDS)
        await operator
        return 1
    keeping.cancel()
    await operator
    return 0
