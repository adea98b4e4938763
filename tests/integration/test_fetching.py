"""Clone and fetch with the git CLI over protocol v0 and v2: full, shallow, partial."""

import pathlib

import pytest

from gitquorum.protocol import pktline, reporting
from tests.integration import helpers
from tests.integration.helpers import Git, Seeded, Server

pytestmark = pytest.mark.integration

PROTOCOLS = [pytest.param(0, id="v0"), pytest.param(1, id="v1"), pytest.param(2, id="v2")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_clone_anonymous_gets_history_and_tags(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path, protocol: int
) -> None:
    clone = tmp_path / "clone"
    git.run("clone", "-q", server.url(repo.name), str(clone), protocol=protocol)
    assert git.out("rev-parse", "HEAD", cwd=clone) == repo.head
    assert git.out("tag", cwd=clone) == "v1"
    assert (clone / "file2.txt").read_text() == "content 2\n" * 3
    git.run("fsck", "--strict", cwd=clone)


@pytest.mark.parametrize("suffix", ["", ".git"])
def test_clone_path_with_or_without_suffix(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path, suffix: str
) -> None:
    clone = tmp_path / "clone"
    git.run("clone", "-q", server.url(repo.name.removesuffix(".git") + suffix), str(clone))
    assert git.out("rev-parse", "HEAD", cwd=clone) == repo.head


def test_clone_nested_repository_without_suffix_on_disk(
    git: Git, server: Server, tmp_path: pathlib.Path
) -> None:
    seeded = helpers.seed(git, server.root, "group/sub/plain", tmp_path / "seed")
    clone = tmp_path / "clone"
    git.run("clone", "-q", server.url("group/sub/plain.git"), str(clone))
    assert git.out("rev-parse", "HEAD", cwd=clone) == seeded.head


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fetch_brings_new_commits(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path, protocol: int
) -> None:
    clone = tmp_path / "clone"
    git.run("clone", "-q", server.url(repo.name), str(clone), protocol=protocol)
    new_head = git.commit(repo.work, "later.txt", "later\n")
    git.run("push", "-q", str(repo.path), "main", cwd=repo.work)
    git.run("fetch", "-q", "origin", cwd=clone, protocol=protocol)
    assert git.out("rev-parse", "origin/main", cwd=clone) == new_head


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shallow_clone_then_deepen(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path, protocol: int
) -> None:
    clone = tmp_path / "clone"
    git.run("clone", "-q", "--depth", "1", server.url(repo.name), str(clone), protocol=protocol)
    assert git.out("rev-list", "--count", "HEAD", cwd=clone) == "1"
    assert (clone / ".git" / "shallow").exists()
    git.run("fetch", "-q", "--deepen", "1", cwd=clone, protocol=protocol)
    assert git.out("rev-list", "--count", "HEAD", cwd=clone) == "2"
    git.run("fetch", "-q", "--unshallow", cwd=clone, protocol=protocol)
    assert git.out("rev-list", "--count", "HEAD", cwd=clone) == "3"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partial_clone_blob_none_fetches_blobs_lazily(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path, protocol: int
) -> None:
    clone = tmp_path / "clone"
    git.run(
        "clone",
        "-q",
        "--no-checkout",
        "--filter=blob:none",
        server.url(repo.name),
        str(clone),
        protocol=protocol,
    )
    missing = git.out("rev-list", "--objects", "--missing=print", "HEAD", cwd=clone)
    assert sum(line.startswith("?") for line in missing.splitlines()) == 3
    git.run("checkout", "-q", "main", cwd=clone, protocol=protocol)  # fetches the blobs
    assert (clone / "file1.txt").read_text() == "content 1\n" * 2


def test_ls_remote_lists_refs_and_head(git: Git, server: Server, repo: Seeded) -> None:
    listing = git.out("ls-remote", "--symref", server.url(repo.name))
    assert "ref: refs/heads/main\tHEAD" in listing
    assert f"{repo.head}\trefs/heads/main" in listing
    assert "refs/tags/v1" in listing


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fetch_of_a_missing_object_ends_with_gits_error_not_a_cut(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path, protocol: int
) -> None:
    missing = "1234567890" * 4
    local = tmp_path / "local"
    git.run("init", "-q", str(local))
    result = git.run(
        "fetch", server.url(repo.name), missing, cwd=local, check=False, protocol=protocol
    )
    assert result.returncode != 0
    assert f"not our ref {missing}" in result.stderr, result.stderr
    # The transfer ended as git meant it to: no "RPC failed; curl 18 transfer closed ...".
    assert "RPC failed" not in result.stderr, result.stderr
    assert "curl" not in result.stderr, result.stderr


def test_upload_pack_of_a_missing_object_gets_a_whole_response(
    git: Git, server: Server, repo: Seeded
) -> None:
    want = pktline.encode(f"want {'1234567890' * 4} side-band-64k\n".encode())
    reply = helpers.upload_pack(server, repo.name, want + pktline.FLUSH + pktline.encode(b"done\n"))
    # http.client raises IncompleteRead on a body cut mid-chunk: this one is read whole.
    assert reply.status == 200
    assert reporting.ends_with_error(reply.body), reply.body
    assert b"not our ref" in reply.body
