"""Prometheus metrics, written out in the text exposition format.

The server counts every request by endpoint, git service and outcome: how many, how many
bytes in and out, and how long they took (a histogram). Gauges report the git processes
running and waiting for a slot, and the usual ``process_*`` figures from /proc. The format is
simple enough that a small writer here beats a dependency.
"""

import dataclasses
import os
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

Labels = tuple[str, ...]


class Metric(Protocol):
    """Anything that writes its lines of the exposition format."""

    def render(self) -> Iterable[str]: ...


DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
)
"""Seconds: from a ref advertisement (milliseconds) to a large clone (minutes)."""

LABELS = ("endpoint", "service", "outcome")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(name: str, *, names: Sequence[str], values: Labels, extra: str = "") -> str:
    pairs = [f'{key}="{_escape(value)}"' for key, value in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return f"{name}{{{','.join(pairs)}}}" if pairs else name


@dataclasses.dataclass
class Counter:
    """A monotonically increasing value per label set."""

    name: str
    help: str
    labels: Sequence[str] = LABELS
    values: dict[Labels, float] = dataclasses.field(default_factory=dict)

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{_series(self.name, names=self.labels, values=labels)} {value:g}"


@dataclasses.dataclass
class Histogram:
    """Observations counted into cumulative buckets per label set."""

    name: str
    help: str
    buckets: Sequence[float] = DURATION_BUCKETS
    labels: Sequence[str] = LABELS
    counts: dict[Labels, list[int]] = dataclasses.field(default_factory=dict)
    sums: dict[Labels, float] = dataclasses.field(default_factory=dict)

    def observe(self, labels: Labels, value: float) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                counts[index] += 1
        counts[-1] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, counts in sorted(self.counts.items()):
            bounds = [f"{bound:g}" for bound in self.buckets] + ["+Inf"]
            for bound, count in zip(bounds, counts, strict=True):
                series = _series(
                    f"{self.name}_bucket", names=self.labels, values=labels, extra=f'le="{bound}"'
                )
                yield f"{series} {count}"
            total = _series(f"{self.name}_sum", names=self.labels, values=labels)
            number = _series(f"{self.name}_count", names=self.labels, values=labels)
            yield f"{total} {self.sums[labels]:g}"
            yield f"{number} {counts[-1]}"


@dataclasses.dataclass
class Gauge:
    """A value read when the metrics are scraped."""

    name: str
    help: str
    read: Callable[[], float]
    kind: str = "gauge"
    """``counter`` for a running total that the code it describes keeps itself."""

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        yield f"{self.name} {self.read():g}"


@dataclasses.dataclass
class GaugeFamily:
    """A value per label set, set by the code it describes; ``since`` renders the seconds
    elapsed since the value (a timestamp) instead."""

    name: str
    help: str
    labels: Sequence[str] = LABELS
    values: dict[Labels, float] = dataclasses.field(default_factory=dict)
    since: Callable[[], float] | None = None

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        now = self.since() if self.since is not None else None
        for labels, value in sorted(self.values.items()):
            shown = value if now is None else max(0.0, now - value)
            yield f"{_series(self.name, names=self.labels, values=labels)} {shown:g}"


@dataclasses.dataclass
class StateSet:
    """Which of several states holds: one series per state, 1 for the current one, else 0.

    Every known state is written, so that a query for a state no process is in finds zeros
    rather than nothing; a state not in the list is written too, so that none is hidden.
    """

    name: str
    help: str
    label: str
    states: Sequence[str]
    read: Callable[[], str]

    def render(self) -> Iterable[str]:
        current = self.read()
        states = [*self.states, *([] if current in self.states else [current])]
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for state in states:
            series = _series(self.name, names=(self.label,), values=(state,))
            yield f"{series} {int(state == current)}"


class ServerMetrics:
    """The server's metrics and the one call that records a finished request."""

    def __init__(self, *, git_running: Callable[[], float], git_waiting: Callable[[], float]):
        self.requests = Counter("gitquorum_http_requests_total", "HTTP requests handled.")
        self.received = Counter(
            "gitquorum_http_received_bytes_total", "Request body bytes received, decoded."
        )
        self.sent = Counter("gitquorum_http_sent_bytes_total", "Response body bytes sent.")
        self.duration = Histogram(
            "gitquorum_http_request_duration_seconds", "Time from request to last byte sent."
        )
        self.gauges: list[Metric] = [
            Gauge("gitquorum_git_processes_running", "git processes running.", git_running),
            Gauge(
                "gitquorum_git_processes_waiting", "Requests waiting for a git slot.", git_waiting
            ),
            *process_gauges(time.time()),
        ]

    def record(
        self,
        *,
        endpoint: str,
        service: str,
        outcome: str,
        seconds: float,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        labels = (endpoint, service, outcome)
        self.requests.inc(labels)
        self.received.inc(labels, bytes_in)
        self.sent.inc(labels, bytes_out)
        self.duration.observe(labels, seconds)

    def render(self) -> str:
        lines: list[str] = []
        for metric in (self.requests, self.received, self.sent, self.duration):
            lines.extend(metric.render())
        for gauge in self.gauges:
            lines.extend(gauge.render())
        return "\n".join(lines) + "\n"


def process_gauges(started: float) -> list[Gauge]:
    """The usual ``process_*`` figures, for any gitquorum process."""
    return [
        Gauge("process_resident_memory_bytes", "Resident memory size.", _resident_bytes),
        Gauge(
            "process_max_resident_memory_bytes", "Peak resident memory size.", _peak_resident_bytes
        ),
        Gauge("process_cpu_seconds_total", "User and system CPU time.", _cpu_seconds),
        Gauge("process_open_fds", "Open file descriptors.", _open_fds),
        Gauge(
            "process_start_time_seconds", "Start time, seconds since the epoch.", lambda: started
        ),
    ]


def _resident_bytes() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_resident_bytes() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _open_fds() -> float:
    return len(os.listdir("/proc/self/fd"))
