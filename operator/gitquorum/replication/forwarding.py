"""Forwarding a client's request to the leader when this replica cannot serve it itself.

A client may use any replica's URL for everything. A push that reaches a follower, or a read
that reaches a replica without a valid read lease (behind, rebuilding, cut off), is passed
to the leader's git server as it came: method, path, query, the client's credentials (every
replica has the same users), the body streamed through unread, the answer streamed back. The
leader authenticates the client again. A request already forwarded once is never forwarded
again: a replica that cannot serve it answers 503, so a confused configuration cannot make
requests go round in circles.
"""

import logging

import aiohttp
from aiohttp import web

from gitquorum import errors
from gitquorum.replication import replica
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

    def __init__(self, member: replica.Replica) -> None:
        self._replica = member
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def middleware(self, request: web.Request, handler: http.Handler) -> web.StreamResponse:
        wanted = kind(request)
        if wanted is None or self._serves(wanted):
            return await handler(request)
        why = "is not the leader" if wanted == "write" else "has no valid read lease"
        if request.headers.get(FORWARDED_HEADER):
            raise errors.Unavailable(f"replica {self._replica.id} {why} either; retry")
        leader = self._replica.leader
        if leader is None or leader.id == self._replica.id:
            raise errors.Unavailable(f"replica {self._replica.id} {why} and knows no leader")
        request[http.EXCHANGE].endpoint = "forward"
        return await self._forward(request, leader.url)

    def _serves(self, wanted: str) -> bool:
        return self._replica.writable if wanted == "write" else self._replica.readable

    async def _forward(self, request: web.Request, base: str) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            )
        headers = {n: request.headers[n] for n in _REQUEST_HEADERS if n in request.headers}
        headers[FORWARDED_HEADER] = self._replica.id
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
