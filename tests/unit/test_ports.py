"""Ports for test servers: below the kernel's ephemeral range, and free when chosen."""

from __future__ import annotations

import socket

import pytest

from tests import ports


def test_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    port = ports.free_port()
    assert ports.LOWEST <= port < ports.ephemeral_start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_port_fails_clearly_without_room_below_the_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "ephemeral_start", lambda: ports.LOWEST + 10)
    with pytest.raises(RuntimeError, match="no room below it"):
        ports.free_port()
