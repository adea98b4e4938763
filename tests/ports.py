"""Ports for the servers tests start, chosen so that no other process can take them first.

A port the kernel hands out for a bind to port 0 comes from its ephemeral range, which it also
hands out to every outgoing connection: between the test choosing it and its server binding it,
a connection of any process may take it ("address already in use", seen in CI). Ports below
that range are never handed out by the kernel, so one drawn there at random and found free
stays free unless a test binds it too. The testbed's fixed ports are below ``LOWEST``.
"""

from __future__ import annotations

import pathlib
import random
import socket

LOWEST = 20000
RANGE_FILE = pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range")
ATTEMPTS = 200


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux's default when unreadable)."""
    try:
        return int(RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP port below the ephemeral range that nothing listens on now."""
    end = ephemeral_start()
    if end - LOWEST < 1000:
        raise RuntimeError(f"the ephemeral range starts at {end}: no room below it from {LOWEST}")
    for _ in range(ATTEMPTS):
        port = random.randrange(LOWEST, end)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {LOWEST} and {end} in {ATTEMPTS} draws")
