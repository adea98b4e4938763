"""The HTTP layer: routes, authentication, error answers, one log line and metrics per request.

This is the only module that knows aiohttp. Routes follow git's smart HTTP transport::

    GET  /<repo>/info/refs?service=git-upload-pack|git-receive-pack
    POST /<repo>/git-upload-pack
    POST /<repo>/git-receive-pack
    GET  /healthz, /readyz, /metrics

Responses stream: the first chunk of git's output is awaited before the status line is sent,
so a git that fails at once still gets a proper error answer. A git that fails later has
usually said so in the protocol first (an ``ERR`` packet, a side-band 3 message: ``not our
ref`` for an object the repository lacks): then the response ends cleanly, and the client
prints git's message alone. Any other failure after the first byte (git killed or crashed
mid-pack, the request's time limit, the request body failing under a push) can only cut the
connection, which git clients report as a failed transfer. Errors the client caused
become HTTP statuses (401 with ``WWW-Authenticate``, 403, 404, 413, ...) with a one-line text
body that git prints as ``remote:``; protocol errors inside a git exchange are answered in
the protocol (an ``ERR`` packet) so git prints them as ``remote error:``. Nothing else about
a failure leaves the server: details and stack traces go to the log.
"""

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aiohttp import typedefs, web

from gitquorum import errors
from gitquorum.protocol import pktline, reporting, smarthttp
from gitquorum.server import (
    auth,
    bodies,
    clients,
    creating,
    metrics,
    repositories,
    services,
    settings,
    spawning,
    writepath,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("gitquorum.access")

REALM = "gitquorum"
NO_CACHE = {
    "Cache-Control": "no-cache, max-age=0, must-revalidate",
    "Expires": "Fri, 01 Jan 1980 00:00:00 GMT",
    "Pragma": "no-cache",
}
RETRY_AFTER_SECONDS = 5
SERVER_NAME = "gitquorum"


@dataclasses.dataclass
class Exchange:
    """What one request did, filled in as it goes, for its log line and metrics."""

    endpoint: str = "other"
    service: str = "none"
    repository: str = "-"
    user: str = "-"
    outcome: str = "ok"
    bytes_in: int = 0
    bytes_out: int = 0
    response: web.StreamResponse | None = None
    """The streaming response once its status line is sent; no other answer is possible then."""


EXCHANGE = web.RequestKey("exchange", Exchange)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = typedefs.Middleware


class Server:
    """The git server's state and its aiohttp application."""

    def __init__(
        self,
        config: settings.ServerSettings,
        *,
        environment: Mapping[str, str],
        write_path: writepath.WritePath | None = None,
        runner: spawning.GitRunner | None = None,
        middlewares: tuple[Middleware, ...] = (),
        not_ready: Callable[[], str | None] | None = None,
    ) -> None:
        self._not_ready = not_ready
        """Says why the server should get no traffic now (a replica out of sync), or None."""
        self.settings = config
        self._middlewares = middlewares
        self.limits = config.limits
        self.runner = runner or spawning.GitRunner(
            config.git, config.limits, environment=environment
        )
        self.resolver = repositories.Resolver(config.root)
        self.authenticator = auth.Authenticator(
            config.access.auth_file,
            cache_seconds=config.access.cache_seconds,
            reload_interval=config.access.reload_interval,
            max_threads=config.limits.max_kdf_threads,
        )
        write_path = write_path or writepath.LocalWritePath(self.runner)
        creator = creating.Creator(
            self.runner,
            write_path,
            root=self.resolver.root,
            default_branch=config.git.default_branch,
        )
        self.services = services.Services(self.runner, write_path, creator=creator)
        self.metrics = metrics.ServerMetrics(
            git_running=lambda: self.runner.running, git_waiting=lambda: self.runner.waiting
        )
        self.draining = False

    def application(self) -> web.Application:
        # Added middlewares (a replica's forwarding) run inside the recording one, so their
        # requests are logged and counted and their errors answered like any other.
        app = web.Application(middlewares=[self._record, *self._middlewares])
        app.on_response_prepare.append(_server_header)
        app.on_response_prepare.append(self._close_when_draining)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/{repo:.+}/info/refs", self._info_refs)
        app.router.add_post("/{repo:.+}/git-upload-pack", self._upload_pack)
        app.router.add_post("/{repo:.+}/git-receive-pack", self._receive_pack)
        return app

    # -- git endpoints ------------------------------------------------------------------------

    async def _info_refs(self, request: web.Request) -> web.StreamResponse:
        exchange = _exchange(request, endpoint="info_refs")
        name = request.query.get("service")
        if name is None:
            raise errors.Forbidden("dumb HTTP is not supported: use git's smart HTTP")
        service = smarthttp.Service.named(name)
        exchange.service = service.command
        async with asyncio.timeout(self.limits.request_timeout):
            client = await self._client(request, service)
            repository = await self._repository(request, service)
            output = self.services.advertise(repository, service=service, client=client)
            return await self._stream(request, output, content_type=service.advertisement_type)

    async def _upload_pack(self, request: web.Request) -> web.StreamResponse:
        service = smarthttp.Service.UPLOAD_PACK
        _exchange(request, endpoint="rpc", service=service)
        _require_content_type(request, service)
        async with asyncio.timeout(self.limits.request_timeout):
            client = await self._client(request, service)
            repository = await self._repository(request, service)
            body = await bodies.read_all(self._body(request, self.limits.max_negotiation_bytes))
            if body == smarthttp.AUTH_PROBE:
                return _auth_probe(request, service)
            output = self.services.upload_pack(repository, client=client, body=body)
            return await self._stream(request, output, content_type=service.result_type)

    async def _receive_pack(self, request: web.Request) -> web.StreamResponse:
        service = smarthttp.Service.RECEIVE_PACK
        _exchange(request, endpoint="rpc", service=service)
        _require_content_type(request, service)
        async with asyncio.timeout(self.limits.request_timeout):
            client = await self._client(request, service)
            repository = await self._repository(request, service)
            body = self._body(request, self.limits.max_push_bytes)
            if request.content_length == len(smarthttp.AUTH_PROBE):
                # Too short to hold a push: git's probe, or a malformed request read in full.
                content = await bodies.read_all(body)
                if content == smarthttp.AUTH_PROBE:
                    return _auth_probe(request, service)
                body = bodies.once(content)
            output = self.services.receive_pack(
                repository,
                client=client,
                body=body,
                max_command_bytes=self.limits.max_command_bytes,
            )
            return await self._stream(request, output, content_type=service.result_type)

    async def _client(self, request: web.Request, service: smarthttp.Service) -> clients.Client:
        needed = (
            auth.Permission.WRITE
            if service is smarthttp.Service.RECEIVE_PACK
            else auth.Permission.READ
        )
        user = await auth.authorize(
            self.authenticator,
            request.headers.get("Authorization"),
            needed=needed,
            anonymous_read=self.settings.access.anonymous_read,
        )
        request[EXCHANGE].user = user or "-"
        protocol = smarthttp.GitProtocol.parse(request.headers.get(smarthttp.GIT_PROTOCOL_HEADER))
        return clients.Client(user=user, address=request.remote or "-", protocol=protocol)

    async def _repository(
        self, request: web.Request, service: smarthttp.Service
    ) -> repositories.Repository:
        path = request.match_info["repo"]
        try:
            repository = await asyncio.to_thread(self.resolver.find, path)
        except errors.RepositoryNotFound:
            pushing = service is smarthttp.Service.RECEIVE_PACK
            if not (pushing and self.settings.access.create_on_push):
                raise
            # Nothing is created here: the push itself creates it if it succeeds (creating).
            repository = await asyncio.to_thread(self.resolver.new, path)
        request[EXCHANGE].repository = repository.name
        return repository

    def _body(self, request: web.Request, limit: int) -> AsyncIterator[bytes]:
        raw = bodies.chunks(request.content.readany, idle_timeout=self.limits.idle_timeout)
        decoded = bodies.decode(raw, encoding=request.headers.get("Content-Encoding"), limit=limit)
        return _counted(decoded, request[EXCHANGE])

    async def _stream(
        self, request: web.Request, output: writepath.Output, *, content_type: str
    ) -> web.StreamResponse:
        """Streams git's output; see the module docstring for how failures are answered."""
        exchange = request[EXCHANGE]
        async with output as chunks:
            iterator = aiter(_ended_by_git(chunks, exchange))
            try:
                first = await anext(iterator, b"")
            except errors.GitFailed as error:
                exchange.outcome = "git_error"
                log.warning("repository %s: %s", exchange.repository, error)
                return self._git_error(content_type, f"git {error.command} failed")
            response = web.StreamResponse(headers={"Content-Type": content_type, **NO_CACHE})
            await response.prepare(request)
            exchange.response = response
            try:
                await _write(response, first, exchange=exchange)
                async for chunk in iterator:
                    await _write(response, chunk, exchange=exchange)
                await response.write_eof()
            except ConnectionError:
                exchange.outcome = "client_gone"
            return response

    def _git_error(self, content_type: str, message: str) -> web.Response:
        return web.Response(
            body=pktline.error(message), headers={"Content-Type": content_type, **NO_CACHE}
        )

    # -- probes and metrics -------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        _exchange(request, endpoint="probe")
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.StreamResponse:
        _exchange(request, endpoint="probe")
        if self.draining:
            raise errors.Unavailable("shutting down")
        if not await asyncio.to_thread(self.resolver.root.is_dir):
            raise errors.Unavailable(f"root {self.resolver.root} is not a directory")
        reason = self._not_ready() if self._not_ready is not None else None
        if reason is not None:
            raise errors.Unavailable(reason)
        return web.Response(text="ready\n")

    async def _close_when_draining(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        # A client that kept this connection would send its next request (git's POST after
        # its GET) to a server that is about to close it, and fail.
        if self.draining:
            response.force_close()

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        _exchange(request, endpoint="metrics")
        text = await asyncio.to_thread(self.metrics.render)
        return web.Response(
            text=text,
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    # -- every request ------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answers, logs and counts every request, whatever happens in the handler."""
        exchange = Exchange()
        request[EXCHANGE] = exchange
        started = time.monotonic()
        response: web.StreamResponse | None = None
        try:
            response = await self._answer(request, handler)
        finally:
            seconds = time.monotonic() - started
            status = response.status if response is not None else 500
            if isinstance(response, web.Response) and isinstance(response.body, bytes):
                exchange.bytes_out += len(response.body)
            self._log(request, status=status, seconds=seconds)
            self.metrics.record(
                endpoint=exchange.endpoint,
                service=exchange.service,
                outcome=exchange.outcome,
                seconds=seconds,
                bytes_in=exchange.bytes_in,
                bytes_out=exchange.bytes_out,
            )
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        try:
            return await handler(request)
        except Exception as error:
            if exchange.response is None:
                return self._error_answer(request, error)
            # The status line is out: all that is left is to cut the connection, which the
            # client sees as a failed transfer, and note why.
            exchange.outcome = _outcome(error)
            log.warning(
                "repository %s: %s after %s bytes sent, connection cut: %s",
                exchange.repository,
                exchange.outcome,
                exchange.bytes_out,
                error,
            )
            if request.transport is not None:
                request.transport.close()
            return exchange.response

    def _error_answer(self, request: web.Request, error: Exception) -> web.StreamResponse:
        exchange = request[EXCHANGE]
        if isinstance(error, web.HTTPException):
            exchange.outcome = "not_found" if error.status == 404 else "bad_request"
            return _text(error.status, error.reason)
        if isinstance(error, errors.ProtocolError):
            exchange.outcome = "protocol_error"
            log.info("repository %s: protocol error: %s", exchange.repository, error)
            content_type = f"application/x-git-{exchange.service}-result"
            message = f"protocol error: {error}"
            body = reporting.fatal(message, sideband_enabled=error.sideband)
            return web.Response(body=body, headers={"Content-Type": content_type, **NO_CACHE})
        if isinstance(error, errors.RequestError | errors.Unavailable | TimeoutError):
            return _error_response(error, exchange)
        if isinstance(error, ConnectionError):
            # The client closed the connection before its request was complete: nobody
            # reads this answer, but the log and metrics should not call it our failure.
            exchange.outcome = "client_gone"
            log.info("repository %s: client went away: %s", exchange.repository, error)
            return _text(400, "request cut short")
        exchange.outcome = "internal_error"
        log.error(
            "repository %s: internal error on %s %s",
            exchange.repository,
            request.method,
            request.path,
            exc_info=error,
        )
        return _text(500, "internal server error")

    def _log(self, request: web.Request, *, status: int, seconds: float) -> None:
        exchange = request[EXCHANGE]
        if exchange.endpoint in ("probe", "metrics") and status < 400:
            return  # probes come every few seconds; their successes are noise
        access_log.info(
            "method=%s path=%s status=%s outcome=%s repo=%s service=%s user=%s bytes_in=%s "
            "bytes_out=%s duration_ms=%.1f remote=%s",
            request.method,
            request.raw_path.split("?", 1)[0][:300],
            status,
            exchange.outcome,
            exchange.repository,
            exchange.service,
            exchange.user,
            exchange.bytes_in,
            exchange.bytes_out,
            seconds * 1000,
            request.remote,
        )


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    # aiohttp would announce itself and its version; clients need to know neither.
    response.headers["Server"] = SERVER_NAME


def _exchange(
    request: web.Request, *, endpoint: str, service: smarthttp.Service | None = None
) -> Exchange:
    exchange: Exchange = request[EXCHANGE]
    exchange.endpoint = endpoint
    if service is not None:
        exchange.service = service.command
    return exchange


def _auth_probe(request: web.Request, service: smarthttp.Service) -> web.Response:
    """git's probe before a large request: its credentials passed, which is all it asks.

    Counted apart from the request it precedes (its own endpoint), so that it neither
    counts as an error nor adds a second push or fetch to the rates.
    """
    request[EXCHANGE].endpoint = "auth_probe"
    return web.Response(body=b"", headers={"Content-Type": service.result_type, **NO_CACHE})


def _require_content_type(request: web.Request, service: smarthttp.Service) -> None:
    if request.content_type != service.request_type:
        raise errors.UnsupportedMediaType(f"expected Content-Type {service.request_type}")


async def _counted(chunks: AsyncIterator[bytes], exchange: Exchange) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        exchange.bytes_in += len(chunk)
        yield chunk


async def _ended_by_git(chunks: AsyncIterator[bytes], exchange: Exchange) -> AsyncIterator[bytes]:
    """git's output; when git fails after reporting the error in the protocol, it just ends."""
    # The newest chunks, at least one packet's worth: git's error packet is the last thing
    # it writes. Chunks are kept as they came, not copied.
    recent: collections.deque[bytes] = collections.deque()
    kept = 0
    try:
        async for chunk in chunks:
            recent.append(chunk)
            kept += len(chunk)
            while kept - len(recent[0]) >= pktline.MAX_PACKET_SIZE:
                kept -= len(recent.popleft())
            yield chunk
    except errors.GitFailed as error:
        if not recent or not reporting.ends_with_error(b"".join(recent)):
            raise
        exchange.outcome = "git_error"
        log.warning(
            "repository %s: %s (the client got git's error; the response ends)",
            exchange.repository,
            error,
        )


async def _write(response: web.StreamResponse, chunk: bytes, *, exchange: Exchange) -> None:
    if chunk:
        await response.write(chunk)
        exchange.bytes_out += len(chunk)


def _outcome(error: BaseException) -> str:
    return errors.answer(error).outcome


def _error_response(error: BaseException, exchange: Exchange) -> web.Response:
    if isinstance(error, TimeoutError):
        exchange.outcome = "timeout"
        return _text(408, "request took too long")
    answer = errors.answer(error)
    status = answer.status
    exchange.outcome = answer.outcome
    response = _text(status, str(error))
    if status == 401:
        response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}", charset="UTF-8"'
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=NO_CACHE)
