"""git over SSH with the real OpenSSH client against `gitquorum serve`."""

import pathlib
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests import waiting
from tests.integration import helpers, sshsetup
from tests.integration.helpers import Git
from tests.integration.sshsetup import Keys, SshServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return sshsetup.make_keys(tmp_path_factory.mktemp("ssh"))


@pytest.fixture(scope="session")
def ssh_server(
    tmp_path_factory: pytest.TempPathFactory, auth_file: pathlib.Path, keys: Keys
) -> Iterator[SshServer]:
    yield from sshsetup.start_server(tmp_path_factory, auth_file, keys)


@pytest.fixture
def seeded(
    git: Git, ssh_server: SshServer, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> helpers.Seeded:
    """A fresh repository on the SSH server, named after the test."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:80] + ".git"
    return helpers.seed(git, ssh_server.server.root, name, tmp_path / "seed")


@pytest.mark.parametrize("protocol", [0, 2])
def test_clone_over_ssh_sees_the_repository(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, tmp_path: pathlib.Path,
    protocol: int,
) -> None:  # fmt: skip
    options = ("-o", "SetEnv=GIT_PROTOCOL=version=2") if protocol == 2 else ()
    env = keys.git_env(ssh_server.port, keys.reader, *options)
    clone = tmp_path / "clone"
    git.run("clone", "-q", sshsetup.url(ssh_server.port, seeded.name), str(clone), env=env,
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
    url = sshsetup.url(ssh_server.port, "/" + seeded.name)
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
    url = sshsetup.url(ssh_server.port, seeded.name)
    listed = git.run("ls-remote", url, "refs/heads/main", env=env).stdout.split()
    assert listed == [head, "refs/heads/main"]


def test_push_over_ssh_deletes_and_pushes_nothing(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded
) -> None:
    env = keys.git_env(ssh_server.port, keys.writer)
    url = sshsetup.url(ssh_server.port, seeded.name)
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
    git.run(
        "push",
        "-q",
        sshsetup.url(ssh_server.port, "team/new.git"),
        "main",
        cwd=seeded.work,
        env=env,
    )
    assert git.refs(ssh_server.server.root / "team" / "new.git")["refs/heads/main"] == seeded.head


def test_push_with_a_read_key_is_refused(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded
) -> None:
    env = keys.git_env(ssh_server.port, keys.reader)
    before = git.refs(seeded.path)
    git.commit(seeded.work, "refused.txt", "no\n")
    result = git.run("push", sshsetup.url(ssh_server.port, seeded.name), "main", cwd=seeded.work,
                     env=env, check=False)  # fmt: skip
    assert result.returncode != 0
    assert "the key reader may only read" in result.stderr
    assert git.refs(seeded.path) == before


def test_clone_with_an_unknown_key_is_refused(
    git: Git,
    keys: Keys,
    ssh_server: SshServer,
    seeded: helpers.Seeded,
    tmp_path: pathlib.Path,
) -> None:
    env = keys.git_env(ssh_server.port, keys.stranger)
    url = sshsetup.url(ssh_server.port, seeded.name)
    result = git.run("clone", url, str(tmp_path / "no"), env=env, check=False)
    assert result.returncode != 0
    assert "Permission denied (publickey)" in result.stderr


def test_login_with_another_user_name_is_refused(
    git: Git,
    keys: Keys,
    ssh_server: SshServer,
    seeded: helpers.Seeded,
    tmp_path: pathlib.Path,
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
    git: Git,
    keys: Keys,
    ssh_server: SshServer,
    seeded: helpers.Seeded,
    tmp_path: pathlib.Path,
) -> None:
    env = keys.git_env(ssh_server.port, keys.writer)
    for path in (f"../{seeded.name}", f"{seeded.name}/../../etc", "missing.git"):
        url = sshsetup.url(ssh_server.port, path)
        result = git.run("clone", url, str(tmp_path / "no"), env=env, check=False)
        assert result.returncode != 0, path
        assert "gitquorum:" in result.stderr, result.stderr


def test_keys_file_change_applies_without_restart(
    git: Git,
    keys: Keys,
    ssh_server: SshServer,
    seeded: helpers.Seeded,
    tmp_path: pathlib.Path,
) -> None:
    env = keys.git_env(ssh_server.port, keys.stranger)
    url = sshsetup.url(ssh_server.port, seeded.name)
    original = keys.keys_file.read_text()
    try:
        keys.keys_file.write_text(original + f"read {sshsetup.public(keys.stranger)}\n")
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
