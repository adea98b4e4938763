"""The Prometheus text exposition of the server's metrics."""

import pytest

from gitquorum.server import metrics

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
