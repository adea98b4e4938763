"""Forwarding a client's request to the leader when this replica cannot serve it itself.

A client may use any replica's URL for everything. A push that reaches a follower, or a read
that reaches a replica without a valid read lease (behind, rebuilding, cut off), is passed
to the leader's git server as it came: method, path, query, the client's credentials (every
replica has the same users), the body streamed through unread, the answer streamed back. The
leader authenticates the client again. A forwarded request carries the replicas it passed
through and is forwarded at most ``MAX_HOPS`` times, so a confused configuration cannot make
requests go round in circles. It may come back to a replica it passed: a follower forwards a
push to the leader, which holds it during a switchover and then forwards it to the new
leader, that very follower.

While the leader changes (``Replica.in_transition``) a request that cannot be served or
forwarded yet is held, up to ``hold`` seconds, until it can: a switchover then fails no
client. A request that found nobody to serve it by then gets 503 with the reason.
"""

import asyncio
import logging
import time

import aiohttp
from aiohttp import web

from gitquorum import errors
from gitquorum.replication import membership, replica
from gitquorum.server import http

log = logging.getLogger(__name__)

FORWARDED_HEADER = "X-Gitquorum-Forwarded"
_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Content-Encoding",
    "Content-Length",
    "Git-Protocol",
    "Accept",
    "Accept-Encoding",
    "User-Agent",
)
_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Encoding",
    "Cache-Control",
    "Expires",
    "Pragma",
    "WWW-Authenticate",
    "Retry-After",
)
READ_SIZE = 256 * 1024
CONNECT_TIMEOUT = 5.0
MAX_HOPS = 3
"""A client's replica, a deposed leader, the new leader: the longest path a switchover makes."""
HOLD_SECONDS = 10.0
HOLD_POLL = 0.02


def kind(request: web.Request) -> str | None:
    """ "write", "read", or None for a request that is not git's."""
    path = request.path
    if path.endswith("/git-receive-pack"):
        return "write"
    if path.endswith("/git-upload-pack"):
        return "read"
    if path.endswith("/info/refs"):
        return "write" if request.query.get("service") == "git-receive-pack" else "read"
    return None


class Forwarder:
    """The middleware that serves git requests here or passes them to the leader."""

    def __init__(self, member: replica.Replica, *, hold: float = HOLD_SECONDS) -> None:
        self._replica = member
        self._hold = hold
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def middleware(self, request: web.Request, handler: http.Handler) -> web.StreamResponse:
        wanted = kind(request)
        if wanted is None:
            return await handler(request)
        hops = _hops(request.headers.get(FORWARDED_HEADER, ""))
        leader = await self._route(wanted, hops)
        if leader is None:
            leadership = self._replica.leadership
            if wanted == "write" and leadership is not None:
                # No await between the check in _route and this: a hand-off sees the write.
                with leadership.admitted():
                    return await handler(request)
            return await handler(request)
        request[http.EXCHANGE].endpoint = "forward"
        return await self._forward(request, leader.url, hops)

    async def _route(self, wanted: str, hops: list[str]) -> membership.Member | None:
        """None to serve here, or the leader to forward to; holds during a leader change."""
        deadline = time.monotonic() + self._hold
        held = False
        while True:
            if self._serves(wanted):
                return None
            leader = self._replica.leader
            if leader is not None and leader.id != self._replica.id and len(hops) < MAX_HOPS:
                return leader
            if not self._replica.in_transition or time.monotonic() >= deadline:
                raise errors.Unavailable(self._why(wanted, leader, hops))
            if not held:
                held = True
                log.debug("holding a %s request while the leader changes", wanted)
            await asyncio.sleep(HOLD_POLL)

    def _why(self, wanted: str, leader: membership.Member | None, hops: list[str]) -> str:
        me = self._replica.id
        why = "is not the leader" if wanted == "write" else "has no valid read lease"
        if leader is None:
            return f"replica {me} {why} and knows no leader; retry"
        if leader.id == me:
            leadership = self._replica.leadership
            reason = leadership.why_not() if leadership is not None else "not leading yet"
            return f"replica {me} leads but cannot serve this now ({reason}); retry"
        return f"replica {me} {why}; the request was forwarded {len(hops)} times already; retry"

    def _serves(self, wanted: str) -> bool:
        return self._replica.writable if wanted == "write" else self._replica.readable

    async def _forward(
        self, request: web.Request, base: str, hops: list[str]
    ) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            )
        headers = {n: request.headers[n] for n in _REQUEST_HEADERS if n in request.headers}
        headers[FORWARDED_HEADER] = ",".join([*hops, self._replica.id])
        body = request.content.iter_chunked(READ_SIZE) if request.body_exists else None
        try:
            async with self._session.request(
                request.method, base + request.path_qs, headers=headers, data=body
            ) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        n: upstream.headers[n] for n in _RESPONSE_HEADERS if n in upstream.headers
                    },
                )
                await response.prepare(request)
                request[http.EXCHANGE].response = response
                async for chunk in upstream.content.iter_chunked(READ_SIZE):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientConnectionError, TimeoutError) as error:
            if request[http.EXCHANGE].response is not None:
                raise
            raise errors.Unavailable(f"the leader cannot be reached: {error}") from error


def _hops(header: str) -> list[str]:
    """The replicas a forwarded request passed through (at most a few names: anything
    longer is cut, it only makes the request refused sooner)."""
    return [hop for hop in header.split(",") if hop][: MAX_HOPS + 1]
