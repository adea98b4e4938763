"""What a replica adds to its git server's ``/metrics``: its place in the quorum.

The git server already counts requests, bytes and durations (``server.metrics``); a replica
adds what its controller decides on, read from the same report (``GET /admin/status``) when
scraped: whether it leads, its term, its generation and lag behind the leader, its sync
state, whether it serves reads and takes pushes, and its copies of the leader's state. The
series carry no repository or replica labels: a replica process serves one repository, and
the scraper knows which (the chart's PodMonitor copies them from the pod's labels).
"""

import time
from collections.abc import Callable

from gitquorum.replication import reports
from gitquorum.server import metrics

STATES = ("InSync", "Behind", "Diverged", "Rebuilding", "Promoting")
"""Every state a replica reports of itself (the operator adds Pending and Lost, which no
replica process can report)."""

# One scrape reads every gauge in turn: they share one report rather than build one each.
REPORT_REUSE_SECONDS = 0.5


def gauges(report: Callable[[], reports.ReplicaStatus]) -> list[metrics.Metric]:
    """The replica's gauges, each reading ``report`` (cached for one scrape)."""
    latest = _Latest(report)
    return [
        metrics.Gauge(
            "gitquorum_replica_leader",
            "1 while this replica leads its term.",
            lambda: float(latest().leads),
        ),
        metrics.Gauge(
            "gitquorum_replica_term",
            "The newest term this replica has seen; it grows with every leader change.",
            lambda: latest().term,
        ),
        metrics.Gauge(
            "gitquorum_replica_generation",
            "Ref transactions (pushes) this replica's refs reflect.",
            lambda: latest().generation,
        ),
        metrics.Gauge(
            "gitquorum_replica_lag_generations",
            "Generations behind the leader, as its last heartbeat said (0 on the leader).",
            lambda: latest().lag,
        ),
        metrics.Gauge(
            "gitquorum_replica_readable",
            "1 while this replica serves reads itself (it holds a lease).",
            lambda: float(latest().readable),
        ),
        metrics.Gauge(
            "gitquorum_replica_writable",
            "1 while this replica takes pushes (the settled leader).",
            lambda: float(latest().writable),
        ),
        metrics.StateSet(
            "gitquorum_replica_state",
            "1 for the replica's sync state, 0 for the others.",
            label="state",
            states=STATES,
            read=lambda: latest().state,
        ),
        metrics.Gauge(
            "gitquorum_replica_copying",
            "1 while this replica copies the leader's state (catch-up or rebuild).",
            lambda: float(bool(latest().copy.get("active"))),
        ),
        metrics.Gauge(
            "gitquorum_replica_copies_total",
            "Copies of the leader's state this process completed.",
            lambda: float(latest().copy.get("copies") or 0),
            kind="counter",
        ),
    ]


class _Latest:
    """The replica's report, taken again once the previous one is a scrape old."""

    def __init__(self, report: Callable[[], reports.ReplicaStatus]) -> None:
        self._report = report
        self._taken = float("-inf")
        self._value: reports.ReplicaStatus | None = None

    def __call__(self) -> reports.ReplicaStatus:
        now = time.monotonic()
        if self._value is None or now - self._taken > REPORT_REUSE_SECONDS:
            self._value, self._taken = self._report(), now
        return self._value
