"""The SSH transport: git over SSH, on the same repositories, limits and write path as HTTP.

asyncssh does SSH; this module does what a git server does after it. A client logs in as
``git`` with a public key from the keys file (``sshkeys``: ``read`` or ``write``), nothing
else: no password, no keyboard-interactive, no shell, no subsystem, no forwarding of ports,
agents or X11. Its one exec request names the service and the repository as git's SSH
transport sends them, ``git-upload-pack '<path>'`` or ``git-receive-pack '<path>'``; the path
is resolved as HTTP resolves its URL (``repositories``, confined to the root). A
``GIT_PROTOCOL`` environment request is validated like the ``Git-Protocol`` header.

A fetch is ``git upload-pack`` on the session itself (SSH is full duplex: no
``--stateless-rpc``), run through the :class:`spawning.GitRunner` like any other git. A push
is bridged to the stateless form the write path takes, so that it is replicated exactly as
an HTTP push is: the server sends the receive-pack advertisement (that of
``--stateless-rpc --advertise-refs``, without the ``# service=`` line HTTP adds); the
client's commands and pack, until it closes its side, are then exactly a stateless-rpc
request body, handed to ``services.receive_pack``, whose answer (report-status, side-band)
goes back on the session. A client with nothing to push sends a flush alone and is done.

On a replica (:class:`Routing`), a session the replica cannot serve itself is relayed, as
HTTP forwards a request (``replication.forwarding``): a push that reaches a follower, and a
fetch that reaches a replica without a valid read lease (behind, rebuilding, cut off from
the leader, damaged). The whole session, byte for byte from its start, goes to the leader's
SSH server, which holds the repository's host key too: the replica logs in there with that
key, as a peer, and names the client's key in an environment variable that the leader
believes from a peer only. The leader then serves it like a session made to it. While the
leader changes and none is known yet, the session is held, up to :attr:`Routing.hold`
seconds, until one is; a relayed session carries the number of replicas it passed through
and is relayed at most ``MAX_HOPS`` times.
"""

import asyncio
import contextlib
import dataclasses
import logging
import pathlib
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncssh
import asyncssh.channel

from gitquorum import errors
from gitquorum.protocol import pktline, smarthttp
from gitquorum.server import (
    auth,
    bodies,
    clients,
    metrics,
    repositories,
    services,
    settings,
    spawning,
    sshkeys,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("gitquorum.access")

USER = "git"
"""The one user name SSH clients log in as, as on every git hosting service."""
FORWARDED_FOR = "GITQUORUM_FORWARDED_FOR"
"""Set by a replica relaying a session: the label of the client's key (believed from a peer
only)."""
FORWARDED_HOPS = "GITQUORUM_FORWARDED_HOPS"
"""How many replicas a relayed session passed through, so that it cannot go round in circles."""
MAX_HOPS = 3
"""A client's replica, a deposed leader, the new leader: the longest path a switchover makes."""
HOLD_POLL = 0.02
READ_SIZE = spawning.READ_SIZE
SEND_AHEAD = 512 * 1024
"""Bytes of a fetch sent ahead of what the client took, per millisecond of round trip."""
PACE_POLL = 0.001
"""Seconds between looks at the client's window while a fetch is paced."""

_SEND_WINDOW = "_send_window"  # asyncssh's SSHChannel attribute: the client's window left
# Linux's struct tcp_info: eight one-byte fields, then 32-bit ones; tcpi_rtt (smoothed, in
# microseconds) is the sixteenth of those.
_TCP_INFO_RTT = struct.Struct("=68xI")
_TCP_INFO_SIZE = 104

# git sends one short command line; a longer one is not git's and is refused unread.
MAX_COMMAND_LENGTH = 4096
# The label a peer forwards ends up in logs and in git's REMOTE_USER: kept short and plain.
MAX_LABEL_LENGTH = 128

_COMMAND = re.compile(r"git[- ](upload-pack|receive-pack) '([^'\\!]*)'")
_SERVICES = {
    "upload-pack": smarthttp.Service.UPLOAD_PACK,
    "receive-pack": smarthttp.Service.RECEIVE_PACK,
}


class Refused(errors.GitquorumError):
    """A session that is answered with a message on stderr and exit status 1."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who logged in: a key of the keys file, or a peer replica relaying a client's push."""

    label: str
    fingerprint: str
    permission: auth.Permission
    peer: bool = False


@dataclasses.dataclass(frozen=True)
class Routing:
    """What a replica's SSH server asks its replica; ``gitquorum serve`` has none."""

    readable: Callable[[], bool]
    """Whether this replica may serve a read now (its read lease)."""
    writable: Callable[[], bool]
    """Whether this replica leads and takes writes now."""
    in_transition: Callable[[], bool]
    """Whether the leader is changing, so that a session should wait a little, not fail."""
    leader_host: Callable[[], str | None]
    """The host of the leader when it is another replica, else None."""
    admitted: Callable[[], contextlib.AbstractContextManager[None]]
    """Counts a push served here, so that a hand-off waits for it."""
    hold: float
    """Seconds a session waits for a leader while the leader changes."""


@dataclasses.dataclass
class Session:
    """What one SSH session did, for its log line and metrics."""

    address: str = "-"
    key: str = "-"
    fingerprint: str = "-"
    command: str = "-"
    service: str = "none"
    repository: str = "-"
    outcome: str = "ok"
    bytes_in: int = 0
    bytes_out: int = 0

    def count_in(self, size: int) -> None:
        self.bytes_in += size

    def count_out(self, size: int) -> None:
        self.bytes_out += size


class SshServer:
    """git over SSH for one server's repositories."""

    def __init__(
        self,
        config: settings.ServerSettings,
        *,
        services: services.Services,
        runner: spawning.GitRunner,
        resolver: repositories.Resolver,
        server_metrics: metrics.ServerMetrics | None = None,
        routing: Routing | None = None,
    ) -> None:
        self._config = config
        self._ssh = config.ssh
        self._services = services
        self._runner = runner
        self._resolver = resolver
        self._metrics = server_metrics
        self._routing = routing
        self.keys = sshkeys.KeysFile(
            config.ssh.keys_file, reload_interval=config.ssh.reload_interval
        )
        self._host_key = _host_key(config.ssh.host_key)
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self.port = 0

    async def start(self) -> None:
        """Loads the keys file and starts listening; ConfigError when either fails."""
        self.keys.load()
        # asyncssh logs several lines per connection at INFO; the access log has one.
        logging.getLogger("asyncssh").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        try:
            self._acceptor = await asyncssh.create_server(
                lambda: _Connection(self),
                self._config.host,
                self._ssh.port,
                server_host_keys=[self._host_key],
                process_factory=self._session,
                encoding=None,
                allow_pty=False,
                line_editor=False,
                agent_forwarding=False,
                x11_forwarding=False,
                allow_scp=False,
                login_timeout=self._ssh.login_timeout,
            )
        except OSError as error:
            raise errors.ConfigError(
                f"cannot listen for SSH on port {self._ssh.port}: {error}"
            ) from error
        self.port = self._acceptor.sockets[0].getsockname()[1]
        log.info(
            "serving git over SSH on %s:%s (%s keys)", self._config.host, self.port, len(self.keys)
        )

    async def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()

    async def identify(self, username: str, key: asyncssh.SSHKey) -> Identity | None:
        """The identity a key proves for a user name, or None to refuse it."""
        if username != USER:
            log.info("ssh: user %r refused: log in as %s", username[:64], USER)
            return None
        if self._routing is not None and key.public_data == self._host_key.public_data:
            return Identity("peer", str(key.get_fingerprint()), auth.Permission.WRITE, peer=True)
        entry = await self.keys.find(key)
        if entry is None:
            log.info("ssh: key %s refused: not in the keys file", key.get_fingerprint())
            return None
        return Identity(entry.label, entry.fingerprint, entry.permission)

    # -- one session --------------------------------------------------------------------------

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        connection = process.channel.get_connection().get_owner()
        assert isinstance(connection, _Connection) and connection.identity is not None
        identity = connection.identity
        session = Session(
            address=connection.address, key=identity.label, fingerprint=identity.fingerprint
        )
        started = time.monotonic()
        status = 1
        try:
            async with asyncio.timeout(self._config.limits.request_timeout):
                status = await self._serve(process, identity, session)
        except Exception as error:
            if isinstance(error, errors.GitFailed) and error.returncode > 0:
                status = error.returncode  # git's own status, as sshd would pass it on
            session.outcome = _outcome(error)
            message = _message(error)
            if session.outcome == "internal_error":
                log.error("ssh: internal error on %s", session.command, exc_info=error)
            with contextlib.suppress(Exception):
                process.stderr.write(f"gitquorum: {message}\n".encode())
        finally:
            seconds = time.monotonic() - started
            self._log(session, status=status, seconds=seconds)
            with contextlib.suppress(Exception):
                process.exit(status)

    async def _serve(
        self, process: asyncssh.SSHServerProcess[bytes], identity: Identity, session: Session
    ) -> int:
        command = process.command
        if command is None:
            raise Refused("only git commands are served here, no shell and no subsystem")
        session.command = command[:200]
        service, path = parse_command(command)
        session.service = service.command
        environment = process.env
        protocol = smarthttp.GitProtocol.parse(environment.get("GIT_PROTOCOL"))
        label = identity.label
        if identity.peer:
            label = _forwarded_label(environment.get(FORWARDED_FOR))
            session.key = f"{label} (via a peer)"
        client = clients.Client(user=label, address=session.address, protocol=protocol)
        pushing = service is smarthttp.Service.RECEIVE_PACK
        if pushing and not identity.permission.allows(auth.Permission.WRITE):
            raise errors.Forbidden(f"the key {identity.label} may only read")
        hops = _hops(environment.get(FORWARDED_HOPS)) if identity.peer else 0
        leader = await self._route(pushing=pushing, hops=hops, session=session)
        if leader is not None:
            return await self._relay(process, leader, client=client, hops=hops, session=session)
        repository = await self._repository(path, service, session)
        if pushing:
            return await self._receive_pack(process, repository, client, session)
        return await self._upload_pack(process, repository, client, session)

    async def _repository(
        self, path: str, service: smarthttp.Service, session: Session
    ) -> repositories.Repository:
        try:
            repository = await asyncio.to_thread(self._resolver.find, path)
        except errors.RepositoryNotFound:
            pushing = service is smarthttp.Service.RECEIVE_PACK
            if not (pushing and self._config.access.create_on_push):
                raise
            repository = await asyncio.to_thread(self._resolver.new, path)
        session.repository = repository.name
        return repository

    async def _upload_pack(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        repository: repositories.Repository,
        client: clients.Client,
        session: Session,
    ) -> int:
        service = smarthttp.Service.UPLOAD_PACK
        args = [service.command, "--strict", str(repository.path)]
        env = client.environment(service)
        stdin = _counted(_reader(process.stdin), session)
        async with self._runner.start(
            args, env=env, stdin=stdin, repository=repository.path
        ) as git:
            await _send(git.output(), process.stdout, session)
        return 0

    async def _receive_pack(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        repository: repositories.Repository,
        client: clients.Client,
        session: Session,
    ) -> int:
        service = smarthttp.Service.RECEIVE_PACK
        preamble = smarthttp.advertisement_preamble(service, client.protocol.for_service(service))
        advertisement = self._services.advertise(repository, service=service, client=client)
        async with advertisement as chunks:
            await _send(_without(preamble, chunks), process.stdout, session)
        limits = self._config.limits
        stdin = process.stdin
        raw = bodies.chunks(lambda: stdin.read(READ_SIZE), idle_timeout=limits.idle_timeout)
        body = _counted(bodies.decode(raw, encoding=None, limit=limits.max_push_bytes), session)
        start = await _start_of(body)
        if start.startswith(pktline.FLUSH):
            session.outcome = "nothing_pushed"
            return 0
        admitted = (
            self._routing.admitted() if self._routing is not None else contextlib.nullcontext()
        )
        with admitted:
            output = self._services.receive_pack(
                repository,
                client=client,
                body=bodies.prepend(start, body),
                max_command_bytes=limits.max_command_bytes,
            )
            async with output as chunks:
                await _send(chunks, process.stdout, session)
        return 0

    # -- a session this replica cannot serve ----------------------------------------------------

    async def _route(self, *, pushing: bool, hops: int, session: Session) -> str | None:
        """None to serve the session here, or the leader's host to relay it to; holds while
        the leader changes and none can take it yet."""
        routing = self._routing
        if routing is None:
            return None
        serves = routing.writable if pushing else routing.readable
        deadline = time.monotonic() + routing.hold
        held = False
        while True:
            if serves():
                return None
            leader = routing.leader_host()
            if leader is not None and hops < MAX_HOPS:
                return leader
            if not routing.in_transition() or time.monotonic() >= deadline:
                raise errors.Unavailable(_why(pushing=pushing, leader=leader, hops=hops))
            if not held:
                held = True
                log.debug("ssh: holding %s while the leader changes", session.command)
            await asyncio.sleep(HOLD_POLL)

    async def _relay(
        self,
        process: asyncssh.SSHServerProcess[bytes],
        host: str,
        *,
        client: clients.Client,
        hops: int,
        session: Session,
    ) -> int:
        """The whole session passed on to the leader's SSH server, and its exit status back."""
        session.outcome = "forwarded"
        env = {FORWARDED_FOR: client.user or "-", FORWARDED_HOPS: str(hops + 1)}
        if client.protocol.value:
            env["GIT_PROTOCOL"] = client.protocol.value
        known = asyncssh.import_known_hosts(
            "* " + self._host_key.export_public_key("openssh").decode()
        )
        command = process.command
        assert command is not None
        try:
            async with asyncssh.connect(
                host,
                self.port,
                username=USER,
                client_keys=[self._host_key],
                known_hosts=known,
                agent_path=None,
                config=None,
                login_timeout=self._ssh.login_timeout,
            ) as connection:
                remote = await connection.create_process(command, env=env, encoding=None)
                feeding = asyncio.create_task(
                    _pump(process.stdin, remote.stdin, counted=session.count_in, eof=True)
                )
                try:
                    await asyncio.gather(
                        _pump(remote.stdout, process.stdout, counted=session.count_out),
                        _pump(remote.stderr, process.stderr),
                    )
                    finished = await remote.wait(check=False)
                finally:
                    feeding.cancel()
                    await asyncio.gather(feeding, return_exceptions=True)
        except (OSError, asyncssh.Error) as error:
            raise errors.Unavailable(f"the leader cannot be reached: {error}") from error
        status = finished.exit_status
        return status if isinstance(status, int) and status >= 0 else 1

    def _log(self, session: Session, *, status: int, seconds: float) -> None:
        access_log.info(
            "transport=ssh command=%r status=%s outcome=%s repo=%s service=%s key=%s "
            "fingerprint=%s bytes_in=%s bytes_out=%s duration_ms=%.1f remote=%s",
            session.command,
            status,
            session.outcome,
            session.repository,
            session.service,
            session.key,
            session.fingerprint,
            session.bytes_in,
            session.bytes_out,
            seconds * 1000,
            session.address,
        )
        if self._metrics is not None:
            self._metrics.record(
                endpoint="ssh",
                service=session.service,
                outcome=session.outcome,
                seconds=seconds,
                bytes_in=session.bytes_in,
                bytes_out=session.bytes_out,
            )


class _Connection(asyncssh.SSHServer):
    """One client connection: public-key authentication as ``git``, and nothing else."""

    def __init__(self, server: SshServer) -> None:
        self._server = server
        self.identity: Identity | None = None
        self.address = "-"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        peer = conn.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "-"
        _acknowledge_at_once(conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self.identity = await self._server.identify(username, key)
        return self.identity is not None


def _acknowledge_at_once(conn: asyncssh.SSHServerConnection) -> None:
    """Every segment the client sends is acknowledged as soon as it is read.

    OpenSSH's client keeps Nagle's algorithm on for a session without a terminal, as git's
    are: it holds a small packet back while an earlier one is unacknowledged. Linux delays
    an acknowledgement (40 ms) when the receiver has nothing to send back, which is the
    case twice in every handshake (after the client's KEXINIT, and after its NEWKEYS, each
    followed at once by another packet). Measured on loopback with OpenSSH 9.2, a
    ``git ls-remote`` took 85 ms over SSH against 21 ms over HTTP, 80 ms of it in those two
    waits; with this, 29 ms. TCP_QUICKACK after each read sends the pending acknowledgement
    at once (it is not sticky, hence each read). asyncssh has no hook for it, so the
    connection's own ``data_received`` is wrapped.
    """
    sock = conn.get_extra_info("socket")
    quickack = getattr(socket, "TCP_QUICKACK", None)  # Linux only
    if sock is None or quickack is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    received = conn.data_received

    def data_received(data: bytes, datatype: asyncssh.DataType = None) -> None:
        with contextlib.suppress(OSError):  # a socket closing under us: nothing to acknowledge
            sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        received(data, datatype)

    # The transport calls the protocol's data_received: an attribute of the instance wins.
    setattr(conn, "data_received", data_received)  # noqa: B010


def parse_command(command: str) -> tuple[smarthttp.Service, str]:
    """The service and repository path of git's exec request; Refused for anything else."""
    match = _COMMAND.fullmatch(command) if len(command) <= MAX_COMMAND_LENGTH else None
    if match is None:
        raise Refused(
            f"{command[:80]!r} is not served here: only git-upload-pack '<repository>' and "
            "git-receive-pack '<repository>'"
        )
    return _SERVICES[match.group(1)], match.group(2).lstrip("/")


def _host_key(path: pathlib.Path | None) -> asyncssh.SSHKey:
    if path is None:
        raise errors.ConfigError("SSH needs a host key (--ssh-host-key)")
    try:
        return asyncssh.read_private_key(str(path))
    except (OSError, asyncssh.KeyImportError) as error:
        raise errors.ConfigError(f"cannot read the SSH host key {path}: {error}") from error


def _why(*, pushing: bool, leader: str | None, hops: int) -> str:
    what = "cannot take the push" if pushing else "is not in sync"
    if leader is None:
        return f"this replica {what} and knows no leader; retry"
    return f"this replica {what}; the session was relayed {hops} times already; retry"


def _forwarded_label(value: str | None) -> str:
    if not value or len(value) > MAX_LABEL_LENGTH or not value.isprintable():
        raise Refused(f"a peer must name the client in {FORWARDED_FOR}")
    return value


def _hops(value: str | None) -> int:
    if value is None or not value.isdigit() or int(value) > MAX_HOPS:
        raise Refused(f"a peer must say how often the session was relayed in {FORWARDED_HOPS}")
    return int(value)


async def _reader(stream: asyncssh.SSHReader[bytes]) -> AsyncIterator[bytes]:
    while chunk := await stream.read(READ_SIZE):
        yield chunk


async def _counted(chunks: AsyncIterator[bytes], session: Session) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        session.bytes_in += len(chunk)
        yield chunk


async def _send(
    chunks: AsyncIterator[bytes], stream: asyncssh.SSHWriter[bytes], session: Session
) -> None:
    pacer = _Pacer(stream.channel)
    async for chunk in chunks:
        if chunk:
            stream.write(chunk)
            await stream.drain()
            session.bytes_out += len(chunk)
            await pacer.wait()


class _Pacer:
    """Keeps what was sent and not yet taken by the client to about a round trip's worth.

    SSH lets a server send as far ahead as the client's window, 2 MiB for OpenSSH. When the
    network is faster than git behind the client, all of it piles up in the ssh process,
    whose buffers then grow and shrink by the megabyte: measured on loopback, a 51 MiB clone
    cost the ssh process 77,000 page faults and 0.16 s of system CPU, against 7,600 and
    0.06 s with 512 KiB ahead (the whole client, git included: 1.00 s of CPU against
    0.86 s; over HTTP 0.79 s). Further away, a round trip needs more in flight:
    ``SEND_AHEAD`` per millisecond of the connection's round-trip time (the kernel's
    estimate), so that pacing never caps a clone below about 500 MB/s, and never more than
    the window anyway.

    asyncssh does not publish a channel's send window; without it (another version), the
    pacer does nothing.
    """

    def __init__(self, channel: asyncssh.channel.SSHChannel[bytes]) -> None:
        self._channel = channel
        self._widest = getattr(channel, _SEND_WINDOW, None)
        rtt = _round_trip(channel.get_extra_info("socket"))
        self._ahead = int(SEND_AHEAD * max(1.0, rtt * 1000))

    def _in_flight(self) -> int:
        window = getattr(self._channel, _SEND_WINDOW, None)
        if not isinstance(window, int) or not isinstance(self._widest, int):
            return 0
        self._widest = max(self._widest, window)
        return self._widest - window

    async def wait(self) -> None:
        while self._in_flight() > self._ahead and not self._channel.is_closing():
            await asyncio.sleep(PACE_POLL)


def _round_trip(sock: Any) -> float:
    """The kernel's smoothed round-trip time of a TCP socket in seconds (0 when unknown)."""
    option = getattr(socket, "TCP_INFO", None)  # Linux only
    if sock is None or option is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return 0.0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO_SIZE)
        (microseconds,) = _TCP_INFO_RTT.unpack_from(info)
    except (OSError, struct.error):
        return 0.0
    return float(microseconds) / 1e6


async def _pump(
    source: asyncssh.SSHReader[bytes],
    target: asyncssh.SSHWriter[bytes],
    *,
    counted: Callable[[int], None] | None = None,
    eof: bool = False,
) -> None:
    while chunk := await source.read(READ_SIZE):
        target.write(chunk)
        await target.drain()
        if counted is not None:
            counted(len(chunk))
    if eof:
        target.write_eof()


async def _without(prefix: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """HTTP's advertisement without the ``# service=`` preamble that SSH clients do not expect."""
    first = True
    async for chunk in chunks:
        if first:
            if not chunk.startswith(prefix):
                raise errors.ProtocolError("receive-pack advertisement without its preamble")
            chunk = chunk[len(prefix) :]
            first = False
        yield chunk


async def _start_of(body: AsyncIterator[bytes]) -> bytes:
    """At least the first packet's length of the body (less if it ends first)."""
    start = b""
    async for chunk in body:
        start += chunk
        if len(start) >= pktline.LENGTH_SIZE:
            break
    return start


def _outcome(error: BaseException) -> str:
    """As on the git port (``errors.answer``); a key without the right is forbidden there
    too, and a session that broke off is the client's doing."""
    if isinstance(error, Refused | errors.Unauthorized):
        return "forbidden"
    if isinstance(error, ConnectionError | asyncssh.Error):
        return "client_gone"
    return errors.answer(error).outcome


def _message(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "the session took too long"
    if isinstance(error, errors.GitFailed):
        return f"git {error.command} failed: {error.message}"
    if isinstance(error, errors.GitquorumError):
        return str(error)
    return "internal server error"
