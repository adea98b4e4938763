"""The Prometheus text exposition of the server's metrics."""

import pytest

from gitquorum.replication import metrics as replica_metrics
from gitquorum.replication import reports
from gitquorum.server import metrics
from tests.unit import statuses

pytestmark = pytest.mark.unit


def test_render_counters_histogram_and_gauges() -> None:
    recorded = metrics.ServerMetrics(git_running=lambda: 2, git_waiting=lambda: 0)
    recorded.record(
        endpoint="rpc",
        service="upload-pack",
        outcome="ok",
        seconds=0.03,
        bytes_in=100,
        bytes_out=5000,
    )
    recorded.record(
        endpoint="rpc", service="upload-pack", outcome="ok", seconds=2.0, bytes_in=50, bytes_out=0
    )
    text = recorded.render()
    labels = 'endpoint="rpc",service="upload-pack",outcome="ok"'
    assert f"gitquorum_http_requests_total{{{labels}}} 2" in text
    assert f"gitquorum_http_received_bytes_total{{{labels}}} 150" in text
    assert f"gitquorum_http_sent_bytes_total{{{labels}}} 5000" in text
    assert f'gitquorum_http_request_duration_seconds_bucket{{{labels},le="0.05"}} 1' in text
    assert f'gitquorum_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} 2' in text
    assert f"gitquorum_http_request_duration_seconds_count{{{labels}}} 2" in text
    assert "gitquorum_git_processes_running 2" in text
    assert "# TYPE gitquorum_http_requests_total counter" in text
    assert text.endswith("\n")


def test_label_values_are_escaped() -> None:
    counter = metrics.Counter("c", "help", labels=("x",))
    counter.inc(('a"b\\c\nd',))
    assert 'c{x="a\\"b\\\\c\\nd"} 1' in list(counter.render())


def test_state_set_writes_every_state_and_an_unknown_one() -> None:
    current = ["InSync"]
    states = metrics.StateSet(
        "s", "help", label="state", states=("InSync", "Behind"), read=lambda: current[0]
    )
    assert list(states.render())[2:] == ['s{state="InSync"} 1', 's{state="Behind"} 0']
    current[0] = "Lost"
    assert list(states.render())[2:] == [
        's{state="InSync"} 0',
        's{state="Behind"} 0',
        's{state="Lost"} 1',
    ]


def test_replica_gauges_read_one_report_per_scrape() -> None:
    taken: list[int] = []

    def report() -> reports.ReplicaStatus:
        taken.append(1)
        return statuses.status(
            role="Leader", term=7, generation=12, lag=0, state="Promoting", writable=False,
            copy={"active": False, "copies": 3},
        )  # fmt: skip

    text = "\n".join(line for gauge in replica_metrics.gauges(report) for line in gauge.render())
    assert len(taken) == 1
    for line in (
        "gitquorum_replica_leader 1",
        "gitquorum_replica_term 7",
        "gitquorum_replica_generation 12",
        "gitquorum_replica_lag_generations 0",
        "gitquorum_replica_writable 0",
        'gitquorum_replica_state{state="Promoting"} 1',
        'gitquorum_replica_state{state="InSync"} 0',
        "gitquorum_replica_copying 0",
        "gitquorum_replica_copies_total 3",
        "# TYPE gitquorum_replica_copies_total counter",
    ):
        assert line in text.splitlines(), line
