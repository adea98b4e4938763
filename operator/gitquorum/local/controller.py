"""``gitquorum local``: a replicated repository as processes on loopback, with a controller.

It stands in for the Kubernetes operator in tests and demos and decides with the same
functions (``replication.decisions``). It starts N replicas (``gitquorum replica``), each
with its own data directory under ``DIR/replicas/<id>``, makes the first one leader in term
1, and then watches, every ``tick``:

- a replica whose process ended is restarted after ``restart_delay`` (same data: it catches
  up from the leader by itself), and told the current configuration once it answers;
- when the leader's process ended, the leader did not answer for ``leader_timeout``, or it
  answers but does not lead the controller's term (it reports a newer term, at once, or
  another role for ``leader_timeout``: a peer's message deposed it), the controller asks
  every replica for its state, chooses the next leader with ``decisions.choose_leader`` (a
  majority must answer) and gives every replica the new term, above every term reported;
- a replica that reports an older term than the current one is told the configuration again
  (a restarted replica, or one cut off while the term changed).

``DIR/cluster.json`` says, after every change, what a client needs: each replica's URLs, pid,
role and state, the leader, the term, the push credentials. With ``links`` every path between
replicas and from outside goes through a relay (``links``) so that a replica can be cut off:
creating the file ``DIR/cut/<id>`` cuts it, removing it heals it.
"""

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import random
import secrets
import socket
import subprocess
import sys
import time
from typing import Any

from gitquorum.local import links
from gitquorum.replication import decisions, invocation, membership, peerclient
from gitquorum.server import auth, passwords

log = logging.getLogger(__name__)

USER = "gitquorum"
REPLICA_PORTS = (20000, 32000)
LOOPBACK = "127.0.0.1"
LEADER_ROLE = "Leader"


@dataclasses.dataclass(frozen=True)
class Options:
    """What ``gitquorum local`` was asked for."""

    replicas: int
    directory: pathlib.Path
    name: str = "repository"
    links: bool = False
    """Put relays on every path so that replicas can be cut off (fault tests)."""
    tick: float = 0.2
    """Seconds between two looks at the replicas."""
    leader_timeout: float = 1.5
    """Seconds without an answer from the leader before another one is chosen."""
    restart_delay: float = 0.5
    """Seconds before a replica whose process ended is started again."""
    replica_arguments: tuple[str, ...] = ()
    """Extra arguments for every ``gitquorum replica`` (timings, log level)."""


@dataclasses.dataclass
class Process:
    """One replica as the controller runs it."""

    id: str
    port: int
    peer_port: int
    data: pathlib.Path
    process: subprocess.Popen[bytes] | None = None
    stopped_at: float = 0.0
    last_answer: float = 0.0
    status: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Controller:
    """Runs the replicas and keeps a leader among them."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.directory = options.directory.resolve()
        self.token = secrets.token_hex(24)
        self.password = secrets.token_hex(16)
        self.replicas = {
            f"r{index}": Process(
                id=f"r{index}",
                port=_free_port(),
                peer_port=_free_port(),
                data=self.directory / "replicas" / f"r{index}",
            )
            for index in range(options.replicas)
        }
        self.client_links = links.Links()
        self.peer_links = links.Links()
        self.term = 0
        self.leader = "r0"
        self.stopped: set[str] = set()
        self.reason = ""
        self._not_leading_since: float | None = None
        """When the leader, answering, first reported that it does not lead ``term``."""
        self._peers = peerclient.Peers(token=self.token, timeout=1.0)

    # -- set-up ---------------------------------------------------------------------------------

    def _write_secrets(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        token_file = self.directory / "token"
        token_file.write_text(self.token + "\n")
        token_file.chmod(0o600)
        hashed = passwords.hash_token(self.password.encode())
        users = auth.render(USER, hashed, permission=auth.Permission.WRITE)
        (self.directory / "users").write_text(users + "\n")
        (self.directory / "cut").mkdir(exist_ok=True)

    async def _make_links(self) -> None:
        if not self.options.links:
            return
        sources: list[str | None] = [None, *self.replicas]
        for source in sources:
            for target, replica in self.replicas.items():
                if source == target:
                    continue
                self.client_links.add(
                    source=source, target=target, target_host=LOOPBACK, target_port=replica.port
                )
                self.peer_links.add(
                    source=source,
                    target=target,
                    target_host=LOOPBACK,
                    target_port=replica.peer_port,
                )
        await self.client_links.start_all()
        await self.peer_links.start_all()

    def _urls(self, source: str | None, target: str) -> tuple[str, str]:
        """How ``source`` (None: outside) reaches ``target``: git URL and replication URL."""
        replica = self.replicas[target]
        if not self.options.links or source == target:
            return f"http://{LOOPBACK}:{replica.port}", f"http://{LOOPBACK}:{replica.peer_port}"
        client = self.client_links.link(source, target).address
        peer = self.peer_links.link(source, target).address
        return f"http://{client}", f"http://{peer}"

    def configuration_for(self, replica: str) -> membership.Configuration:
        members = tuple(
            membership.Member(target, *self._urls(replica, target)) for target in self.replicas
        )
        return membership.Configuration(
            term=self.term, leader=self.leader, members=members, stopped=frozenset(self.stopped)
        )

    # -- processes ------------------------------------------------------------------------------

    def _start(self, replica: Process) -> None:
        replica.data.mkdir(parents=True, exist_ok=True)
        command = invocation.ReplicaCommand(
            replica=replica.id,
            data=str(replica.data),
            name=self.options.name,
            listen=f"{LOOPBACK}:{replica.port}",
            peer_listen=f"{LOOPBACK}:{replica.peer_port}",
            peer_token_file=str(self.directory / "token"),
            auth_file=str(self.directory / "users"),
            extra=self.options.replica_arguments,
        ).argv(program=(sys.executable, "-m", "gitquorum"))
        with (replica.data / "replica.log").open("ab") as output:
            replica.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.stopped.discard(replica.id)
        log.info("started replica %s (pid %s)", replica.id, replica.process.pid)

    async def run(self, stop: asyncio.Event) -> None:
        self._write_secrets()
        await self._make_links()
        for replica in self.replicas.values():
            self._start(replica)
        self.term = 1
        self.reason = "first leader"
        try:
            while not stop.is_set():
                await self._tick()
                self._write_cluster()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.options.tick)
        finally:
            await self._shutdown()

    async def _tick(self) -> None:
        await self._apply_cuts()
        now = time.monotonic()
        for replica in self.replicas.values():
            if replica.process is not None and not replica.alive and replica.stopped_at == 0.0:
                replica.stopped_at = now
                replica.status = {}
                self.stopped.add(replica.id)
                log.warning("replica %s stopped (exit %s)", replica.id, replica.process.returncode)
            if replica.stopped_at and now - replica.stopped_at >= self.options.restart_delay:
                replica.stopped_at = 0.0
                self._start(replica)
        await asyncio.gather(*(self._look(replica) for replica in self.replicas.values()))
        lost = self._leader_lost(now)
        if lost is not None:
            await self._elect(lost)
        await asyncio.gather(
            *(self._inform(replica) for replica in self.replicas.values() if replica.alive)
        )

    async def _look(self, replica: Process) -> None:
        if not replica.alive:
            return
        _, peer_url = self._urls(None, replica.id)
        try:
            replica.status = await self._peers.call(peer_url, "/admin/status", timeout=0.5)
            replica.last_answer = time.monotonic()
        except peerclient.PeerError:
            replica.status = {}

    def _leader_lost(self, now: float) -> str | None:
        """Why the leader must be replaced, or None while it leads (or may yet)."""
        leader = self.replicas[self.leader]
        if not leader.alive and leader.stopped_at:
            return "its process ended"
        if (
            leader.alive
            and leader.last_answer
            and (now - leader.last_answer > self.options.leader_timeout)
        ):
            return f"silent for {now - leader.last_answer:.1f} s"
        return self._not_leading(leader.status, now)

    def _not_leading(self, status: dict[str, Any], now: float) -> str | None:
        """Why a leader that answers does not lead the controller's term, or None.

        A term above the controller's means a newer term deposed it: it will not lead this
        one again (the configuration would be refused as outdated), so that is reason enough
        at once. Another role is tolerated for ``leader_timeout``: a leader being told the
        configuration reports Follower until it has taken it.
        """
        if not status:
            return None
        term, role = status.get("term"), status.get("role")
        if isinstance(term, int) and term > self.term:
            return f"it reports term {term}, above the controller's {self.term}"
        if role == LEADER_ROLE and term == self.term:
            self._not_leading_since = None
            return None
        if self._not_leading_since is None:
            self._not_leading_since = now
        if now - self._not_leading_since <= self.options.leader_timeout:
            return None
        return f"it reports role {role} in term {term} instead of leading term {self.term}"

    async def _elect(self, why: str) -> None:
        # Every replica that answered counts, the deposed leader too: its term must be
        # exceeded, and it may well hold the newest state.
        reports = [
            decisions.Report(
                replica=replica.id,
                term=int(replica.status["term"]),
                position=decisions.Position(*replica.status["position"]),
                eligible=bool(replica.status["eligible"]),
                applied=replica.status["position"][1] == replica.status["generation"],
            )
            for replica in self.replicas.values()
            if replica.status
        ]
        election = decisions.choose_leader(
            reports, voters=frozenset(self.replicas), current_term=self.term
        )
        if election.leader is None:
            if self.reason != election.reason:
                log.warning(
                    "leader %s lost (%s); no leader can be chosen: %s",
                    self.leader,
                    why,
                    election.reason,
                )
            self.reason = election.reason
            return
        log.warning(
            "leader %s lost (%s); term %s: %s leads (%s)",
            self.leader,
            why,
            election.term,
            election.leader,
            election.reason,
        )
        self.term, self.leader, self.reason = election.term, election.leader, election.reason
        self.replicas[self.leader].last_answer = time.monotonic()
        self._not_leading_since = None

    async def _inform(self, replica: Process) -> None:
        status = replica.status
        if (
            status
            and status.get("configuredTerm") == self.term
            and status.get("leader") == self.leader
        ):
            return
        if not status and replica.id != self.leader and replica.last_answer:
            return  # not answering: told again once it answers
        _, peer_url = self._urls(None, replica.id)
        configuration = self.configuration_for(replica.id).to_json()
        try:
            replica.status = await self._peers.call(
                peer_url, "/admin/configuration", configuration, method="PUT", timeout=1.0
            )
        except peerclient.PeerError as error:
            log.debug("replica %s not configured yet: %s", replica.id, error)

    async def _apply_cuts(self) -> None:
        if not self.options.links:
            return
        wanted = {path.name for path in (self.directory / "cut").iterdir()} & set(self.replicas)
        for group in (self.client_links, self.peer_links):
            for replica in wanted - group.cut_replicas():
                log.warning("cutting replica %s off", replica)
                await group.cut(replica)
            for replica in group.cut_replicas() - wanted:
                log.warning("healing replica %s", replica)
                await group.heal(replica)

    # -- reporting ------------------------------------------------------------------------------

    def _write_cluster(self) -> None:
        replicas = []
        for replica in self.replicas.values():
            url, peer_url = self._urls(None, replica.id)
            replicas.append(
                {
                    "id": replica.id,
                    "url": f"{url}/{self.options.name}.git",
                    "peer_url": peer_url,
                    "pid": replica.process.pid if replica.alive and replica.process else None,
                    "role": replica.status.get("role"),
                    "state": replica.status.get("state"),
                    "generation": replica.status.get("generation"),
                    "checksum": replica.status.get("checksum"),
                    "readable": replica.status.get("readable"),
                    "log": str(replica.data / "replica.log"),
                }
            )
        leader_url = next(r["url"] for r in replicas if r["id"] == self.leader)
        cluster = {
            "name": self.options.name,
            "term": self.term,
            "leader": self.leader,
            "reason": self.reason,
            "url": leader_url,
            "replicas": replicas,
            "credentials": {"username": USER, "password": self.password},
            "token_file": str(self.directory / "token"),
            "cut_directory": str(self.directory / "cut"),
            "controller_pid": os.getpid(),
        }
        temporary = self.directory / "cluster.json.tmp"
        temporary.write_text(json.dumps(cluster, indent=2) + "\n")
        os.replace(temporary, self.directory / "cluster.json")

    async def _shutdown(self) -> None:
        for replica in self.replicas.values():
            if replica.alive and replica.process is not None:
                replica.process.terminate()
        for replica in self.replicas.values():
            if replica.process is not None:
                try:
                    await asyncio.to_thread(replica.process.wait, 10)
                except subprocess.TimeoutExpired:
                    replica.process.kill()
                    await asyncio.to_thread(replica.process.wait)
        await self.client_links.close_all()
        await self.peer_links.close_all()
        await self._peers.close()


def _free_port() -> int:
    """A free port below the kernel's ephemeral range, where relays and clients take theirs.

    Replicas bind their ports after the controller chose them, and again after every
    restart: a port the kernel could hand to any outgoing connection would be lost to them.
    """
    for _ in range(1000):
        port = random.randrange(*REPLICA_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise OSError("no free port for a replica")
