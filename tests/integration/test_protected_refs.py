"""Protected refs on replicas: force pushes and deletions of a protected branch are refused
with git's usual report, through a follower too, and nothing changes on any replica; the
rules are read again when their file changes (issue 12)."""

import json
import pathlib
from collections.abc import Iterator

import pytest

from tests.integration.helpers import Git
from tests.integration.replicas import Replicas

pytestmark = pytest.mark.integration

MAIN_ONLY = {"protectedRefs": [{"pattern": "refs/heads/main"}]}


@pytest.fixture
def policy(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(MAIN_ONLY))
    return path


@pytest.fixture
def replicas(
    tmp_path: pathlib.Path, auth_file: pathlib.Path, policy: pathlib.Path
) -> Iterator[Replicas]:
    group = Replicas(tmp_path / "replicas", auth_file, 3, ("--policy-file", str(policy)))
    try:
        group.start_all()
        yield group
    finally:
        group.stop_all()


def _refs_everywhere(git: Git, replicas: Replicas) -> list[dict[str, str]]:
    return [
        git.refs(replicas.data(replica) / "repositories" / "repository.git")
        for replica in replicas.ids
    ]


def _history(git: Git, replicas: Replicas, tmp_path: pathlib.Path) -> tuple[pathlib.Path, str]:
    work = tmp_path / "work"
    git.run("init", "-q", "-b", "main", str(work))
    git.commit(work, "a", "1\n")
    first = git.commit(work, "a", "2\n")
    git.run("push", "-q", replicas.url("r0"), "main", "main:refs/heads/topic", cwd=work)
    replicas.wait_in_sync()
    return work, first


def test_protected_ref_force_push_refused_on_every_transport_path(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work, first = _history(git, replicas, tmp_path)
    before = _refs_everywhere(git, replicas)
    git.run("reset", "-q", "--hard", "HEAD~1", cwd=work)
    git.commit(work, "b", "rewritten\n")
    for replica in ("r0", "r1"):  # the leader, and a follower that forwards the push
        result = git.run("push", "--force", replicas.url(replica), "main", cwd=work, check=False)
        assert result.returncode != 0, result.stderr
        assert "! [remote rejected] main -> main (protected ref refs/heads/main" in result.stderr
        assert "force push" in result.stderr
    replicas.wait_in_sync()
    assert _refs_everywhere(git, replicas) == before
    # An unprotected branch may be forced; a fast-forward of main is fine.
    git.run("push", "-q", "--force", replicas.url("r0"), "main:refs/heads/topic", cwd=work)
    git.run("checkout", "-q", "-B", "ff", first, cwd=work)
    git.commit(work, "c", "forward\n")
    git.run("push", "-q", replicas.url("r1"), "ff:main", cwd=work)


def test_protected_ref_deletion_refused_and_allowed_when_the_rule_says(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path, policy: pathlib.Path
) -> None:
    work, _ = _history(git, replicas, tmp_path)
    result = git.run("push", replicas.url("r0"), ":main", cwd=work, check=False)
    assert result.returncode != 0
    assert "(protected ref refs/heads/main: deletion is not allowed)" in result.stderr
    assert all("refs/heads/main" in refs for refs in _refs_everywhere(git, replicas))
    # The rules are read again on change, without a restart.
    rule = {"pattern": "refs/heads/*", "allowDeletion": True}
    policy.write_text(json.dumps({"protectedRefs": [rule]}))
    git.run("push", "-q", replicas.url("r0"), ":topic", cwd=work)
    replicas.wait_in_sync()
    assert all("refs/heads/topic" not in refs for refs in _refs_everywhere(git, replicas))


def test_protected_ref_atomic_push_with_one_violation_changes_nothing(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work, _ = _history(git, replicas, tmp_path)
    before = _refs_everywhere(git, replicas)
    git.commit(work, "d", "more\n")
    result = git.run(
        "push", replicas.url("r0"), "main:refs/heads/new", ":main", cwd=work, check=False
    )
    assert result.returncode != 0
    replicas.wait_in_sync()
    assert _refs_everywhere(git, replicas) == before


def test_protected_ref_bad_policy_file_keeps_the_previous_rules(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path, policy: pathlib.Path
) -> None:
    work, _ = _history(git, replicas, tmp_path)
    policy.write_text("{not json")
    result = git.run("push", replicas.url("r0"), ":main", cwd=work, check=False)
    assert result.returncode != 0 and "deletion is not allowed" in result.stderr
    assert "not taken, keeping the previous rules" in replicas.log("r0")
