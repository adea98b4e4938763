"""git's authentication probe: answered as git http-backend does, and never counted as an error.

A request body larger than ``http.postBuffer`` (1 MiB by default) is streamed, so git first
sends a probe, a body of one flush packet, to check its credentials. It must get 200 and an
empty body, and land in the metrics under its own endpoint, not as a protocol error.
"""

import os
import pathlib
import re
from collections.abc import Iterator

import pytest

from gitquorum.protocol import pktline, smarthttp
from tests.integration import helpers
from tests.integration.helpers import ALICE, Git, Server

pytestmark = pytest.mark.integration

PROBE_OK = 'endpoint="auth_probe",service="receive-pack",outcome="ok"'


@pytest.fixture(scope="module")
def own_server(
    tmp_path_factory: pytest.TempPathFactory, auth_file: pathlib.Path
) -> Iterator[Server]:
    """A server of this module's own, so that its metrics count only this module's requests."""
    yield from helpers.start_server(
        tmp_path_factory, "--auth-file", str(auth_file), "--create-on-push"
    )


def counted(server: Server, series: str) -> float:
    """The value of one metrics series (labels included), 0 when absent."""
    text = helpers.http(server, "GET", "/metrics").body.decode()
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def protocol_errors(server: Server) -> float:
    text = helpers.http(server, "GET", "/metrics").body.decode()
    return sum(
        float(value)
        for value in re.findall(
            r'^gitquorum_http_requests_total\{[^}]*outcome="protocol_error"\} (\S+)$', text, re.M
        )
    )


def test_receive_pack_probe_gets_an_empty_200_and_changes_nothing(
    git: Git, own_server: Server, tmp_path: pathlib.Path
) -> None:
    repo = helpers.seed(git, own_server.root, "probed.git", tmp_path / "seed")
    before = git.refs(repo.path)
    reply = helpers.receive_pack(own_server, repo.name, smarthttp.AUTH_PROBE)
    assert reply.status == 200
    assert reply.body == b""
    assert reply.headers["content-type"] == "application/x-git-receive-pack-result"
    assert git.refs(repo.path) == before


def test_probe_needs_the_credentials_a_push_needs(git: Git, own_server: Server) -> None:
    reply = helpers.http(
        own_server,
        "POST",
        "/anything.git/git-receive-pack",
        body=smarthttp.AUTH_PROBE,
        headers={"Content-Type": "application/x-git-receive-pack-request"},
    )
    assert reply.status == 401


def test_upload_pack_probe_gets_an_empty_200(
    git: Git, own_server: Server, tmp_path: pathlib.Path
) -> None:
    repo = helpers.seed(git, own_server.root, "fetched.git", tmp_path / "seed")
    for headers in ({}, {smarthttp.GIT_PROTOCOL_HEADER: "version=2"}):
        reply = helpers.upload_pack(own_server, repo.name, smarthttp.AUTH_PROBE, headers=headers)
        assert (reply.status, reply.body) == (200, b""), headers


def test_git_push_over_the_post_buffer_is_probed_and_no_protocol_error(
    git: Git, own_server: Server, tmp_path: pathlib.Path
) -> None:
    work = tmp_path / "work"
    git.run("init", "-q", str(work))
    # Random bytes do not compress: the pack stays over git's 1 MiB post buffer.
    (work / "blob.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    git.run("add", "blob.bin", cwd=work)
    git.run("commit", "-q", "-m", "large", cwd=work)
    probes = counted(own_server, f"gitquorum_http_requests_total{{{PROBE_OK}}}")
    errors = protocol_errors(own_server)
    logged = len(own_server.log_text())

    git.run("push", "-q", own_server.url("large.git", ALICE), "main", cwd=work)

    assert counted(own_server, f"gitquorum_http_requests_total{{{PROBE_OK}}}") == probes + 1
    assert protocol_errors(own_server) == errors
    head = git.out("rev-parse", "HEAD", cwd=work)
    assert git.refs(own_server.root / "large.git")["refs/heads/main"] == head
    assert "protocol error" not in own_server.log_text()[logged:]


def test_command_section_without_updates_is_still_a_protocol_error(
    git: Git, own_server: Server, tmp_path: pathlib.Path
) -> None:
    repo = helpers.seed(git, own_server.root, "empty-section.git", tmp_path / "seed")
    reply = helpers.receive_pack(own_server, repo.name, pktline.FLUSH + pktline.FLUSH)
    assert reply.status == 200
    assert b"ERR protocol error" in reply.body
