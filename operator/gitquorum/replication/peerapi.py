"""The replication port: messages between replicas, git for copies, the controller's API.

Routes (every one but ``/healthz`` needs a bearer token):

- ``POST /replication/{heartbeat,prepare,commit,abort,lease}``, ``GET /replication/snapshot``:
  the replication protocol (``leading``, ``following``), with the shared replication token;
- ``GET /replication/git/info/refs``, ``POST /replication/git/git-upload-pack``: git fetch
  of any object, for copies (``catchup``), with the replication token;
- ``GET /admin/status``, ``PUT /admin/configuration``: the controller's view and its word
  (``replica``), with the admin token;
- ``POST /admin/backup``, ``POST /admin/restore``: a backup taken here, a restore applied
  here (``archiving``), with the admin token; answered with the backup's manifest, or
  ``ok: false`` and why (the store refused, the backup is corrupt);
- ``POST /replication/turn``, ``GET /replication/integrity``, ``PUT /admin/upkeep``: turns
  for maintenance, whether a peer may repair from this replica, the controller's permit
  (``upkeep``). A replica that found damage in its objects serves no copy or repair
  (``/replication/snapshot`` and ``/replication/git`` answer 503) until it is repaired.

A prepare's body is a 4-byte big-endian length, that many bytes of JSON, then the
transaction's pack files back to back. Every message is parsed whole (``messages``,
``membership``) before anything acts on it: one that does not parse is answered 400 and
changes nothing, not even the term. Answers are JSON; a well-formed message that is refused
is answered 200 with ``ok: false`` and the reason, so the sender learns this replica's term
and generation.
"""

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from gitquorum import errors
from gitquorum.backup import manifests
from gitquorum.protocol import smarthttp
from gitquorum.replication import archiving, membership, messages, replica, upkeep, versions
from gitquorum.server import bodies, clients, repositories, services, writepath

log = logging.getLogger(__name__)

# A prepare's JSON header holds the ref updates of one push; this bounds what a peer can
# make us hold in memory before the files start.
MAX_HEADER_BYTES = 64 * 1024 * 1024
PREPARE_LENGTH_BYTES = 4
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# A copy's fetch negotiation lists wanted and present objects.
MAX_NEGOTIATION_BYTES = 256 * 1024 * 1024
UPLOAD_PACK = smarthttp.Service.UPLOAD_PACK
# A hand-off holds the controller's pass and every write of the repository: keep it short.
MAX_HANDOFF_SECONDS = 30.0
# A peer that stops sending in the middle of a message is cut off or gone: give up soon.
PEER_IDLE_SECONDS = 10.0

JsonHandler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class PeerApi:
    """The aiohttp application of the replication port."""

    def __init__(
        self,
        member: replica.Replica,
        *,
        git: services.Services,
        repository: repositories.Repository,
        peer_token: str,
        admin_token: str,
        keeper: upkeep.Upkeep | None = None,
        archivist: archiving.Archivist | None = None,
    ) -> None:
        self._replica = member
        self._git = git
        self._repository = repository
        self._peer_token = peer_token
        self._admin_token = admin_token
        self._upkeep = keeper
        self._archivist = archivist

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_MESSAGE_BYTES)
        following = self._replica.following
        app.router.add_get("/healthz", self._healthz)
        for name, handler in (
            ("heartbeat", following.heartbeat),
            ("commit", following.commit),
            ("abort", following.abort),
            ("lease", self._lease),
        ):
            app.router.add_post(f"/replication/{name}", self._json(handler))
        app.router.add_post("/replication/prepare", self._prepare)
        app.router.add_get("/replication/snapshot", self._snapshot)
        app.router.add_get("/replication/git/info/refs", self._info_refs)
        app.router.add_post("/replication/git/git-upload-pack", self._upload_pack)
        app.router.add_get("/admin/status", self._status)
        app.router.add_put("/admin/configuration", self._configure)
        app.router.add_post("/admin/handoff", self._handoff)
        if self._upkeep is not None:
            app.router.add_post("/replication/turn", self._json(self._upkeep.turns.answer))
            app.router.add_get("/replication/integrity", self._integrity)
            app.router.add_put("/admin/upkeep", self._permit)
        if self._archivist is not None:
            app.router.add_post("/admin/backup", self._backup)
            app.router.add_post("/admin/restore", self._restore)
        return app

    # -- access ---------------------------------------------------------------------------------

    def _require(self, request: web.Request, token: str) -> None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise errors.Unauthorized("a valid bearer token is needed")

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if request.path.startswith("/replication/"):
                self._require(request, self._peer_token)
            elif request.path.startswith("/admin/"):
                self._require(request, self._admin_token)
            version = versions.parse(request.headers.get(versions.HEADER))
            if not versions.accepts(version):
                raise errors.BadRequest(
                    f"protocol version {version} is not understood here (this replica accepts "
                    f"{versions.OLDEST_ACCEPTED} to {versions.CURRENT})"
                )
            return await handler(request)
        except web.HTTPException:
            raise
        except (KeyError, TypeError, ValueError) as e:
            # A message that passed the decoder with a field of the wrong shape.
            log.warning("refused %s %s: %s", request.method, request.path, e)
            return _error(400, f"malformed message: {e}")
        except (
            errors.RequestError,
            errors.ProtocolError,
            errors.ReplicationError,
            errors.Unavailable,
        ) as error:
            status = errors.answer(error).status
            if status != 400:
                return _error(status, str(error))
            log.warning("refused %s %s: %s", request.method, request.path, error)
            return _error(400, f"malformed message: {error}")

    # -- replication ----------------------------------------------------------------------------

    def _json(self, handler: JsonHandler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            message = messages.decode(await request.read())
            return web.json_response(await handler(message))

        return answer

    async def _prepare(self, request: web.Request) -> web.Response:
        try:
            length = int.from_bytes(await request.content.readexactly(PREPARE_LENGTH_BYTES), "big")
            if length > MAX_HEADER_BYTES:
                raise errors.MalformedMessage(f"prepare header of {length} bytes")
            header = await request.content.readexactly(length)
        except asyncio.IncompleteReadError as error:
            raise errors.MalformedMessage(
                f"prepare body ends early ({len(error.partial)} of {error.expected} bytes): "
                "a prepare is a 4-byte length, a JSON header, then pack files"
            ) from error
        message = messages.decode(header, limit=MAX_HEADER_BYTES)
        files = bodies.chunks(request.content.readany, idle_timeout=PEER_IDLE_SECONDS)
        return web.json_response(await self._replica.following.prepare(message, files))

    async def _lease(self, message: Mapping[str, Any]) -> dict[str, Any]:
        lease = messages.LeaseRequest.parse(message)
        leadership = self._replica.leadership
        term = self._replica.store.state.term
        if leadership is None or lease.term != term:
            return {"granted": False, "term": term}
        if lease.release:
            leadership.release_lease(lease.replica)
            return {"granted": False, "term": term}
        return {"granted": leadership.grant_lease(lease.replica, lease.applied), "term": term}

    def _require_sound(self) -> None:
        if self._replica.damage is not None:
            raise errors.Unavailable(
                f"replica {self._replica.id} found damage in its objects and is no source "
                f"until it is repaired: {self._replica.damage}"
            )

    async def _snapshot(self, request: web.Request) -> web.Response:
        self._require_sound()
        # Read without an await in between: generation, refs and checksum change together
        # (store.apply), so this is one applied state without taking any lock, and a copy
        # never waits for a leader busy completing a transaction.
        local = self._replica.store
        state = local.state
        snapshot = {
            "term": state.term,
            "generation": state.generation,
            "transaction": state.last_transaction,
            "lastTerm": state.last_term,
            "lastSeq": state.last_seq,
            "checksum": local.checksum,
            "head": local.head,
            "refs": dict(local.refs),
        }
        return web.json_response(snapshot)

    # -- git for copies -------------------------------------------------------------------------

    def _client(self, request: web.Request) -> clients.Client:
        protocol = smarthttp.GitProtocol.parse(request.headers.get(smarthttp.GIT_PROTOCOL_HEADER))
        return clients.Client(user="replica", address=request.remote or "-", protocol=protocol)

    async def _info_refs(self, request: web.Request) -> web.StreamResponse:
        self._require_sound()
        if request.query.get("service") != UPLOAD_PACK.value:
            raise errors.BadRequest("only git-upload-pack is served here")
        output = self._git.advertise(
            self._repository, service=UPLOAD_PACK, client=self._client(request)
        )
        return await _stream(request, output, UPLOAD_PACK.advertisement_type)

    async def _upload_pack(self, request: web.Request) -> web.StreamResponse:
        self._require_sound()
        raw = bodies.chunks(request.content.readany, idle_timeout=60.0)
        decoded = bodies.decode(
            raw, encoding=request.headers.get("Content-Encoding"), limit=MAX_NEGOTIATION_BYTES
        )
        body = await bodies.read_all(decoded)
        output = self._git.upload_pack(self._repository, client=self._client(request), body=body)
        return await _stream(request, output, UPLOAD_PACK.result_type)

    # -- admin ----------------------------------------------------------------------------------

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._replica.status())

    async def _configure(self, request: web.Request) -> web.Response:
        configuration = membership.Configuration.from_json(messages.decode(await request.read()))
        await self._replica.configure(configuration)
        return web.json_response(self._replica.status())

    async def _handoff(self, request: web.Request) -> web.Response:
        message = messages.decode(await request.read())
        term = messages.integer(messages.field(message, "term"), "term", minimum=1)
        successor = messages.replica_id(messages.field(message, "to"), "to")
        timeout = message.get("timeout")
        # Bounded: the controller's pass waits for the answer.
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_HANDOFF_SECONDS
        ):
            raise errors.BadRequest(f"timeout must be in (0, {MAX_HANDOFF_SECONDS}] seconds")
        answer = await self._replica.hand_off(term=term, successor=successor, timeout=timeout)
        return web.json_response(answer)

    async def _integrity(self, request: web.Request) -> web.Response:
        assert self._upkeep is not None
        return web.json_response(self._upkeep.integrity())

    async def _permit(self, request: web.Request) -> web.Response:
        assert self._upkeep is not None
        return web.json_response(self._upkeep.permit(messages.decode(await request.read())))

    async def _backup(self, request: web.Request) -> web.Response:
        assert self._archivist is not None
        backup = archiving.BackupRequest.parse(messages.decode(await request.read()))
        return await _archived(self._archivist.back_up(backup))

    async def _restore(self, request: web.Request) -> web.Response:
        assert self._archivist is not None
        restore = archiving.RestoreRequest.parse(messages.decode(await request.read()))
        return await _archived(self._archivist.restore(restore))

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")


async def _stream(
    request: web.Request,
    output: writepath.Output,
    content_type: str,
) -> web.StreamResponse:
    async with output as chunks:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response


async def _archived(job: Awaitable[manifests.Manifest]) -> web.Response:
    """A backup's or restore's answer: its manifest, or why it failed (200, ``ok: false``:
    the request was understood; the store or the backup is at fault)."""
    try:
        manifest = await job
    except errors.BackupError as error:
        # The kind tells the operator whether asking again may help (an unreachable store)
        # or not (a corrupt backup).
        return web.json_response({"ok": False, "reason": str(error), "error": type(error).__name__})
    return web.json_response({"ok": True, "manifest": json.loads(manifest.to_json())})


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "reason": message}, status=status)
