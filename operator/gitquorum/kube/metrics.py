"""The operator's Prometheus metrics and its health endpoint (``/metrics``, ``/healthz``), and
its memory profile when tracing is on (``/debug/memory``, ``profiling``)."""

import time
from collections.abc import Callable

from aiohttp import web

from gitquorum.kube import profiling
from gitquorum.server import metrics

PASS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OperatorMetrics:
    def __init__(self, *, repositories: Callable[[], float], leading: Callable[[], float]) -> None:
        self.passes = metrics.Histogram(
            "gitquorum_operator_reconcile_seconds",
            "Time one reconcile pass over one repository took.",
            buckets=PASS_BUCKETS,
            labels=(),
        )
        self.decisions = metrics.Counter(
            "gitquorum_operator_decisions_total",
            "Durable decisions taken (leader elected, replica lost, added, promoted, removed).",
            labels=("decision",),
        )
        self.conflicts = metrics.Counter(
            "gitquorum_operator_conflicts_total",
            "Status writes refused because the object had changed (retried).",
            labels=(),
        )
        self.errors = metrics.Counter(
            "gitquorum_operator_reconcile_errors_total", "Passes that failed.", labels=()
        )
        self.stale_cache = metrics.Counter(
            "gitquorum_operator_stale_cache_total",
            "Replica pods read again from the API server because the watch cache looked stale "
            "(no address, or a silent replica, for too long), by whether the read found a newer "
            "version.",
            labels=("newer",),
        )
        self.replica_reports = metrics.Counter(
            "gitquorum_operator_replica_reports_total",
            "Replica reports a pass used, by source: asked (an HTTP request to the replica) or "
            "vouched (a steady follower's last report, confirmed by its leader's view of it).",
            labels=("source",),
        )
        self.pods_created = metrics.Counter(
            "gitquorum_operator_pods_created_total", "Replica pods created.", labels=()
        )
        self.backups = metrics.Counter(
            "gitquorum_backups_total",
            "Backups that ended, by repository and result (completed, failed).",
            labels=("namespace", "repository", "result"),
        )
        self.backup_last_success = metrics.GaugeFamily(
            "gitquorum_backup_last_success_timestamp_seconds",
            "When the newest backup of a repository completed (Unix time).",
            labels=("namespace", "repository"),
        )
        self.backup_age = metrics.GaugeFamily(
            "gitquorum_backup_age_seconds",
            "Seconds since the newest backup of a repository completed.",
            labels=("namespace", "repository"),
            values=self.backup_last_success.values,
            since=time.time,
        )
        self.backup_size = metrics.GaugeFamily(
            "gitquorum_backup_size_bytes",
            "Bytes uploaded by the newest completed backup of a repository.",
            labels=("namespace", "repository"),
        )
        self.gauges = [
            metrics.Gauge("gitquorum_operator_repositories", "Repositories watched.", repositories),
            metrics.Gauge(
                "gitquorum_operator_leading", "1 when this instance holds the lease.", leading
            ),
            *metrics.process_gauges(time.time()),
        ]

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.passes,
            self.decisions,
            self.conflicts,
            self.errors,
            self.stale_cache,
            self.replica_reports,
            self.pods_created,
            self.backups,
            self.backup_last_success,
            self.backup_age,
            self.backup_size,
        ):
            lines.extend(metric.render())
        for gauge in self.gauges:
            lines.extend(gauge.render())
        return "\n".join(lines) + "\n"


def application(registry: OperatorMetrics, healthy: Callable[[], bool]) -> web.Application:
    async def render(request: web.Request) -> web.Response:
        return web.Response(text=registry.render(), content_type="text/plain")

    async def health(request: web.Request) -> web.Response:
        if healthy():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not healthy\n")

    async def memory(request: web.Request) -> web.Response:
        profile = profiling.take()
        if profile is None:
            return web.Response(status=404, text="memory tracing is off (--trace-memory)\n")
        return web.json_response(profile.to_json())

    app = web.Application()
    app.router.add_get("/metrics", render)
    app.router.add_get("/healthz", health)
    app.router.add_get("/debug/memory", memory)
    return app
