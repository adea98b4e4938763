"""Repositories owned by another uid: served all the same, or refused at startup with the reason.

git refuses a repository whose owner is not the uid running it ("detected dubious
ownership") unless safe.directory names it; the server names each repository it resolved.
Permissions it lacks are reported when it starts, in terms of uids and modes. These tests
need root, to own files as another uid and to run the server as one.
"""

import argparse
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from gitquorum import errors
from gitquorum.commands import serve
from tests.integration import helpers
from tests.integration.helpers import ALICE, Git, Server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="owning files as another uid needs root"),
]

OWNER = 1234
"""The uid (and gid) that owns the served files: no user of this machine."""
SERVER_UID = 65534
"""The uid the server runs as when the test needs it to lack permissions (nobody)."""


def chown_tree(path: pathlib.Path, uid: int) -> None:
    os.chown(path, uid, uid)
    for directory, subdirectories, files in os.walk(path):
        for name in [*subdirectories, *files]:
            os.chown(os.path.join(directory, name), uid, uid, follow_symlinks=False)


@pytest.fixture
def foreign_root(git: Git, tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A root holding one seeded repository, all owned by :data:`OWNER`.

    Its parent is searchable by anyone (pytest's own temporary directories are not), so
    that only the root's own permissions decide what another uid may do.
    """
    parent = pathlib.Path(tempfile.mkdtemp(prefix="gitquorum-ownership-"))
    try:
        parent.chmod(0o755)
        root = parent / "root"
        root.mkdir()
        helpers.seed(git, root, "theirs.git", tmp_path / "seed")
        chown_tree(root, OWNER)
        yield root
    finally:
        shutil.rmtree(parent)


def start(root: pathlib.Path, log: pathlib.Path, *args: str) -> Iterator[Server]:
    server = Server(root, log, args)
    try:
        yield server
    finally:
        server.stop()


def refusal_as(uid: int, root: pathlib.Path, *args: str) -> str:
    """What ``gitquorum serve``'s startup checks say when run as ``uid``; empty if accepted.

    They run in a forked child that drops to ``uid``: the interpreter lives under a private
    directory a non-root process could not start from, and the child needs nothing new.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        message = b""
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            parser = argparse.ArgumentParser()
            serve.add_arguments(parser)
            serve.settings_from(parser.parse_args(["--root", str(root), *args]))
        except errors.ConfigError as error:
            message = str(error).encode()
        finally:
            os.write(write, message)
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    return said


def test_git_itself_refuses_the_foreign_repository(git: Git, foreign_root: pathlib.Path) -> None:
    # What the server works around: without safe.directory, git stops at the ownership check.
    result = git.run(
        "upload-pack", "--advertise-refs", str(foreign_root / "theirs.git"), check=False
    )
    assert result.returncode != 0
    assert "dubious ownership" in result.stderr


def test_repository_of_another_uid_is_cloned_and_pushed(
    git: Git, foreign_root: pathlib.Path, auth_file: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    for server in start(foreign_root, tmp_path / "server.log", "--auth-file", str(auth_file)):
        work = tmp_path / "clone"
        git.run("clone", "-q", server.url("theirs.git", ALICE), str(work))
        head = git.commit(work, "mine.txt", "pushed by root into uid 1234's repository\n")
        git.run("push", "-q", "origin", "main", cwd=work)
        refs = git.run(
            "-c",
            f"safe.directory={foreign_root / 'theirs.git'}",
            "for-each-ref",
            "refs/heads/main",
            cwd=foreign_root / "theirs.git",
        ).stdout
        assert refs.startswith(head)
        log = server.log_text()
        assert f"belongs to uid {OWNER}" in log
        assert "dubious" not in log


def test_root_the_server_cannot_read_is_refused_at_startup(foreign_root: pathlib.Path) -> None:
    foreign_root.chmod(0o700)
    message = refusal_as(SERVER_UID, foreign_root, "--anonymous-read")
    assert f"--root {foreign_root}" in message
    assert f"runs as uid {SERVER_UID}, which may not read it" in message
    assert f"owner uid {OWNER}" in message and "drwx------" in message


def test_create_on_push_refuses_a_root_the_server_cannot_write(
    foreign_root: pathlib.Path,
) -> None:
    foreign_root.chmod(0o755)
    assert refusal_as(SERVER_UID, foreign_root, "--anonymous-read") == ""
    message = refusal_as(SERVER_UID, foreign_root, "--anonymous-read", "--create-on-push")
    assert "may not read and write (--create-on-push" in message
    assert f"owner uid {OWNER}" in message


def test_root_the_server_cannot_reach_is_refused_at_startup(tmp_path: pathlib.Path) -> None:
    # pytest's temporary directories are root's alone: another uid cannot even look inside.
    root = tmp_path / "root"
    root.mkdir()
    message = refusal_as(SERVER_UID, root, "--anonymous-read")
    assert message == f"--root {root}: Permission denied (this server runs as uid {SERVER_UID})"
