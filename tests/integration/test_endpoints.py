"""Probes, Prometheus metrics and the one-line-per-request log."""

import pathlib
import re

import pytest

from tests.integration import helpers
from tests.integration.helpers import Git, Seeded, Server

pytestmark = pytest.mark.integration


def test_healthz_and_readyz_answer_ok(server: Server) -> None:
    health = helpers.http(server, "GET", "/healthz")
    assert health.body == b"ok\n"
    assert health.headers["server"] == "gitquorum"
    assert helpers.http(server, "GET", "/readyz").status == 200


def test_metrics_count_requests_bytes_and_durations(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    git.run("clone", "-q", server.url(repo.name), str(tmp_path / "clone"))
    helpers.http(server, "GET", "/nothing.git/info/refs?service=git-upload-pack")
    reply = helpers.http(server, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    ok = 'endpoint="rpc",service="upload-pack",outcome="ok"'
    assert re.search(rf"^gitquorum_http_requests_total\{{{ok}\}} [1-9]", text, re.M)
    assert re.search(rf"^gitquorum_http_sent_bytes_total\{{{ok}\}} [1-9]", text, re.M)
    assert re.search(
        rf'^gitquorum_http_request_duration_seconds_bucket\{{{ok},le="\+Inf"\}}', text, re.M
    )
    assert 'outcome="not_found"' in text
    assert re.search(r"^process_resident_memory_bytes [1-9]", text, re.M)
    assert "# TYPE gitquorum_http_request_duration_seconds histogram" in text


def test_every_request_logs_one_structured_line(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    git.run("clone", "-q", server.url(repo.name), str(tmp_path / "clone"))
    lines = [
        line
        for line in server.log_text().splitlines()
        if "gitquorum.access" in line and f"repo={repo.name}" in line
    ]
    assert any("method=GET" in line and "path=/" in line and "status=200" in line for line in lines)
    fetch = [line for line in lines if "method=POST" in line]
    assert fetch, lines
    for field in (
        "service=upload-pack",
        "outcome=ok",
        "user=-",
        "bytes_in=",
        "bytes_out=",
        "duration_ms=",
    ):
        assert field in fetch[-1]


def test_errors_never_show_a_stack_trace(server: Server) -> None:
    for method, path in [
        ("GET", "/x/info/refs?service=bogus"),
        ("POST", "/x/git-upload-pack"),
        ("GET", "/does/not/exist"),
        ("PUT", "/healthz"),
    ]:
        reply = helpers.http(server, method, path, body=b"")
        assert 400 <= reply.status < 500, (method, path, reply.status)
        assert b"Traceback" not in reply.body and b'File "' not in reply.body
