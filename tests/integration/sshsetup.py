"""What the SSH integration tests share: client keys, an SSH server, replicas serving SSH.

The keys are made with ``ssh-keygen``; the server and the replicas are ``gitquorum serve``
and ``gitquorum replica`` processes, as in the other integration tests. A replica's inbound
replication traffic can be routed through :class:`PeerLinks` (the relay of ``gitquorum
local --links``), which a test cuts so that the replica cannot renew its read lease with
the leader while clients still reach it: a replica that is up and not readable.
"""

import asyncio
import dataclasses
import pathlib
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from gitquorum.local import links
from gitquorum.replication import invocation, membership
from tests import ports, waiting
from tests.integration import helpers, replicas

T = TypeVar("T")

USER = "git"
"""The user every SSH client logs in as."""


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

    def known_hosts(self, port: int, host: str = "127.0.0.1") -> pathlib.Path:
        path = self.base / f"known_hosts-{host}-{port}"
        kind, blob = public(self.host_key).split()[:2]
        path.write_text(f"[{host}]:{port} {kind} {blob}\n")
        return path

    def ssh(
        self, port: int, key: pathlib.Path, *options: str, host: str = "127.0.0.1"
    ) -> list[str]:
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
            f"UserKnownHostsFile={self.known_hosts(port, host)}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            *options,
        ]

    def git_env(
        self, port: int, key: pathlib.Path, *options: str, host: str = "127.0.0.1"
    ) -> dict[str, str]:
        return {"GIT_SSH_COMMAND": " ".join(self.ssh(port, key, *options, host=host))}


def keygen(path: pathlib.Path, kind: str, comment: str) -> pathlib.Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)], check=True
    )
    return path


def public(key: pathlib.Path) -> str:
    """The key's ``.pub`` line: type, base64, comment."""
    return (key.parent / f"{key.name}.pub").read_text().strip()


def fingerprint(key: pathlib.Path) -> str:
    """OpenSSH's SHA256 fingerprint of the key, as the server logs it."""
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key)],
        check=True,
        capture_output=True,
        text=True,
    )
    return listed.stdout.split()[1]


def make_keys(base: pathlib.Path) -> Keys:
    """A host key, a writer, a reader and an RSA writer in the keys file, and a stranger."""
    made = Keys(
        base=base,
        host_key=keygen(base / "host", "ed25519", "host"),
        keys_file=base / "keys",
        writer=keygen(base / "writer", "ed25519", "writer"),
        reader=keygen(base / "reader", "ecdsa", "reader"),
        stranger=keygen(base / "stranger", "ed25519", "stranger"),
        rsa_writer=keygen(base / "rsa", "rsa", "rsa-writer"),
    )
    made.keys_file.write_text(
        "# who may use git over SSH\n\n"
        f"write {public(made.writer)}\n"
        f"read {public(made.reader)}\n"
        f"write {public(made.rsa_writer)}\n"
    )
    return made


@dataclasses.dataclass
class SshServer:
    server: helpers.Server
    port: int


def start_server(
    tmp_path_factory: pytest.TempPathFactory, auth_file: pathlib.Path, keys: Keys
) -> Iterator[SshServer]:
    """``gitquorum serve`` with SSH on a free port, repositories created on push."""
    port = ports.free_port()
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


def url(port: int, path: str, host: str = "127.0.0.1") -> str:
    return f"ssh://{USER}@{host}:{port}/{path}"


class PeerLinks:
    """Cuttable relays for the replication traffic between one replica and the others, both
    ways, on an event loop of their own (a thread)."""

    def __init__(self, *, linked: str, peer_ports: dict[str, int]) -> None:
        self.linked = linked
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._links = links.Links()
        for other in peer_ports:
            if other == linked:
                continue
            for source, target in ((linked, other), (other, linked)):
                self._links.add(
                    source=source,
                    target=target,
                    target_host=links.LOOPBACK,
                    target_port=peer_ports[target],
                )
        self._call(self._links.start_all())

    def peer_url(self, source: str, target: str) -> str | None:
        """The URL ``source`` reaches ``target``'s replication port at, if through a link."""
        if self.linked not in (source, target) or source == target:
            return None
        return f"http://{self._links.link(source, target).address}"

    def cut(self) -> None:
        self._call(self._links.cut(self.linked))

    def heal(self) -> None:
        self._call(self._links.heal(self.linked))

    def close(self) -> None:
        self._call(self._links.close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)


class SshReplicas(replicas.Replicas):
    """Replicas that serve SSH too, each on its own loopback address and the same SSH port.

    A replica relays a session to the leader's SSH server at the leader's host and its own SSH
    port, as every pod of a repository listens on the same port. With ``linked``, the
    replication traffic between that replica and the others goes through :class:`PeerLinks`
    (its clients still reach it directly).
    """

    def __init__(
        self,
        base: pathlib.Path,
        auth_file: pathlib.Path,
        keys: Keys,
        extra_args: tuple[str, ...] = (),
        *,
        linked: str | None = None,
    ) -> None:
        super().__init__(base, auth_file, 3, extra_args)
        self.keys = keys
        self.ssh_port = ports.free_port()
        self.hosts = {replica: f"127.0.0.{index + 2}" for index, replica in enumerate(self.ids)}
        self.links = (
            None
            if linked is None
            else PeerLinks(linked=linked, peer_ports={r: p[1] for r, p in self.ports.items()})
        )

    def configuration(self, replica: str | None = None) -> membership.Configuration:
        """The configuration, as ``replica`` is given it: the links it reaches others by."""
        configuration = super().configuration()
        members = tuple(
            dataclasses.replace(
                member,
                url=member.url.replace("127.0.0.1", self.hosts[member.id]),
                peer_url=self._peer_url(replica, member),
            )
            for member in configuration.members
        )
        return dataclasses.replace(configuration, members=members)

    def _peer_url(self, source: str | None, member: membership.Member) -> str:
        if self.links is None or source is None:
            return member.peer_url
        return self.links.peer_url(source, member.id) or member.peer_url

    def configure(self, replica: str) -> dict[str, Any]:
        return self.call(
            replica, "PUT", "/admin/configuration", self.configuration(replica).to_json()
        )

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

    def stop_all(self) -> None:
        super().stop_all()
        if self.links is not None:
            self.links.close()
            self.links = None

    def ssh_url(self, replica: str) -> str:
        return url(self.ssh_port, "repository.git", self.hosts[replica])

    def git_env(
        self, replica: str, key: pathlib.Path | None = None, *options: str
    ) -> dict[str, str]:
        """GIT_SSH_COMMAND for this replica's host, with the writer's key unless told."""
        chosen = self.keys.writer if key is None else key
        return self.keys.git_env(self.ssh_port, chosen, *options, host=self.hosts[replica])

    def repository(self, replica: str) -> pathlib.Path:
        return self.data(replica) / "repositories" / "repository.git"
