"""Who may do what: 401 with a challenge, 403, 404, refused paths; through git and raw HTTP."""

import os
import pathlib

import pytest

from tests.integration import helpers
from tests.integration.helpers import ALICE, BOB, Git, Seeded, Server

pytestmark = pytest.mark.integration

ADVERTISE = "info/refs?service=git-upload-pack"


@pytest.fixture
def private_repo(
    git: Git, private_server: Server, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> Seeded:
    return helpers.seed(git, private_server.root, f"{request.node.name}.git", tmp_path / "seed")


def test_clone_without_credentials_is_challenged(
    git: Git, private_server: Server, private_repo: Seeded, tmp_path: pathlib.Path
) -> None:
    reply = helpers.http(private_server, "GET", f"/{private_repo.name}/{ADVERTISE}")
    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith('Basic realm="gitquorum"')
    result = git.run(
        "clone", private_server.url(private_repo.name), str(tmp_path / "c"), check=False
    )
    assert result.returncode != 0
    assert "could not read Username" in result.stderr  # git asked for credentials


def test_clone_with_wrong_token_is_401(
    git: Git, private_server: Server, private_repo: Seeded, tmp_path: pathlib.Path
) -> None:
    reply = helpers.http(
        private_server, "GET", f"/{private_repo.name}/{ADVERTISE}", user=(ALICE[0], "wrong")
    )
    assert reply.status == 401
    assert "www-authenticate" in reply.headers
    result = git.run(
        "clone",
        private_server.url(private_repo.name, ("alice", "wrong")),
        str(tmp_path / "c"),
        check=False,
    )
    assert "Authentication failed" in result.stderr


def test_unknown_user_is_401(private_server: Server, private_repo: Seeded) -> None:
    reply = helpers.http(
        private_server, "GET", f"/{private_repo.name}/{ADVERTISE}", user=("mallory", "guess")
    )
    assert reply.status == 401


def test_malformed_authorization_is_401(private_server: Server, private_repo: Seeded) -> None:
    reply = helpers.http(
        private_server,
        "GET",
        f"/{private_repo.name}/{ADVERTISE}",
        headers={"Authorization": "Basic !!!not-base64"},
    )
    assert reply.status == 401


def test_read_only_user_clones_but_push_is_403(
    git: Git, private_server: Server, private_repo: Seeded, tmp_path: pathlib.Path
) -> None:
    clone = tmp_path / "clone"
    git.run("clone", "-q", private_server.url(private_repo.name, BOB), str(clone))
    git.commit(clone, "b.txt", "bob\n")
    result = git.run("push", "origin", "main", cwd=clone, check=False)
    assert result.returncode != 0
    assert "403" in result.stderr
    assert git.refs(private_repo.path)["refs/heads/main"] == private_repo.head


def test_anonymous_push_is_401_even_with_anonymous_read(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    clone = tmp_path / "clone"
    git.run("clone", "-q", server.url(repo.name), str(clone))
    git.commit(clone, "anon.txt", "anonymous\n")
    result = git.run("push", "origin", "main", cwd=clone, check=False)
    assert result.returncode != 0
    assert "could not read Username" in result.stderr
    reply = helpers.http(server, "GET", f"/{repo.name}/info/refs?service=git-receive-pack")
    assert reply.status == 401


def test_unknown_repository_is_404(git: Git, server: Server, tmp_path: pathlib.Path) -> None:
    assert helpers.http(server, "GET", f"/nothing-here.git/{ADVERTISE}").status == 404
    result = git.run("clone", server.url("nothing-here.git"), str(tmp_path / "c"), check=False)
    assert "not found" in result.stderr


@pytest.mark.parametrize(
    "path",
    [
        "/../outside.git",
        "/%2e%2e/outside.git",
        "/a/%2E%2E/%2e%2e/outside.git",
        "/.hidden.git",
        "/repo.git%00x",
        "/a%5c..%5coutside.git",
    ],
)
def test_path_escaping_the_root_is_refused(server: Server, path: str) -> None:
    outside = server.root.parent / "outside.git"
    if not outside.exists():
        helpers.Git(home=server.root.parent).run("init", "-q", "--bare", str(outside))
    reply = helpers.http(server, "GET", f"{path}/{ADVERTISE}")
    assert reply.status in (403, 404)
    assert reply.status == 403 or b"not found" in reply.body.lower()
    assert b"Traceback" not in reply.body


def test_symlink_out_of_the_root_is_refused(git: Git, server: Server) -> None:
    outside = server.root.parent / "linked-target.git"
    git.run("init", "-q", "--bare", str(outside))
    link = server.root / "link.git"
    if not link.exists():
        os.symlink(outside, link)
    reply = helpers.http(server, "GET", f"/link.git/{ADVERTISE}")
    assert reply.status == 403


def test_dumb_http_is_403(server: Server, repo: Seeded) -> None:
    reply = helpers.http(server, "GET", f"/{repo.name}/info/refs")
    assert reply.status == 403
    assert b"smart HTTP" in reply.body


def test_unknown_service_is_400(server: Server, repo: Seeded) -> None:
    reply = helpers.http(server, "GET", f"/{repo.name}/info/refs?service=git-shell")
    assert reply.status == 400


def test_wrong_content_type_is_415(server: Server, repo: Seeded) -> None:
    reply = helpers.http(
        server,
        "POST",
        f"/{repo.name}/git-upload-pack",
        body=b"0000",
        headers={"Content-Type": "text/plain"},
    )
    assert reply.status == 415
