"""Running the server: binding the socket, serving until told to stop, draining on exit.

On SIGTERM or SIGINT the server reports not ready at once, goes on accepting connections for
the stop delay (endpoints take a moment to drop a terminating pod: a connection routed to a
closed listener in that moment would fail), then stops accepting and gives the requests in
flight the shutdown timeout to finish; git processes still running after that are killed with
their requests. While stopping, every answer says ``Connection: close``, so that no client
keeps a connection to a server about to go.
"""

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web

from gitquorum.server import http

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 128


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; binding it here lets port 0 pick a free port we can report."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


async def serve(server: http.Server, sock: socket.socket) -> None:
    """Serves on ``sock`` until SIGTERM or SIGINT."""
    await serve_many(
        [(server.application(), sock)],
        server=server,
        started=f"serving repositories under {server.resolver.root}",
    )


async def serve_many(
    apps: list[tuple[web.Application, socket.socket]],
    *,
    server: http.Server,
    started: str,
    before_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serves several applications (a replica's git and replication ports) until SIGTERM;
    ``before_stop`` runs after the signal while everything still serves (a leader hands off)."""
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        for app, sock in apps:
            runner = web.AppRunner(
                app,
                access_log=None,
                auto_decompress=False,
                handle_signals=False,
                shutdown_timeout=server.settings.shutdown_timeout,
            )
            await runner.setup()
            runners.append(runner)
            await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()
        addresses = ", ".join(_url(sock) for _, sock in apps)
        log.info("%s on %s", started, addresses)
        await stop.wait()
        server.draining = True
        log.info(
            "stopping: not ready, still accepting connections for %s s", server.settings.stop_delay
        )
        await asyncio.gather(
            before_stop() if before_stop is not None else asyncio.sleep(0),
            asyncio.sleep(server.settings.stop_delay),
        )
        log.info("stopping: draining requests for up to %s s", server.settings.shutdown_timeout)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        log.info("stopped")


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
