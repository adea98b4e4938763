"""Limits: body size, bounded git processes, idle and total request time, clean shutdown."""

import base64
import os
import pathlib
import re
import time
from collections.abc import Iterator

import pytest

from tests.integration import helpers
from tests.integration.helpers import ALICE, Git, Server

pytestmark = pytest.mark.integration


@pytest.fixture
def limited(
    tmp_path_factory: pytest.TempPathFactory,
    auth_file: pathlib.Path,
    request: pytest.FixtureRequest,
) -> Iterator[Server]:
    yield from helpers.start_server(tmp_path_factory, "--auth-file", str(auth_file), *request.param)


def incompressible_commit(git: Git, repo: helpers.Seeded, size: int) -> str:
    return git.commit(repo.work, "random.bin", base64.b64encode(os.urandom(size)).decode())


def git_processes(server: Server) -> int:
    text = helpers.http(server, "GET", "/metrics").body.decode()
    return int(float(re.search(r"^gitquorum_git_processes_running (\S+)$", text, re.M)[1]))


@pytest.mark.parametrize("limited", [["--max-push-bytes", "20000"]], indirect=True)
def test_push_over_size_limit_is_413_and_changes_nothing(
    git: Git, limited: Server, tmp_path: pathlib.Path
) -> None:
    repo = helpers.seed(git, limited.root, "sized.git", tmp_path / "seed")
    new = incompressible_commit(git, repo, 60_000)
    commands, pack = helpers.push_body(
        git, repo.work, ref="refs/heads/main", old=repo.head, new=new
    )
    before = (git.refs(repo.path), git.object_count(repo.path))
    reply = helpers.receive_pack(limited, repo.name, commands + pack)
    assert reply.status == 413
    assert (git.refs(repo.path), git.object_count(repo.path)) == before
    assert helpers.quarantines(repo.path) == []
    result = git.run("push", limited.url(repo.name, ALICE), "main", cwd=repo.work, check=False)
    assert result.returncode != 0


@pytest.mark.parametrize(
    "limited",
    [["--max-git-processes", "1", "--queue-timeout", "0.3", "--idle-timeout", "3"]],
    indirect=True,
)
def test_git_processes_are_bounded_and_idle_bodies_time_out(
    git: Git, limited: Server, tmp_path: pathlib.Path
) -> None:
    repo = helpers.seed(git, limited.root, "busy.git", tmp_path / "seed")
    new = incompressible_commit(git, repo, 100_000)
    commands, pack = helpers.push_body(
        git, repo.work, ref="refs/heads/main", old=repo.head, new=new
    )
    before = (git.refs(repo.path), git.object_count(repo.path))
    stalled = helpers.RawPush(limited, repo.name, commands + pack)
    try:
        stalled.send(commands + pack[: len(pack) // 2])
        helpers.wait_for(
            lambda: git_processes(limited) == 1,
            deadline=10,
            what="the stalled push to hold the only git slot",
            seen=lambda: f"{git_processes(limited)} git processes",
        )
        busy = helpers.http(
            limited, "GET", f"/{repo.name}/info/refs?service=git-upload-pack", user=ALICE
        )
        assert busy.status == 503
        assert busy.headers["retry-after"]
        assert stalled.status() == 408  # the idle timeout ends the stalled push
    finally:
        stalled.close()
    helpers.wait_for(
        lambda: git_processes(limited) == 0,
        deadline=10,
        what="the git slot to be released",
        seen=lambda: str(git_processes(limited)),
    )
    assert (git.refs(repo.path), git.object_count(repo.path)) == before
    assert helpers.quarantines(repo.path) == []
    ok = helpers.http(limited, "GET", f"/{repo.name}/info/refs?service=git-upload-pack", user=ALICE)
    assert ok.status == 200


@pytest.mark.parametrize("limited", [[]], indirect=True)
def test_client_gone_mid_push_frees_its_git_process_at_once(
    git: Git, limited: Server, tmp_path: pathlib.Path
) -> None:
    # Well inside the default idle timeout (60 s): the server must notice the closed
    # connection itself, not wait for the body to go quiet.
    repo = helpers.seed(git, limited.root, "abandoned.git", tmp_path / "seed")
    new = incompressible_commit(git, repo, 60_000)
    commands, pack = helpers.push_body(
        git, repo.work, ref="refs/heads/main", old=repo.head, new=new
    )
    before = (git.refs(repo.path), git.object_count(repo.path))
    gone = helpers.RawPush(limited, repo.name, commands + pack)
    try:
        gone.send(commands + pack[:1000])
        helpers.wait_for(
            lambda: git_processes(limited) == 1,
            deadline=10,
            what="receive-pack to start",
            seen=lambda: str(git_processes(limited)),
        )
    finally:
        gone.close()
    helpers.wait_for(
        lambda: git_processes(limited) == 0,
        deadline=10,
        what="the git slot to be released after the client left",
        seen=lambda: str(git_processes(limited)),
    )
    assert (git.refs(repo.path), git.object_count(repo.path)) == before
    assert helpers.quarantines(repo.path) == []
    assert "outcome=client_gone" in limited.log_text()


@pytest.mark.parametrize(
    "limited", [["--request-timeout", "1", "--idle-timeout", "10"]], indirect=True
)
def test_request_past_its_time_limit_is_ended(
    git: Git, limited: Server, tmp_path: pathlib.Path
) -> None:
    repo = helpers.seed(git, limited.root, "slow.git", tmp_path / "seed")
    new = incompressible_commit(git, repo, 20_000)
    commands, pack = helpers.push_body(
        git, repo.work, ref="refs/heads/main", old=repo.head, new=new
    )
    trickle = helpers.RawPush(limited, repo.name, commands + pack)
    started = time.monotonic()
    try:
        trickle.send(commands)
        trickle.sock.settimeout(0.2)
        status = None
        # A client that keeps sending, a little at a time: never idle, always too slow.
        for offset in range(0, len(pack), 64):
            try:
                trickle.send(pack[offset : offset + 64])
                status = trickle.status()
                break
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                break
        trickle.sock.settimeout(10)
        status = status or trickle.status()
    finally:
        trickle.close()
    assert status == 408
    assert time.monotonic() - started < 8
    assert git.refs(repo.path)["refs/heads/main"] == repo.head


@pytest.mark.parametrize("limited", [[]], indirect=True)
def test_sigterm_stops_the_server_cleanly(limited: Server) -> None:
    assert helpers.http(limited, "GET", "/readyz").status == 200
    assert limited.stop() == 0
    assert "stopped" in limited.log_text()
