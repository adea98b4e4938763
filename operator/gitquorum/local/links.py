"""Relays in front of the replicas on loopback, so that fault tests can cut one off.

``gitquorum local`` runs every replica as a process on 127.0.0.1, where there is no network
to partition. Instead every path of traffic to a replica goes through a :class:`Link` of its
own: a TCP relay on a port the OS picks that forwards each connection it accepts to one
replica. Each replica, and each outside client, is given the link's address in place of the
replica's, and :class:`Links` knows which replica is on each end of every link, so that
cutting a replica off cuts the links it sends on and the links it is reached by.

A cut behaves like a network partition, not like a dead process. A new connection is
accepted but nothing is forwarded and nothing answered, so the client hangs until its own
timeout; the bytes of connections already open are discarded in both directions, and
nothing that happens on either side (an end of file, a reset) is passed on. Healing closes
every connection that was open during the cut, as a real network would have seen them time
out, and new connections are forwarded again. A target that refuses a connection, on the
other hand, is a dead process, and the client's connection is closed at once, which is what
a client of a dead process sees.

Links are for fault tests and demos only: a replica serving for real is reached directly.
"""

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

# The most one read takes from a socket, also the stream buffer limit: a pack crosses a link
# in few turns of the event loop, while a connection holds at most about twice this much per
# direction before back-pressure stops reading from the sender.
CHUNK_SIZE = 256 * 1024


class _Connection:
    """One accepted client connection and, once made, its connection to the target."""

    def __init__(self, client: asyncio.StreamWriter, *, severed: bool) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        # Set on a connection open at any moment of a cut: from then on it forwards nothing
        # and stays open, whatever either side does, until the heal closes it.
        self.severed = severed
        self.task: asyncio.Task[None] | None = None

    def close(self, *, graceful: bool) -> None:
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            if graceful:
                writer.close()
            else:
                # Aborting drops what is still buffered: held bytes must not arrive late.
                writer.transport.abort()


class Link:
    """A TCP relay on loopback from replica ``source`` (None: outside clients) to ``target``."""

    def __init__(
        self,
        *,
        source: str | None,
        target: str,
        target_host: str,
        target_port: int,
        cut: bool = False,
    ) -> None:
        self.source = source
        self.target = target
        self.target_host = target_host
        self.target_port = target_port
        self._cut = cut
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._closed = False
        self._connections: set[_Connection] = set()

    def __repr__(self) -> str:
        return f"<Link {self.name} {self._port or 'unstarted'} cut={self._cut}>"

    @property
    def name(self) -> str:
        return f"{self.source or 'outside'}->{self.target}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"link {self.name} is not started")
        return self._port

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def cut(self) -> bool:
        return self._cut

    async def start(self) -> None:
        """Starts listening; does nothing if the link is listening already."""
        if self._closed:
            raise RuntimeError(f"link {self.name} is closed")
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accepted, LOOPBACK, 0, limit=CHUNK_SIZE)
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.debug(
            "link %s: listening on %s, forwarding to %s:%s",
            self.name,
            self.address,
            self.target_host,
            self.target_port,
        )

    async def close(self) -> None:
        """Stops listening and ends every connection; returns when all of them are gone."""
        self._closed = True
        if self._server is not None:
            self._server.close()
        await self._end(list(self._connections))
        if self._server is not None:
            await self._server.wait_closed()

    async def set_cut(self, value: bool) -> None:
        """Cuts the link, or heals it and closes the connections that were open during the cut."""
        if value == self._cut:
            return
        self._cut = value
        if value:
            for connection in self._connections:
                connection.severed = True
            log.info("link %s: cut, %s open connections severed", self.name, len(self._connections))
            return
        severed = [c for c in self._connections if c.severed]
        await self._end(severed)
        log.info("link %s: healed, %s connections from the cut closed", self.name, len(severed))

    async def _end(self, connections: list[_Connection]) -> None:
        tasks = [c.task for c in connections if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain function rather than a coroutine, so that the relay runs in a task of ours
        # which close() and a heal can cancel and await.
        if self._closed:
            # Accepted in the last turn before the listening socket closed.
            writer.transport.abort()
            return
        connection = _Connection(writer, severed=self._cut)
        connection.task = asyncio.create_task(
            self._relay(connection, reader), name=f"link {self.name}"
        )
        self._connections.add(connection)
        connection.task.add_done_callback(lambda task: self._finished(connection, task))

    def _finished(self, connection: _Connection, task: asyncio.Task[None]) -> None:
        self._connections.discard(connection)
        if not task.cancelled() and task.exception() is not None:
            log.error("link %s: relay failed", self.name, exc_info=task.exception())

    async def _relay(self, connection: _Connection, client: asyncio.StreamReader) -> None:
        completed = False
        try:
            completed = await self._forward(connection, client)
            if connection.severed:
                # Whatever happened on either side during the cut stays unseen until the heal
                # cancels us.
                await asyncio.get_running_loop().create_future()
        finally:
            connection.close(graceful=completed and not connection.severed)

    async def _forward(self, connection: _Connection, client: asyncio.StreamReader) -> bool:
        """Relays until both directions end; False if the connection broke or was never made."""
        if connection.severed:
            # Accepted during the cut: the client's bytes are read and dropped, never answered.
            with contextlib.suppress(OSError):
                while await client.read(CHUNK_SIZE):
                    pass
            return False
        try:
            upstream, connection.upstream = await asyncio.open_connection(
                self.target_host, self.target_port, limit=CHUNK_SIZE
            )
        except OSError as exc:
            log.debug("link %s: target refused the connection: %s", self.name, exc)
            return False
        broken = False
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(connection, client, connection.upstream))
                group.create_task(self._pump(connection, upstream, connection.client))
        except* OSError as errors:
            # One side reset or vanished: the other is ended too, as a relay cannot repair it.
            log.debug("link %s: connection broken: %s", self.name, errors.exceptions[0])
            broken = True
        return not broken

    async def _pump(
        self,
        connection: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        while data := await reader.read(CHUNK_SIZE):
            if connection.severed:
                continue  # a partition drops packets: no forwarding, no close
            writer.write(data)
            await writer.drain()
        # Passing the end of file on keeps a half-closed connection (request sent, answer
        # still to come) working; the relay closes once both directions have ended.
        if not connection.severed and writer.can_write_eof():
            writer.write_eof()


class Links:
    """The links between replicas, and which replicas are cut off from all others."""

    def __init__(self) -> None:
        self._links: dict[tuple[str | None, str], Link] = {}
        self._cut: set[str] = set()

    def add(self, *, source: str | None, target: str, target_host: str, target_port: int) -> Link:
        """A new link, not started, cut already if either of its ends is cut off."""
        key = (source, target)
        if key in self._links:
            raise ValueError(f"a link {self._links[key].name} exists already")
        link = Link(
            source=source,
            target=target,
            target_host=target_host,
            target_port=target_port,
            cut=self._severs(source, target),
        )
        self._links[key] = link
        return link

    def link(self, source: str | None, target: str) -> Link:
        return self._links[(source, target)]

    def cut_replicas(self) -> frozenset[str]:
        return frozenset(self._cut)

    async def start_all(self) -> None:
        """Starts the links not started yet, so that links added later can be started too."""
        for link in self._links.values():
            await link.start()

    async def close_all(self) -> None:
        await asyncio.gather(*(link.close() for link in self._links.values()))

    async def cut(self, replica: str) -> None:
        """Cuts every link that ``replica`` sends on or is reached by."""
        self._cut.add(replica)
        log.info("replica %s: cut off", replica)
        await self._apply(replica)

    async def heal(self, replica: str) -> None:
        """Heals the links of ``replica`` whose other end is not cut off itself."""
        self._cut.discard(replica)
        log.info("replica %s: healed", replica)
        await self._apply(replica)

    def _severs(self, source: str | None, target: str) -> bool:
        return target in self._cut or (source is not None and source in self._cut)

    async def _apply(self, replica: str) -> None:
        touching = [link for link in self._links.values() if replica in (link.source, link.target)]
        await asyncio.gather(
            *(link.set_cut(self._severs(link.source, link.target)) for link in touching)
        )
