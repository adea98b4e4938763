"""git over SSH with the real OpenSSH client against a set of replicas: what a replica cannot
serve itself (a push on a follower, a fetch without a read lease) is relayed to the leader."""

import json
import pathlib
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests import waiting
from tests.integration import helpers, sshsetup
from tests.integration.helpers import Git
from tests.integration.sshsetup import Keys, SshReplicas

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return sshsetup.make_keys(tmp_path_factory.mktemp("ssh"))


@pytest.fixture
def ssh_replicas(
    tmp_path: pathlib.Path, auth_file: pathlib.Path, keys: Keys
) -> Iterator[SshReplicas]:
    """Three replicas, r0 leading; r2 and the others reach each other through links a test
    may cut."""
    group = SshReplicas(tmp_path / "replicas", auth_file, keys, linked="r2")
    try:
        group.start_all()
        yield group
    finally:
        group.stop_all()


def _access_lines(log: str, outcome: str) -> list[str]:
    return [line for line in log.splitlines() if "transport=ssh" in line and outcome in line]


def _cut_from_its_leader(group: SshReplicas, replica: str) -> None:
    """``replica`` and its peers stop reaching each other: its read lease lapses while it
    runs and its clients still reach it."""
    assert group.links is not None and group.links.linked == replica
    group.links.cut()
    waiting.until(
        f"{replica} to lose its read lease once the leader cannot reach it",
        lambda: not group.status(replica)["readable"],
        timeout=15,
        interval=0.05,
        seen=lambda: group.status(replica),
    )


def test_push_over_ssh_to_a_follower_lands_on_every_replica(
    git: Git, ssh_replicas: SshReplicas, tmp_path: pathlib.Path
) -> None:
    work = tmp_path / "work"
    git.run("init", "-q", str(work))
    head = git.commit(work, "a.txt", "through a follower\n")
    follower = ssh_replicas.ids[1]
    env = ssh_replicas.git_env(follower)
    git.run("push", "-q", ssh_replicas.ssh_url(follower), "main", cwd=work, env=env)

    def everywhere() -> bool:
        return all(
            git.refs(ssh_replicas.repository(r)).get("refs/heads/main") == head
            for r in ssh_replicas.ids
        )

    helpers.wait_for(everywhere, deadline=10, what="the push on every replica")
    assert "(via a peer)" in ssh_replicas.log(ssh_replicas.leader)
    ssh_replicas.wait_in_sync()
    clone = tmp_path / "clone"
    other = ssh_replicas.ids[2]
    git.run("clone", "-q", ssh_replicas.ssh_url(other), str(clone),
            env=ssh_replicas.git_env(other))  # fmt: skip
    assert git.out("rev-parse", "HEAD", cwd=clone) == head


@pytest.mark.parametrize("protocol", [0, 2])
def test_clone_over_ssh_from_a_replica_without_read_lease_is_served_by_the_leader(
    git: Git, ssh_replicas: SshReplicas, tmp_path: pathlib.Path, protocol: int
) -> None:
    """The replica is behind (the leader took a push it never saw): the clone it relays gets
    the leader's newest commit, not the replica's stale one."""
    work = tmp_path / "work"
    git.run("init", "-q", "-b", "main", str(work))
    git.commit(work, "a.txt", "1\n")
    leader = ssh_replicas.leader
    git.run("push", "-q", ssh_replicas.ssh_url(leader), "main", cwd=work,
            env=ssh_replicas.git_env(leader))  # fmt: skip
    ssh_replicas.wait_in_sync()
    _cut_from_its_leader(ssh_replicas, "r2")
    head = git.commit(work, "a.txt", "2\n")
    git.run("push", "-q", ssh_replicas.ssh_url(leader), "main", cwd=work,
            env=ssh_replicas.git_env(leader))  # fmt: skip
    assert git.refs(ssh_replicas.repository("r2"))["refs/heads/main"] != head

    options = ("-o", "SetEnv=GIT_PROTOCOL=version=2") if protocol == 2 else ()
    env = ssh_replicas.git_env("r2", ssh_replicas.keys.reader, *options)
    clone = tmp_path / "clone"
    git.run("clone", "-q", ssh_replicas.ssh_url("r2"), str(clone), env=env, protocol=protocol)
    assert git.out("rev-parse", "HEAD", cwd=clone) == head
    assert git.out("fsck", "--strict", cwd=clone) == ""
    relayed = _access_lines(ssh_replicas.log("r2"), "outcome=forwarded")
    assert any("service=upload-pack" in line for line in relayed), relayed
    served = _access_lines(ssh_replicas.log(leader), "key=reader (via a peer)")
    assert any("service=upload-pack" in line for line in served), served
    assert not ssh_replicas.status("r2")["readable"]


def test_fetch_over_ssh_from_a_replica_without_read_lease_gets_new_commits(
    git: Git, ssh_replicas: SshReplicas, tmp_path: pathlib.Path
) -> None:
    """An incremental fetch (the client has most objects) through the replica, and a push
    through it too, while it is cut off from the leader's messages."""
    work = tmp_path / "work"
    git.run("init", "-q", "-b", "main", str(work))
    git.commit(work, "a.txt", "1\n")
    env = ssh_replicas.git_env("r2")
    url = ssh_replicas.ssh_url("r2")
    git.run("push", "-q", url, "main", cwd=work, env=env)
    ssh_replicas.wait_in_sync()
    clone = tmp_path / "clone"
    git.run("clone", "-q", url, str(clone), env=env)
    _cut_from_its_leader(ssh_replicas, "r2")
    head = git.commit(work, "b.txt", "2\n")
    git.run("push", "-q", url, "main", cwd=work, env=env)
    git.run("fetch", "-q", "origin", cwd=clone, env=env)
    assert git.out("rev-parse", "origin/main", cwd=clone) == head
    assert git.run("ls-remote", url, "refs/heads/main", env=env).stdout.split()[0] == head


def test_clone_over_ssh_from_a_replica_whose_leader_is_gone_is_refused(
    git: Git, ssh_replicas: SshReplicas, tmp_path: pathlib.Path
) -> None:
    """With no controller to elect another, the follower's leader stays the dead one: the
    read it relays fails with the reason, and nothing stale is served."""
    ssh_replicas.kill(ssh_replicas.leader)
    follower = ssh_replicas.ids[1]
    env = ssh_replicas.git_env(follower)

    attempts = iter(range(1000))

    def refused() -> str:
        target = tmp_path / f"clone-{next(attempts)}"
        result = git.run("clone", ssh_replicas.ssh_url(follower), str(target), env=env,
                         check=False)  # fmt: skip
        return result.stderr if result.returncode != 0 else ""

    stderr = waiting.until(
        "a follower without its leader to refuse an SSH clone", refused, timeout=10, interval=0.2
    )
    assert "gitquorum: the leader cannot be reached" in stderr, stderr


def test_clone_over_ssh_from_a_replica_not_configured_yet_waits_for_its_configuration(
    git: Git, ssh_replicas: SshReplicas, tmp_path: pathlib.Path
) -> None:
    """A new replica knows no leader until its controller configures it: an SSH read that
    reaches it then is held, not refused, and served once it knows where to send it."""
    work = tmp_path / "work"
    git.run("init", "-q", "-b", "main", str(work))
    head = git.commit(work, "a.txt", "1\n")
    env = ssh_replicas.git_env("r0")
    git.run("push", "-q", ssh_replicas.ssh_url("r0"), "main", cwd=work, env=env)
    ssh_replicas.wait_in_sync()
    ssh_replicas.kill("r2")
    ssh_replicas.start("r2")  # not configured yet
    outcome: list[subprocess.CompletedProcess[str]] = []
    url, env = ssh_replicas.ssh_url("r2"), ssh_replicas.git_env("r2")
    reader = threading.Thread(
        target=lambda: outcome.append(
            git.run("ls-remote", url, "refs/heads/main", env=env, check=False)
        )
    )
    reader.start()
    try:
        waiting.until(
            "the new replica to hold the SSH read",
            lambda: "ssh: holding git-upload-pack" in ssh_replicas.log("r2"),
            timeout=10,
            seen=lambda: ssh_replicas.log("r2")[-2000:],
        )
        ssh_replicas.configure("r2")
    finally:
        reader.join(timeout=30)
    assert outcome, "the held ls-remote did not finish within 30 s"
    assert outcome[0].returncode == 0, outcome[0].stderr
    assert outcome[0].stdout.split()[0] == head


def test_protected_ref_refused_over_ssh_through_a_follower(
    git: Git, auth_file: pathlib.Path, keys: Keys, tmp_path: pathlib.Path
) -> None:
    """The rules hold on both transports: a force push and a deletion of a protected branch
    over SSH, relayed by a follower, get git's report with the rule, and change nothing."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"protectedRefs": [{"pattern": "refs/heads/main"}]}))
    group = SshReplicas(tmp_path / "replicas", auth_file, keys, ("--policy-file", str(policy)))
    try:
        group.start_all()
        work = tmp_path / "work"
        git.run("init", "-q", "-b", "main", str(work))
        git.commit(work, "a.txt", "1\n")
        kept = git.commit(work, "a.txt", "2\n")
        follower = group.ids[1]
        url, env = group.ssh_url(follower), group.git_env(follower)
        git.run("push", "-q", url, "main", cwd=work, env=env)
        git.run("reset", "-q", "--hard", "HEAD~1", cwd=work)
        git.commit(work, "b.txt", "rewritten\n")
        forced = git.run("push", "--force", url, "main", cwd=work, env=env, check=False)
        assert forced.returncode != 0
        assert "(protected ref refs/heads/main: force push" in forced.stderr, forced.stderr
        deleted = git.run("push", url, ":main", cwd=work, env=env, check=False)
        assert "(protected ref refs/heads/main: deletion is not allowed)" in deleted.stderr
        group.wait_in_sync()
        for replica in group.ids:
            assert git.refs(group.repository(replica)) == {"refs/heads/main": kept}, replica
    finally:
        group.stop_all()
