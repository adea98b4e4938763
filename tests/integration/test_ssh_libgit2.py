"""git over SSH with a second client implementation: libgit2 (through pygit2, whose wheels
carry libssh2), so that the server is not only right for OpenSSH and git's own CLI.

libgit2 checks the server's host key against ``~/.ssh/known_hosts`` under the home directory
it is given (``pygit2.settings.homedir``) and hands its verdict to the certificate callback:
the tests write the key ``gitquorum serve`` was given there, the one a repository publishes,
and refuse any other.
"""

import pathlib
import re
from collections.abc import Iterator

import pygit2
import pytest

from tests.integration import helpers, sshsetup
from tests.integration.helpers import Git
from tests.integration.sshsetup import Keys, SshServer

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return sshsetup.make_keys(tmp_path_factory.mktemp("ssh"))


@pytest.fixture(scope="module")
def ssh_server(
    tmp_path_factory: pytest.TempPathFactory, auth_file: pathlib.Path, keys: Keys
) -> Iterator[SshServer]:
    yield from sshsetup.start_server(tmp_path_factory, auth_file, keys)


@pytest.fixture
def seeded(
    git: Git, ssh_server: SshServer, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> helpers.Seeded:
    name = re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)[:80] + ".git"
    return helpers.seed(git, ssh_server.server.root, name, tmp_path / "seed")


@pytest.fixture
def home(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """libgit2's home directory for the test: its ``.ssh/known_hosts`` is written by each."""
    before = pygit2.settings.homedir
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    pygit2.settings.homedir = str(path)
    try:
        yield path
    finally:
        pygit2.settings.homedir = before or ""


def _trust(home: pathlib.Path, port: int, host_key: pathlib.Path) -> None:
    """known_hosts naming ``host_key``'s public half for the server's address."""
    kind, blob = sshsetup.public(host_key).split()[:2]
    (home / ".ssh" / "known_hosts").write_text(f"[{HOST}]:{port} {kind} {blob}\n")


class Callbacks(pygit2.RemoteCallbacks):
    """A key pair for ``git``, and the host key accepted only if known_hosts lists it."""

    def __init__(self, key: pathlib.Path) -> None:
        super().__init__()
        self.key = key
        self.asked = 0
        self.hosts: list[tuple[bytes, bool]] = []
        self.updated: list[tuple[str, str | None]] = []

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: pygit2.enums.CredentialType
    ) -> pygit2.Keypair:
        self.asked += 1
        if self.asked > 1:
            # libgit2 asks again, for as long as the callback answers, only when the server
            # refused the key it was given.
            raise pygit2.GitError(f"the server refused the key {self.key.name}")
        assert username_from_url == sshsetup.USER
        public = self.key.parent / f"{self.key.name}.pub"
        return pygit2.Keypair(sshsetup.USER, str(public), str(self.key), "")

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        # ``valid``: libgit2 found the key the server showed in known_hosts for this host.
        self.hosts.append((host, valid))
        return valid and host == HOST.encode()

    def push_update_reference(self, refname: str, message: str | None) -> None:
        # A ref the server refused comes with its reason; an accepted one with None.
        self.updated.append((refname, message))


def test_libgit2_build_has_ssh() -> None:
    """pygit2's wheels build libgit2 with libssh2; one without it would make every test here
    fail on "unsupported URL protocol": this says why at once."""
    assert pygit2.features & pygit2.enums.Feature.SSH, pygit2.features


def test_libgit2_clone_over_ssh_with_a_read_key_sees_the_repository(
    keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, home: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    _trust(home, ssh_server.port, keys.host_key)
    callbacks = Callbacks(keys.reader)
    url = sshsetup.url(ssh_server.port, seeded.name)
    clone = pygit2.clone_repository(url, str(tmp_path / "clone"), callbacks=callbacks)
    assert str(clone.head.target) == seeded.head
    assert callbacks.hosts == [(HOST.encode(), True)]
    assert "transport=ssh" in ssh_server.server.log_text()


def _commit(repository: pygit2.Repository, name: str, content: str) -> str:
    """A commit on top of HEAD changing one file, made by libgit2."""
    blob = repository.create_blob(content.encode())
    builder = repository.TreeBuilder(repository.head.peel(pygit2.Tree))
    builder.insert(name, blob, pygit2.enums.FileMode.BLOB)
    signature = pygit2.Signature("libgit2", "libgit2@example.com")
    parent = repository.head.target
    oid = repository.create_commit(
        "HEAD", signature, signature, f"change {name}", builder.write(), [parent]
    )
    return str(oid)


def _clone(url: str, path: pathlib.Path, key: pathlib.Path) -> tuple[pygit2.Repository, Callbacks]:
    callbacks = Callbacks(key)
    return pygit2.clone_repository(url, str(path), callbacks=callbacks), callbacks


def test_libgit2_push_over_ssh_with_a_write_key_lands(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, home: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    _trust(home, ssh_server.port, keys.host_key)
    url = sshsetup.url(ssh_server.port, seeded.name)
    clone, _ = _clone(url, tmp_path / "clone", keys.writer)
    head = _commit(clone, "libgit2.txt", "pushed by libgit2\n")
    callbacks = Callbacks(keys.writer)
    clone.remotes["origin"].push(["refs/heads/main:refs/heads/main"], callbacks=callbacks)
    assert callbacks.updated == [("refs/heads/main", None)]
    assert git.refs(seeded.path)["refs/heads/main"] == head
    git.run("fsck", "--strict", cwd=seeded.path)


def test_libgit2_push_with_a_read_key_is_refused(
    git: Git, keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, home: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    _trust(home, ssh_server.port, keys.host_key)
    url = sshsetup.url(ssh_server.port, seeded.name)
    clone, _ = _clone(url, tmp_path / "clone", keys.reader)
    _commit(clone, "refused.txt", "no\n")
    before = git.refs(seeded.path)
    with pytest.raises(pygit2.GitError, match="the key reader may only read"):
        clone.remotes["origin"].push(["refs/heads/main"], callbacks=Callbacks(keys.reader))
    assert git.refs(seeded.path) == before


def test_libgit2_clone_with_an_unknown_key_is_refused(
    keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, home: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    _trust(home, ssh_server.port, keys.host_key)
    url = sshsetup.url(ssh_server.port, seeded.name)
    callbacks = Callbacks(keys.stranger)
    with pytest.raises(pygit2.GitError) as refused:
        pygit2.clone_repository(url, str(tmp_path / "no"), callbacks=callbacks)
    assert str(refused.value) == "the server refused the key stranger"
    fingerprint = sshsetup.fingerprint(keys.stranger)
    assert f"ssh: key {fingerprint} refused: not in the keys file" in ssh_server.server.log_text()
    assert not (tmp_path / "no" / "HEAD").exists()


def test_libgit2_clone_from_a_host_with_another_key_is_refused(
    keys: Keys, ssh_server: SshServer, seeded: helpers.Seeded, home: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    """known_hosts names another key for the server's address (what a client sees when a
    server impersonates the repository's): libgit2 says the key is not valid, the callback
    refuses it, and no key of the client is offered."""
    _trust(home, ssh_server.port, keys.stranger)
    url = sshsetup.url(ssh_server.port, seeded.name)
    callbacks = Callbacks(keys.reader)
    with pytest.raises(pygit2.GitError) as refused:
        pygit2.clone_repository(url, str(tmp_path / "no"), callbacks=callbacks)
    assert callbacks.hosts == [(HOST.encode(), False)]
    assert callbacks.asked == 0
    assert str(refused.value) == "invalid or unknown remote ssh hostkey"
