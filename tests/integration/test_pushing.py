"""Push with the git CLI: branches, force, deletions, tags, atomic pushes, options, creation."""

import pathlib

import pytest

from tests.integration import helpers
from tests.integration.helpers import ALICE, Git, Seeded, Server

pytestmark = pytest.mark.integration

PROTOCOLS = [pytest.param(0, id="v0"), pytest.param(2, id="v2")]


def clone_for_push(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path, protocol: int | None = None
) -> pathlib.Path:
    work = tmp_path / "work"
    git.run("clone", "-q", server.url(repo.name, ALICE), str(work), protocol=protocol)
    return work


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_push_new_commit_and_branch(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path, protocol: int
) -> None:
    work = clone_for_push(git, server, repo, tmp_path, protocol)
    head = git.commit(work, "new.txt", "new\n")
    git.run("push", "-q", "origin", "main", "main:refs/heads/feature", cwd=work, protocol=protocol)
    refs = git.refs(repo.path)
    assert refs["refs/heads/main"] == head
    assert refs["refs/heads/feature"] == head
    git.run("fsck", "--strict", cwd=repo.path)


def test_push_non_fast_forward_refused_then_forced(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    work = clone_for_push(git, server, repo, tmp_path)
    git.run("reset", "-q", "--hard", "HEAD~1", cwd=work)
    rewritten = git.commit(work, "other.txt", "rewritten history\n")
    refused = git.run("push", "origin", "main", cwd=work, check=False)
    assert refused.returncode != 0
    assert "rejected" in refused.stderr
    assert git.refs(repo.path)["refs/heads/main"] == repo.head
    git.run("push", "-q", "--force", "origin", "main", cwd=work)
    assert git.refs(repo.path)["refs/heads/main"] == rewritten


def test_push_delete_branch_and_tag(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    work = clone_for_push(git, server, repo, tmp_path)
    git.run("push", "-q", "origin", "main:refs/heads/doomed", cwd=work)
    assert "refs/heads/doomed" in git.refs(repo.path)
    git.run("push", "-q", "origin", "--delete", "doomed", "v1", cwd=work)
    refs = git.refs(repo.path)
    assert "refs/heads/doomed" not in refs
    assert "refs/tags/v1" not in refs


def test_push_lightweight_and_annotated_tags(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    work = clone_for_push(git, server, repo, tmp_path)
    git.run("tag", "light", cwd=work)
    git.run("tag", "-a", "-m", "release 2", "v2", cwd=work)
    git.run("push", "-q", "origin", "--tags", cwd=work)
    refs = git.refs(repo.path)
    assert refs["refs/tags/light"] == repo.head
    assert git.out("cat-file", "-t", refs["refs/tags/v2"], cwd=repo.path) == "tag"


def test_push_atomic_all_or_nothing(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    work = clone_for_push(git, server, repo, tmp_path)
    other = tmp_path / "other"
    git.run("clone", "-q", server.url(repo.name, ALICE), str(other))
    moved = git.commit(other, "race.txt", "someone else pushed first\n")
    git.run("push", "-q", "origin", "main", cwd=other)

    git.commit(work, "mine.txt", "mine\n")
    failed = git.run(
        "push", "--atomic", "origin", "main", "main:refs/heads/side", cwd=work, check=False
    )
    assert failed.returncode != 0
    refs = git.refs(repo.path)
    assert refs["refs/heads/main"] == moved
    assert "refs/heads/side" not in refs, "an atomic push applied half of its updates"

    git.run("pull", "-q", "--rebase", "origin", "main", cwd=work)
    git.run("push", "-q", "--atomic", "origin", "main", "main:refs/heads/side", cwd=work)
    refs = git.refs(repo.path)
    assert refs["refs/heads/main"] == refs["refs/heads/side"] != moved


def test_push_options_reach_receive_pack(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    hook = repo.path / "hooks" / "pre-receive"
    hook.write_text(
        '#!/bin/sh\necho "options=$GIT_PUSH_OPTION_COUNT:$GIT_PUSH_OPTION_0 '
        'user=$REMOTE_USER" >&2\n'
    )
    hook.chmod(0o755)
    work = clone_for_push(git, server, repo, tmp_path)
    git.commit(work, "opt.txt", "options\n")
    result = git.run("push", "-o", "ci.skip", "origin", "main", cwd=work)
    assert "options=1:ci.skip user=alice" in result.stderr


def test_push_many_refs_in_one_push(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    work = clone_for_push(git, server, repo, tmp_path)
    specs = [f"main:refs/heads/many/{index}" for index in range(200)]
    git.run("push", "-q", "origin", *specs, cwd=work)
    refs = git.refs(repo.path)
    assert sum(ref.startswith("refs/heads/many/") for ref in refs) == 200
    assert helpers.quarantines(repo.path) == []
