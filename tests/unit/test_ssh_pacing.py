"""How far a fetch over SSH runs ahead of the client (server.ssh's pacer)."""

import asyncio
import socket
from typing import Any

import asyncssh.channel
import pytest

from gitquorum.server import ssh

pytestmark = pytest.mark.unit

WINDOW = 2 * 1024 * 1024


class FakeChannel:
    """The little of an asyncssh channel the pacer reads: the client's window left."""

    def __init__(self, window: int = WINDOW, sock: Any = None) -> None:
        self._send_window = window
        self.sock = sock
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default

    def is_closing(self) -> bool:
        return self.closing


def test_pacer_reads_the_window_asyncssh_keeps() -> None:
    """The pacer reads a private attribute: an asyncssh that renamed it would pace nothing."""
    assert ssh._SEND_WINDOW in asyncssh.channel.SSHChannel.__init__.__code__.co_names


def test_pacer_waits_while_more_than_its_share_is_in_flight() -> None:
    channel = FakeChannel()
    pacer = ssh._Pacer(channel)  # type: ignore[arg-type]

    async def scenario() -> None:
        channel._send_window = WINDOW - ssh.SEND_AHEAD - 1
        waiting = asyncio.create_task(pacer.wait())
        await asyncio.sleep(ssh.PACE_POLL * 5)
        assert not waiting.done(), "the pacer let a write through with too much in flight"
        channel._send_window += 64 * 1024  # the client took some: a window adjust
        await asyncio.wait_for(waiting, timeout=1)

    asyncio.run(scenario())


def test_pacer_lets_writes_through_within_its_share() -> None:
    channel = FakeChannel()
    pacer = ssh._Pacer(channel)  # type: ignore[arg-type]
    channel._send_window = WINDOW - ssh.SEND_AHEAD
    asyncio.run(asyncio.wait_for(pacer.wait(), timeout=1))


def test_pacer_stops_waiting_when_the_channel_closes() -> None:
    channel = FakeChannel()
    pacer = ssh._Pacer(channel)  # type: ignore[arg-type]
    channel._send_window = 0
    channel.closing = True
    asyncio.run(asyncio.wait_for(pacer.wait(), timeout=1))


def test_pacer_counts_from_the_widest_window_seen() -> None:
    """A pacer made when part of the window was in use counts from the full window once
    the client gave it back."""
    channel = FakeChannel(window=WINDOW - ssh.SEND_AHEAD)
    pacer = ssh._Pacer(channel)  # type: ignore[arg-type]
    channel._send_window = WINDOW  # the client took everything
    assert pacer._in_flight() == 0
    channel._send_window = WINDOW - ssh.SEND_AHEAD - 1
    assert pacer._in_flight() == ssh.SEND_AHEAD + 1


def test_round_trip_of_a_loopback_connection_is_under_a_millisecond() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            client.sendall(b"ping")
            accepted.recv(4)
            accepted.sendall(b"pong")
            client.recv(4)
            rtt = ssh._round_trip(accepted)
    assert 0 < rtt < 0.001, rtt


def test_round_trip_of_a_socket_that_is_not_tcp_is_unknown() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert ssh._round_trip(left) == 0.0
    assert ssh._round_trip(None) == 0.0
