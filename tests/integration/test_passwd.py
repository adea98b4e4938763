"""``gitquorum passwd`` and a running server: add, replace, restrict and delete users."""

import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration import helpers
from tests.integration.helpers import Git, Server

pytestmark = pytest.mark.integration


def passwd(
    auth_file: pathlib.Path, *args: str, token: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitquorum", "passwd", "--auth-file", str(auth_file), *args],
        input=token + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def auth_path(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "users"
    assert passwd(path, "carol", token="first-token").returncode == 0
    return path


@pytest.fixture
def carol_server(
    tmp_path_factory: pytest.TempPathFactory, auth_path: pathlib.Path
) -> Iterator[Server]:
    yield from helpers.start_server(tmp_path_factory, "--auth-file", str(auth_path))


def advertise(server: Server, user: tuple[str, str], service: str = "git-receive-pack") -> int:
    return helpers.http(server, "GET", f"/repo.git/info/refs?service={service}", user=user).status


def test_passwd_writes_a_hashed_private_file(auth_path: pathlib.Path) -> None:
    text = auth_path.read_text()
    assert text.startswith("carol:scrypt$n=16384,r=8,p=1$")
    assert "first-token" not in text
    assert auth_path.stat().st_mode & 0o777 == 0o600


def test_passwd_user_pushes_and_clones_with_plain_git(
    git: Git, carol_server: Server, tmp_path: pathlib.Path
) -> None:
    helpers.seed(git, carol_server.root, "repo.git", tmp_path / "seed")
    carol = ("carol", "first-token")
    clone = tmp_path / "clone"
    git.run("clone", "-q", carol_server.url("repo.git", carol), str(clone))
    head = git.commit(clone, "carol.txt", "carol\n")
    git.run("push", "-q", "origin", "main", cwd=clone)
    assert git.refs(carol_server.root / "repo.git")["refs/heads/main"] == head


def test_passwd_replace_read_only_and_delete_reach_the_running_server(
    git: Git, carol_server: Server, auth_path: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    helpers.seed(git, carol_server.root, "repo.git", tmp_path / "seed")
    assert advertise(carol_server, ("carol", "first-token")) == 200

    assert passwd(auth_path, "carol", token="second-token").returncode == 0
    helpers.wait_for(
        lambda: advertise(carol_server, ("carol", "first-token")) == 401,
        deadline=10,
        what="the replaced token to be refused",
    )
    assert advertise(carol_server, ("carol", "second-token")) == 200

    assert passwd(auth_path, "carol", "--read-only", token="second-token").returncode == 0
    helpers.wait_for(
        lambda: advertise(carol_server, ("carol", "second-token")) == 403,
        deadline=10,
        what="the read-only user's push to be forbidden",
    )
    assert advertise(carol_server, ("carol", "second-token"), "git-upload-pack") == 200

    assert passwd(auth_path, "--delete", "carol").returncode == 0
    helpers.wait_for(
        lambda: advertise(carol_server, ("carol", "second-token"), "git-upload-pack") == 401,
        deadline=10,
        what="the deleted user to be refused",
    )


def test_passwd_generate_prints_a_token_that_works(
    carol_server: Server, auth_path: pathlib.Path, git: Git, tmp_path: pathlib.Path
) -> None:
    helpers.seed(git, carol_server.root, "repo.git", tmp_path / "seed")
    result = passwd(auth_path, "dave", "--generate")
    assert result.returncode == 0
    token = result.stdout.strip()
    assert len(token) >= 24
    helpers.wait_for(
        lambda: advertise(carol_server, ("dave", token)) == 200,
        deadline=10,
        what="the generated token to be accepted",
    )


def test_passwd_refuses_empty_token_and_bad_names(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "users"
    empty = passwd(path, "erin", token="")
    assert empty.returncode == 2 and "no token" in empty.stderr
    bad = passwd(path, "bad:name", token="x")
    assert bad.returncode == 2 and "user names" in bad.stderr
    assert not path.exists()
