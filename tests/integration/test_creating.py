"""Repositories created by a push: only a push that succeeded leaves one behind."""

import pathlib
import shutil
from collections.abc import Iterator

import pytest

from gitquorum.protocol import pktline
from tests.integration import helpers
from tests.integration.helpers import ALICE, Git, Server

pytestmark = pytest.mark.integration

ZERO = "0" * 40
ADVERTISE_PUSH = "info/refs?service=git-receive-pack"
CLEANUP_DEADLINE = 20.0


def staging_directories(root: pathlib.Path) -> list[pathlib.Path]:
    # Staging lives directly under the root. Only list the root: walking into a staging
    # directory races with the server removing it.
    return sorted(root.glob(".creating-*"))


def assert_nothing_created(server: Server, name: str) -> None:
    assert not (server.root / name).exists(), f"{name} was created"
    assert not (server.root / f"{name}.git").exists(), f"{name}.git was created"
    assert staging_directories(server.root) == []


def work_tree(git: Git, path: pathlib.Path) -> tuple[pathlib.Path, str]:
    git.run("init", "-q", str(path))
    return path, git.commit(path, "a.txt", "a\n" * 5000)


@pytest.fixture(scope="module")
def racing_server(
    tmp_path_factory: pytest.TempPathFactory, auth_file: pathlib.Path
) -> Iterator[Server]:
    """Every push loses a race: a hook creates ``raced.git`` while the push is staged.

    New repositories get their hooks from the template directory; the pre-receive hook runs
    in the staging directory, in the root, after the pack is in and before refs are written.
    """
    template = tmp_path_factory.mktemp("template")
    hook = template / "hooks" / "pre-receive"
    hook.parent.mkdir()
    hook.write_text('#!/bin/sh\nmkdir ../raced.git && echo "winner" > ../raced.git/HEAD\n')
    hook.chmod(0o755)
    yield from helpers.start_server(
        tmp_path_factory,
        "--auth-file",
        str(auth_file),
        "--create-on-push",
        env={"GIT_TEMPLATE_DIR": str(template)},
    )


def test_create_on_push_creates_repository_that_clones(
    git: Git, server: Server, tmp_path: pathlib.Path
) -> None:
    work, head = work_tree(git, tmp_path / "work")
    git.run("push", "-q", server.url("made/on-push", ALICE), "main:refs/heads/trunk", cwd=work)
    created = server.root / "made" / "on-push.git"
    assert git.refs(created) == {"refs/heads/trunk": head}
    assert staging_directories(server.root) == []
    # HEAD followed the first pushed branch, so a clone checks it out
    clone = tmp_path / "clone"
    git.run("clone", "-q", server.url("made/on-push"), str(clone))
    assert (clone / "a.txt").read_text() == "a\n" * 5000


def test_create_on_push_advertisement_is_gits_empty_one_and_creates_nothing(
    git: Git, server: Server
) -> None:
    reference = server.root / "empty-reference.git"
    git.run("init", "-q", "--bare", str(reference))
    expected = helpers.http(server, "GET", f"/empty-reference.git/{ADVERTISE_PUSH}", user=ALICE)
    reply = helpers.http(server, "GET", f"/advertised-only/{ADVERTISE_PUSH}", user=ALICE)
    assert reply.status == 200
    assert reply.body == expected.body
    assert f"{ZERO} capabilities^{{}}\0".encode() in reply.body
    assert b"report-status" in reply.body
    assert_nothing_created(server, "advertised-only")


def test_create_on_push_dry_run_creates_nothing(
    git: Git, server: Server, tmp_path: pathlib.Path
) -> None:
    work, _ = work_tree(git, tmp_path / "work")
    result = git.run("push", "--dry-run", server.url("dry-run", ALICE), "main", cwd=work)
    assert "[new branch]" in result.stderr
    assert_nothing_created(server, "dry-run")


def test_create_on_push_malformed_commands_create_nothing(server: Server) -> None:
    body = pktline.encode(b"not a command\0report-status") + pktline.FLUSH
    reply = helpers.receive_pack(server, "malformed.git", body)
    assert reply.status == 200
    assert b"ERR protocol error" in reply.body
    assert_nothing_created(server, "malformed")


def test_create_on_push_truncated_pack_creates_nothing(
    git: Git, server: Server, tmp_path: pathlib.Path
) -> None:
    work, head = work_tree(git, tmp_path / "work")
    commands, pack = helpers.push_body(git, work, ref="refs/heads/main", old=ZERO, new=head)
    reply = helpers.receive_pack(server, "truncated.git", commands + pack[: len(pack) // 2])
    assert reply.status == 200
    assert b"unpack " in reply.body and b"unpack ok" not in reply.body
    assert_nothing_created(server, "truncated")


def test_create_on_push_corrupt_pack_creates_nothing(
    git: Git, server: Server, tmp_path: pathlib.Path
) -> None:
    work, head = work_tree(git, tmp_path / "work")
    commands, pack = helpers.push_body(git, work, ref="refs/heads/main", old=ZERO, new=head)
    corrupt = bytearray(pack)
    for offset in range(len(pack) // 2, len(pack) // 2 + 64):
        corrupt[offset] ^= 0x5A
    reply = helpers.receive_pack(server, "corrupt.git", commands + bytes(corrupt))
    assert reply.status == 200
    assert b"ng refs/heads/main" in reply.body
    assert_nothing_created(server, "corrupt")


def test_create_on_push_rejected_update_creates_nothing(
    git: Git, server: Server, tmp_path: pathlib.Path
) -> None:
    # The client claims the ref already exists: git turns the update down, the pack is in.
    work, head = work_tree(git, tmp_path / "work")
    commands, pack = helpers.push_body(git, work, ref="refs/heads/main", old=ZERO, new=head)
    stale = commands.replace(f"{ZERO} {head}".encode(), f"{head} {head}".encode())
    reply = helpers.receive_pack(server, "rejected.git", stale + pack)
    assert reply.status == 200
    assert b"unpack ok" in reply.body and b"ng refs/heads/main" in reply.body
    assert_nothing_created(server, "rejected")


def test_create_on_push_client_gone_creates_nothing(
    git: Git, server: Server, tmp_path: pathlib.Path
) -> None:
    work, head = work_tree(git, tmp_path / "work")
    commands, pack = helpers.push_body(git, work, ref="refs/heads/main", old=ZERO, new=head)
    push = helpers.RawPush(server, "abandoned.git", commands + pack)
    try:
        push.send(commands + pack[:100])
        helpers.wait_for(
            lambda: bool(staging_directories(server.root)),
            deadline=CLEANUP_DEADLINE,
            what="a staging directory for the push",
            seen=lambda: str(sorted(server.root.iterdir())),
        )
    finally:
        push.close()
    helpers.wait_for(
        lambda: not staging_directories(server.root),
        deadline=CLEANUP_DEADLINE,
        what="the staging directory to be removed after the client left",
        seen=lambda: str(staging_directories(server.root)),
    )
    assert_nothing_created(server, "abandoned")


def test_create_on_push_losing_a_race_is_refused_and_merges_nothing(
    git: Git, racing_server: Server, tmp_path: pathlib.Path
) -> None:
    work, _ = work_tree(git, tmp_path / "work")
    result = git.run("push", racing_server.url("raced", ALICE), "main", cwd=work, check=False)
    assert result.returncode != 0
    assert "fetch and push again" in result.stderr
    winner = racing_server.root / "raced.git"
    assert sorted(path.name for path in winner.iterdir()) == ["HEAD"]
    assert (winner / "HEAD").read_text() == "winner\n"
    assert staging_directories(racing_server.root) == []


def test_create_on_push_staging_directory_is_never_served(git: Git, server: Server) -> None:
    staged = server.root / ".creating-xyz"
    git.run("init", "-q", "--bare", str(staged))
    try:
        for path in ("/.creating-xyz", "/.creating-xyz.git"):
            for query in ("service=git-upload-pack", "service=git-receive-pack"):
                reply = helpers.http(server, "GET", f"{path}/info/refs?{query}", user=ALICE)
                assert reply.status in (403, 404), (path, query, reply.status)
                assert b"capabilities" not in reply.body
        reply = helpers.receive_pack(server, ".creating-xyz", pktline.FLUSH)
        assert reply.status in (403, 404)
        assert git.refs(staged) == {}
    finally:
        # The shared server's root must hold no staging directory for the other tests.
        shutil.rmtree(staged)


def test_push_to_missing_repository_without_create_on_push_is_404(
    git: Git, private_server: Server, tmp_path: pathlib.Path
) -> None:
    work, _ = work_tree(git, tmp_path / "work")
    result = git.run("push", private_server.url("absent.git", ALICE), "main", cwd=work, check=False)
    assert result.returncode != 0
    assert "not found" in result.stderr
    reply = helpers.receive_pack(private_server, "absent.git", pktline.FLUSH)
    assert reply.status == 404
    assert_nothing_created(private_server, "absent")
