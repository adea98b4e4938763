"""dulwich's HTTP client against the server: clone, shallow clone, fetch, push, ls-remote."""

import io
import pathlib

import pytest
from dulwich import porcelain
from dulwich.repo import Repo

from tests.integration.helpers import ALICE, Git, Seeded, Server

pytestmark = pytest.mark.integration

QUIET = {"errstream": io.BytesIO()}


@pytest.mark.parametrize("protocol", [0, 2])
def test_dulwich_clone_and_fetch(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path, protocol: int
) -> None:
    target = tmp_path / "clone"
    clone = porcelain.clone(server.url(repo.name), str(target), protocol_version=protocol, **QUIET)
    try:
        assert clone.refs[b"refs/remotes/origin/main"].decode() == repo.head
        assert (target / "file0.txt").read_text() == "content 0\n"
        new_head = git.commit(repo.work, "more.txt", "more\n")
        git.run("push", "-q", str(repo.path), "main", cwd=repo.work)
        result = porcelain.fetch(clone, "origin", **QUIET)
        assert result.refs[b"refs/heads/main"].decode() == new_head
        assert new_head.encode() in clone.object_store
    finally:
        clone.close()


def test_dulwich_shallow_clone(server: Server, repo: Seeded, tmp_path: pathlib.Path) -> None:
    clone = porcelain.clone(server.url(repo.name), str(tmp_path / "shallow"), depth=1, **QUIET)
    try:
        assert clone.get_shallow() == {repo.head.encode()}
    finally:
        clone.close()


def test_dulwich_push_with_credentials(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "clone"
    porcelain.clone(server.url(repo.name), str(target), **QUIET).close()
    (target / "dulwich.txt").write_text("pushed by dulwich\n")
    with Repo(str(target)) as local:
        porcelain.add(local, [str(target / "dulwich.txt")])
        new = porcelain.commit(
            local,
            message=b"from dulwich",
            author=b"D <d@example.com>",
            committer=b"D <d@example.com>",
        )
        porcelain.push(local, server.url(repo.name, ALICE), "refs/heads/main", **QUIET)
    assert git.refs(repo.path)["refs/heads/main"] == new.decode()
    git.run("fsck", "--strict", cwd=repo.path)


def test_dulwich_ls_remote(server: Server, repo: Seeded) -> None:
    result = porcelain.ls_remote(server.url(repo.name))
    assert result.refs[b"refs/heads/main"].decode() == repo.head
    assert result.symrefs[b"HEAD"] == b"refs/heads/main"
