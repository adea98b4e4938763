"""Relays between replicas: forwarding, cuts that behave like a partition, heals, teardown.

Every test runs real TCP on loopback inside one event loop. Where a test asserts that
nothing arrives, a read bounded by a short timeout is the assertion itself.
"""

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest

from gitquorum.local import links

pytestmark = pytest.mark.unit

LOOPBACK = "127.0.0.1"
ECHO_TASK = "echo handler"
# A bound on what must happen (forwarding, a close), far above what loopback takes.
TIMEOUT = 5.0
# How long a read waits to show that nothing arrives.
QUIET = 0.3

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Echo:
    """A target that sends back what it receives and counts what it saw."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = 0
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.set_name(ECHO_TASK)  # not the relay's: close_all need not end it
        self.connections += 1
        try:
            while data := await reader.read(1 << 18):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except OSError:
            pass
        finally:
            writer.close()


class Peer:
    """A target that hands each accepted connection to the test."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[Stream] = asyncio.Queue()
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.put_nowait((reader, writer))

    async def next(self) -> Stream:
        return await asyncio.wait_for(self.accepted.get(), TIMEOUT)


@contextlib.asynccontextmanager
async def echo() -> AsyncIterator[Echo]:
    target = Echo()
    target.server = await asyncio.start_server(target.handle, LOOPBACK, 0)
    try:
        yield target
    finally:
        target.server.close()


@contextlib.asynccontextmanager
async def peer() -> AsyncIterator[Peer]:
    target = Peer()
    target.server = await asyncio.start_server(target.handle, LOOPBACK, 0)
    try:
        yield target
    finally:
        target.server.close()
        while not target.accepted.empty():
            target.accepted.get_nowait()[1].close()


@contextlib.asynccontextmanager
async def relay(port: int) -> AsyncIterator[links.Link]:
    link = links.Link(source="b", target="a", target_host=LOOPBACK, target_port=port)
    await link.start()
    try:
        yield link
    finally:
        await link.close()


async def connect(link: links.Link) -> Stream:
    return await asyncio.open_connection(LOOPBACK, link.port)


async def exchange(link: links.Link, payload: bytes) -> bytes:
    """Sends ``payload`` and an end of file while reading; returns all that came back."""
    reader, writer = await connect(link)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    try:
        _, received = await asyncio.wait_for(asyncio.gather(send(), reader.read()), TIMEOUT)
    finally:
        writer.close()
    return received


async def until_closed(reader: asyncio.StreamReader, *, timeout: float = TIMEOUT) -> bytes:
    """What arrives before the connection ends; a reset counts as an end."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def assert_silent(reader: asyncio.StreamReader, what: str) -> None:
    try:
        data = await asyncio.wait_for(reader.read(1), QUIET)
    except TimeoutError:
        return
    raise AssertionError(f"expected nothing from {what} for {QUIET} s, got {data!r}")


def test_link_forwards_large_payloads_both_ways_intact() -> None:
    payload = random.Random(7).randbytes(5 * 1024 * 1024)

    async def scenario() -> None:
        async with echo() as target, relay(target.port) as link:
            assert link.address == f"{LOOPBACK}:{link.port}"
            assert await exchange(link, payload) == payload
            assert target.received == len(payload)

    asyncio.run(scenario())


def test_link_forwards_end_of_file_and_keeps_the_other_direction_open() -> None:
    async def scenario() -> None:
        async with peer() as target, relay(target.port) as link:
            client_reader, client_writer = await connect(link)
            server_reader, server_writer = await target.next()
            client_writer.write(b"request")
            client_writer.write_eof()
            assert await until_closed(server_reader) == b"request"
            server_writer.write(b"answer after the end of the request")
            server_writer.close()
            assert await until_closed(client_reader) == b"answer after the end of the request"
            client_writer.close()

    asyncio.run(scenario())


def test_link_cut_accepts_new_connections_but_never_answers() -> None:
    async def scenario() -> None:
        async with echo() as target, relay(target.port) as link:
            await link.set_cut(True)
            assert link.cut
            reader, writer = await connect(link)
            writer.write(b"ping")
            await assert_silent(reader, "a link cut before the connection")
            assert (target.connections, target.received) == (0, 0)
            writer.close()

    asyncio.run(scenario())


def test_link_cut_drops_bytes_of_open_connections_both_ways() -> None:
    async def scenario() -> None:
        async with peer() as target, relay(target.port) as link:
            client_reader, client_writer = await connect(link)
            server_reader, server_writer = await target.next()
            client_writer.write(b"before")
            assert await asyncio.wait_for(server_reader.readexactly(6), TIMEOUT) == b"before"

            await link.set_cut(True)
            client_writer.write(b"lost on the way to the target")
            server_writer.write(b"lost on the way to the client")
            await assert_silent(server_reader, "the client during the cut")
            await assert_silent(client_reader, "the target during the cut")
            # Neither side's end of file is passed on either.
            server_writer.close()
            await assert_silent(client_reader, "the target closing during the cut")
            client_writer.close()

    asyncio.run(scenario())


def test_link_heal_closes_connections_open_during_cut_and_forwards_new_ones() -> None:
    async def scenario() -> None:
        async with peer() as target, relay(target.port) as link:
            before_reader, before_writer = await connect(link)
            server_reader, server_writer = await target.next()
            await link.set_cut(True)
            during_reader, during_writer = await connect(link)
            before_writer.write(b"dropped")
            during_writer.write(b"dropped")
            await assert_silent(during_reader, "a connection made during the cut")

            await link.set_cut(False)
            assert not link.cut
            assert await until_closed(before_reader) == b""
            assert await until_closed(during_reader) == b""
            assert await until_closed(server_reader) == b""
            for writer in (before_writer, during_writer, server_writer):
                writer.close()

            client_reader, client_writer = await connect(link)
            _, new_writer = await target.next()
            new_writer.write(b"pong")
            new_writer.close()
            assert await until_closed(client_reader) == b"pong"
            client_writer.close()

    asyncio.run(scenario())


def test_link_to_dead_target_closes_client_connection_at_once() -> None:
    async def scenario() -> None:
        async with echo() as target:
            port = target.port
        async with relay(port) as link:
            reader, writer = await connect(link)
            writer.write(b"anyone there?")
            assert await until_closed(reader, timeout=1.0) == b""
            writer.close()

    asyncio.run(scenario())


def test_links_cut_replica_cuts_every_link_touching_it() -> None:
    async def scenario() -> None:
        async with echo() as target:
            group = links.Links()
            for source, to in [("a", "b"), ("b", "a"), (None, "a"), ("b", "c"), (None, "c")]:
                group.add(source=source, target=to, target_host=LOOPBACK, target_port=target.port)
            await group.start_all()
            try:
                await group.cut("a")
                assert group.cut_replicas() == frozenset({"a"})
                for source, to in [("a", "b"), ("b", "a"), (None, "a")]:
                    assert group.link(source, to).cut, (source, to)
                for source, to in [("b", "c"), (None, "c")]:
                    assert not group.link(source, to).cut, (source, to)
                assert await exchange(group.link("b", "c"), b"still through") == b"still through"

                await group.heal("a")
                assert group.cut_replicas() == frozenset()
                assert not group.link("b", "a").cut
                assert await exchange(group.link("b", "a"), b"through again") == b"through again"
            finally:
                await group.close_all()

    asyncio.run(scenario())


def test_links_link_stays_cut_while_either_end_is_cut() -> None:
    async def scenario() -> None:
        group = links.Links()
        for source, to in [("a", "b"), ("b", "a"), (None, "a"), (None, "b")]:
            group.add(source=source, target=to, target_host=LOOPBACK, target_port=1)
        await group.cut("a")
        await group.cut("b")
        await group.heal("a")
        assert group.cut_replicas() == frozenset({"b"})
        assert group.link("a", "b").cut
        assert group.link("b", "a").cut
        assert not group.link(None, "a").cut
        await group.heal("b")
        assert not any(group.link(s, t).cut for s, t in [("a", "b"), ("b", "a"), (None, "b")])

    asyncio.run(scenario())


def test_links_add_to_cut_replica_starts_cut() -> None:
    async def scenario() -> None:
        group = links.Links()
        await group.cut("a")
        assert group.add(source="a", target="b", target_host=LOOPBACK, target_port=1).cut
        assert group.add(source=None, target="a", target_host=LOOPBACK, target_port=1).cut
        assert not group.add(source=None, target="b", target_host=LOOPBACK, target_port=1).cut

    asyncio.run(scenario())


def test_links_rejects_second_link_between_same_ends() -> None:
    group = links.Links()
    group.add(source=None, target="a", target_host=LOOPBACK, target_port=1)
    with pytest.raises(ValueError, match="outside->a"):
        group.add(source=None, target="a", target_host=LOOPBACK, target_port=2)


def test_links_close_all_ends_connections_and_leaves_no_tasks() -> None:
    async def scenario() -> None:
        async with echo() as target:
            group = links.Links()
            to_a = group.add(source=None, target="a", target_host=LOOPBACK, target_port=target.port)
            to_b = group.add(source="a", target="b", target_host=LOOPBACK, target_port=target.port)
            await group.start_all()
            forwarding = [await connect(to_a)]
            severed = [await connect(to_b)]
            await group.cut("b")
            forwarding.append(await connect(to_a))
            severed.append(await connect(to_b))
            for _, writer in forwarding + severed:
                writer.write(b"ping")
            for reader, _ in forwarding:
                assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"ping"
            for reader, _ in severed:
                await assert_silent(reader, "a connection to the cut replica")

            await group.close_all()
            current = asyncio.current_task()
            left = {
                t for t in asyncio.all_tasks() if t is not current and t.get_name() != ECHO_TASK
            }
            assert left == set()
            for reader, writer in forwarding + severed:
                assert await until_closed(reader) == b""
                writer.close()

    asyncio.run(scenario())
