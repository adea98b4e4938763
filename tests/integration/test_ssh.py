"""git over SSH with the real OpenSSH client: `gitquorum serve` and a set of replicas."""

import dataclasses
import json
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from gitquorum.replication import invocation
from tests import waiting
from tests.integration import helpers, replicas
from tests.integration.helpers import Git, Server

pytestmark = pytest.mark.integration


@dataclasses.dataclass
class Keys:
    """Client keys, the keys file naming them, and the host key with its known_hosts line."""

    base: pathlib.Path
    host_key: pathlib.Path
    keys_file: pathlib.Path
    writer: pathlib.Path
    reader: pathlib.Path
    stranger: pathlib.Path
    rsa_writer: pathlib.Path

    def known_hosts(self, port: int) -> pathlib.Path:
        path = self.base / f"known_hosts-{port}"
        public = (self.host_key.parent / f"{self.host_key.name}.pub").read_text().split()
        path.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
        return path

    def ssh(self, port: int, key: pathlib.Path, *options: str) -> list[str]:
        return [
            "ssh",
            "-p",
            str(port),
            "-i",
            str(key),
            "-F",
            "/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts(port)}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            *options,
        ]

    def git_env(self, port: int, key: pathlib.Path, *options: str) -> dict[str, str]:
        return {"GIT_SSH_COMMAND": " ".join(self.ssh(port, key, *options))}


def _keygen(path: pathlib.Path, kind: str, comment: str) -> pathlib.Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)], check=True
    )
    return path


def _public(key: pathlib.Path) -> str:
    return (key.parent / f"{key.name}.pub").read_text().strip()


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("ssh")
    made = Keys(
        base=base,
        host_key=_keygen(base / "host", "ed25519", "host"),
        keys_file=base / "keys",
        writer=_keygen(base / "writer", "ed25519", "writer"),
        reader=_keygen(base / "reader", "ecdsa", "reader"),
        stranger=_keygen(base / "stranger", "ed25519", "stranger"),
        rsa_writer=_keygen(base / "rsa", "rsa", "rsa-writer"),
    )
    made.keys_file.write_text(
        "# who may use git over SSH\n\n"
        f"write {_public(made.writer)}\n"
        f"read {_public(made.reader)}\n"
        f"write {_public(made.rsa_writer)}\n"
    )
    return made


@dataclasses.dataclass
class SshServer:
    server: Server
    port: int


@pytest.fixture(scope="session")
def ssh_server(
    tmp_path_factory: pytest.TempPathFactory, auth_file: pathlib.Path, keys: Keys
) -> Iterator[SshServer]:
    port = replicas.free_port()
    for server in helpers.start_server(
        tmp_path_factory,
        "--auth-file",
        str(auth_file),
        "--create-on-push",
        "--ssh-port",
        str(port),
        "--ssh-host-key",
        str(keys.host_key),
        "--ssh-keys-file",
        str(keys.keys_file),
    ):
        yield SshServer(server, port)


@pytest.fixture
def seeded(
    git: Git, ssh_server: SshServer, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> helpers.Seeded:
    """A fresh repository on the SSH server, named after the test."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:80] + ".git"
    return helpers.seed(git, ssh_server.server.root, name, tmp_path / "seed")


def _url(port: int, path: str) -> str:
    return f"ssh://git@127.0.0.1:{port}/{path}"


@pytest.mark.parametrize("protocol", [0, 2])
def test_clone_over_ssh_sees_the_repository(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, tmp_path: pathlib.Path,
    protocol: int,
) -> None:  # fmt: skip
    options = ("-o", "SetEnv=GIT_PROTOCOL=version=2") if protocol == 2 else ()
    env = keys.git_env(ssh_server.port, keys.reader, *options)
    clone = tmp_path / "clone"
    git.run("clone", "-q", _url(ssh_server.port, seeded.name), str(clone), env=env,
            protocol=protocol)  # fmt: skip
    assert git.out("rev-parse", "HEAD", cwd=clone) == seeded.head
    assert "transport=ssh" in ssh_server.server.log_text()


@pytest.mark.parametrize("protocol", [0, 2])
def test_push_over_ssh_is_seen_over_http(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, tmp_path: pathlib.Path,
    protocol: int,
) -> None:  # fmt: skip
    options = ("-o", "SetEnv=GIT_PROTOCOL=version=2") if protocol == 2 else ()
    env = keys.git_env(ssh_server.port, keys.writer, *options)
    head = git.commit(seeded.work, "ssh.txt", "over ssh\n")
    url = _url(ssh_server.port, "/" + seeded.name)
    git.run("push", "-q", url, "main", cwd=seeded.work, env=env, protocol=protocol)
    assert git.refs(seeded.path)["refs/heads/main"] == head
    clone = tmp_path / "http-clone"
    git.run("clone", "-q", ssh_server.server.url(seeded.name, helpers.BOB), str(clone))
    assert git.out("rev-parse", "HEAD", cwd=clone) == head


def test_push_over_http_is_seen_over_ssh(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded
) -> None:
    head = git.commit(seeded.work, "http.txt", "over http\n")
    git.run("push", "-q", ssh_server.server.url(seeded.name, helpers.ALICE), "main",
            cwd=seeded.work)  # fmt: skip
    env = keys.git_env(ssh_server.port, keys.rsa_writer)
    url = _url(ssh_server.port, seeded.name)
    listed = git.run("ls-remote", url, "refs/heads/main", env=env).stdout.split()
    assert listed == [head, "refs/heads/main"]


def test_push_over_ssh_deletes_and_pushes_nothing(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded
) -> None:
    env = keys.git_env(ssh_server.port, keys.writer)
    url = _url(ssh_server.port, seeded.name)
    git.run("push", "-q", url, "main:refs/heads/doomed", cwd=seeded.work, env=env)
    assert "refs/heads/doomed" in git.refs(seeded.path)
    git.run("push", "-q", url, ":refs/heads/doomed", cwd=seeded.work, env=env)
    assert "refs/heads/doomed" not in git.refs(seeded.path)
    result = git.run("push", url, "main", cwd=seeded.work, env=env)
    assert "Everything up-to-date" in result.stderr


def test_push_over_ssh_creates_a_repository(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded
) -> None:
    env = keys.git_env(ssh_server.port, keys.writer)
    git.run("push", "-q", _url(ssh_server.port, "team/new.git"), "main", cwd=seeded.work, env=env)
    assert git.refs(ssh_server.server.root / "team" / "new.git")["refs/heads/main"] == seeded.head


def test_push_with_a_read_key_is_refused(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded
) -> None:
    env = keys.git_env(ssh_server.port, keys.reader)
    before = git.refs(seeded.path)
    git.commit(seeded.work, "refused.txt", "no\n")
    result = git.run("push", _url(ssh_server.port, seeded.name), "main", cwd=seeded.work,
                     env=env, check=False)  # fmt: skip
    assert result.returncode != 0
    assert "the key reader may only read" in result.stderr
    assert git.refs(seeded.path) == before


def test_clone_with_an_unknown_key_is_refused(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, tmp_path: pathlib.Path
) -> None:
    env = keys.git_env(ssh_server.port, keys.stranger)
    url = _url(ssh_server.port, seeded.name)
    result = git.run("clone", url, str(tmp_path / "no"), env=env, check=False)
    assert result.returncode != 0
    assert "Permission denied (publickey)" in result.stderr


def test_login_with_another_user_name_is_refused(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, tmp_path: pathlib.Path
) -> None:
    env = keys.git_env(ssh_server.port, keys.writer)
    url = f"ssh://root@127.0.0.1:{ssh_server.port}/project.git"
    result = git.run("clone", url, str(tmp_path / "no"), env=env, check=False)
    assert result.returncode != 0
    assert "Permission denied (publickey)" in result.stderr


@pytest.mark.parametrize(
    "command",
    ["ls /", "git-upload-archive 'x.git'", "git-upload-pack x.git", ""],
)
def test_command_other_than_git_is_refused(
    keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, command: str
) -> None:
    argv = [*keys.ssh(ssh_server.port, keys.writer), "git@127.0.0.1"]
    argv += [command] if command else ["-T"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, input="")
    assert result.returncode == 1
    assert "is not served here" in result.stderr or "no shell" in result.stderr


def test_path_outside_the_root_is_refused(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, tmp_path: pathlib.Path
) -> None:
    env = keys.git_env(ssh_server.port, keys.writer)
    for path in (f"../{seeded.name}", f"{seeded.name}/../../etc", "missing.git"):
        result = git.run("clone", _url(ssh_server.port, path), str(tmp_path / "no"), env=env,
                         check=False)  # fmt: skip
        assert result.returncode != 0, path
        assert "gitquorum:" in result.stderr, result.stderr


def test_keys_file_change_applies_without_restart(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, tmp_path: pathlib.Path
) -> None:
    env = keys.git_env(ssh_server.port, keys.stranger)
    url = _url(ssh_server.port, seeded.name)
    original = keys.keys_file.read_text()
    try:
        keys.keys_file.write_text(original + f"read {_public(keys.stranger)}\n")
        waiting.until(
            "the stranger's key to be let in after the keys file changed",
            lambda: git.run("ls-remote", url, env=env, check=False).returncode == 0,
            timeout=10,
            interval=0.2,
        )
        keys.keys_file.write_text(original + "read not-a-key\n")  # kept: the last good one

        def bad_file_logged_and_key_kept() -> bool:
            assert git.run("ls-remote", url, env=env, check=False).returncode == 0
            return "not reloaded" in ssh_server.server.log_text()

        helpers.wait_for(
            bad_file_logged_and_key_kept,
            deadline=10,
            what="the bad keys file to be logged while the stranger's key still works",
            seen=lambda: ssh_server.server.log_text()[-2000:],
        )
    finally:
        keys.keys_file.write_text(original)


# -- a set of replicas ------------------------------------------------------------------------


class SshReplicas(replicas.Replicas):
    """Replicas that serve SSH too, each on its own loopback address and the same SSH port.

    A follower relays a push to the leader's SSH server at the leader's host and its own SSH
    port, as every pod of a repository listens on the same port.
    """

    def __init__(
        self,
        base: pathlib.Path,
        auth_file: pathlib.Path,
        keys: Keys,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(base, auth_file, 3, extra_args)
        self.keys = keys
        self.ssh_port = replicas.free_port()
        self.hosts = {replica: f"127.0.0.{index + 2}" for index, replica in enumerate(self.ids)}

    def configuration(self) -> replicas.membership.Configuration:
        configuration = super().configuration()
        members = tuple(
            dataclasses.replace(
                member,
                url=member.url.replace("127.0.0.1", self.hosts[member.id]),
            )
            for member in configuration.members
        )
        return dataclasses.replace(configuration, members=members)

    def start(self, replica: str) -> None:
        self.data(replica).mkdir(parents=True, exist_ok=True)
        port, peer_port = self.ports[replica]
        command = invocation.ReplicaCommand(
            replica=replica,
            data=str(self.data(replica)),
            listen=f"{self.hosts[replica]}:{port}",
            peer_listen=f"127.0.0.1:{peer_port}",
            peer_token_file=str(self.token_file),
            auth_file=str(self.auth_file),
            anonymous_read=True,
            ssh_port=self.ssh_port,
            ssh_host_key=str(self.keys.host_key),
            ssh_keys_file=str(self.keys.keys_file),
            extra=("--prepare-timeout", "2", "--log-level", "DEBUG", *self.extra_args),
        ).argv(program=(sys.executable, "-m", "gitquorum"))
        with (self.data(replica) / "replica.log").open("ab") as output:
            self.processes[replica] = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT
            )
        waiting.until(
            f"replica {replica} to answer on its replication port",
            lambda: self.status(replica),
            timeout=replicas.STARTUP_DEADLINE,
            interval=0.05,
            seen=lambda: self.log(replica)[-2000:],
        )

    def ssh_url(self, replica: str) -> str:
        return f"ssh://git@{self.hosts[replica]}:{self.ssh_port}/repository.git"

    def git_env(self, replica: str) -> dict[str, str]:
        known = self.base / f"known_hosts-{replica}"
        public = _public(self.keys.host_key).split()
        known.write_text(f"[{self.hosts[replica]}]:{self.ssh_port} {public[0]} {public[1]}\n")
        command = self.keys.ssh(self.ssh_port, self.keys.writer)
        command[command.index(f"UserKnownHostsFile={self.keys.known_hosts(self.ssh_port)}")] = (
            f"UserKnownHostsFile={known}"
        )
        return {"GIT_SSH_COMMAND": " ".join(command)}


@pytest.fixture
def ssh_replicas(
    tmp_path: pathlib.Path, auth_file: pathlib.Path, keys: Keys
) -> Iterator[SshReplicas]:
    group = SshReplicas(tmp_path / "replicas", auth_file, keys)
    try:
        group.start_all()
        yield group
    finally:
        group.stop_all()


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
            git.refs(ssh_replicas.data(r) / "repositories" / "repository.git").get(
                "refs/heads/main"
            )
            == head
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


def test_clone_over_ssh_from_a_replica_out_of_sync_is_refused(
    git: Git, ssh_replicas: SshReplicas, tmp_path: pathlib.Path
) -> None:
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
    assert "this replica is not in sync; retry" in stderr


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
            refs = git.refs(group.data(replica) / "repositories" / "repository.git")
            assert refs == {"refs/heads/main": kept}, replica
    finally:
        group.stop_all()
