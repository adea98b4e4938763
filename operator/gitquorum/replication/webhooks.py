"""What the leader sends a webhook: the requests describing a push, signed, and the posting.

Two formats, each what a known receiver checks:

- ``generic-hmac``, for Flux's notification-controller (a Receiver of type ``generic-hmac``):
  one POST per push, header ``X-Signature: sha256=<hex HMAC-SHA256 of the raw body>``, a
  JSON body naming the repository, the generation, an event id and the ref updates.
- ``github``, for Argo CD and anything else that takes GitHub's push event: one POST per
  updated ref, headers ``X-GitHub-Event: push``, ``X-GitHub-Delivery`` and
  ``X-Hub-Signature-256: sha256=<hex>``, a body shaped like GitHub's push event (``ref``,
  ``before``, ``after``, ``repository``, ``commits: []``: the commits are not listed).

Every request carries a stable id (``<repository>-<generation>``; for GitHub's delivery
header a UUID derived from it and the ref), so a receiver that is sent the same push twice
(delivery is at least once) can tell. A *catch-up* describes generations whose ref updates
the sender no longer knows (a new leader, a restart): it lists the current refs instead,
with ``before`` unknown (``null`` for generic-hmac, forty zeros for github, as GitHub writes
for a ref it did not know before), and ``catchUp: true``.

This module is the HTTP client of webhooks, the one place besides the peer client that uses
aiohttp's client.
"""

import dataclasses
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp

from gitquorum import errors
from gitquorum.replication import transactions

GENERIC_HMAC = "generic-hmac"
GITHUB = "github"
FORMATS = (GENERIC_HMAC, GITHUB)

SIGNATURE_HEADER = "X-Signature"
GITHUB_SIGNATURE_HEADER = "X-Hub-Signature-256"
GITHUB_EVENT_HEADER = "X-GitHub-Event"
GITHUB_DELIVERY_HEADER = "X-GitHub-Delivery"
EVENT_ID_HEADER = "Gitquorum-Event"
ZERO_ID = transactions.ZERO_ID

# A receiver that answers nothing must not hold a sender for long: it is retried instead.
TIMEOUT_SECONDS = 5.0
# What a receiver answers is only logged: the bound keeps a chatty one from costing memory.
MAX_ANSWER_LOGGED = 300


class DeliveryError(errors.GitquorumError):
    """A webhook could not be reached or answered other than 2xx."""


@dataclasses.dataclass(frozen=True)
class Update:
    """One ref's change; ``before`` None when unknown (a catch-up)."""

    ref: str
    before: str | None
    after: str


@dataclasses.dataclass(frozen=True)
class Event:
    """What one notification says: the push of ``generation``, or a catch-up up to it."""

    repository: str
    generation: int
    updates: tuple[Update, ...]
    catch_up: bool = False
    since: int = 0
    """A catch-up covers the generations above this one."""
    full_name: str = ""
    url: str = ""
    """The repository's clone URL as receivers know it (Argo CD matches on it)."""
    default_branch: str = "main"
    acknowledged_at: float | None = None
    """Wall-clock seconds when the push was acknowledged; None for a catch-up."""

    @property
    def id(self) -> str:
        return f"{self.repository}-{self.generation}"


@dataclasses.dataclass(frozen=True)
class Request:
    """One POST: its body, exactly as signed, and its headers."""

    body: bytes
    headers: Mapping[str, str]


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC both Flux's generic-hmac and GitHub's header carry."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def requests(event: Event, *, format: str, secret: str) -> list[Request]:
    """The POSTs that deliver ``event`` in ``format``, in order."""
    if format == GENERIC_HMAC:
        body = _dumps(generic_body(event))
        return [Request(body, _headers(event.id, {SIGNATURE_HEADER: signature(secret, body)}))]
    result = []
    for update in event.updates:
        body = _dumps(github_body(event, update))
        headers = {
            GITHUB_EVENT_HEADER: "push",
            GITHUB_DELIVERY_HEADER: delivery_id(event, update.ref),
            GITHUB_SIGNATURE_HEADER: signature(secret, body),
        }
        result.append(Request(body, _headers(event.id, headers)))
    return result


def delivery_id(event: Event, ref: str) -> str:
    """A GUID, as GitHub sends, stable for one ref of one event."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"gitquorum:{event.id}:{ref}"))


def generic_body(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "repository": event.repository,
        "fullName": event.full_name or event.repository,
        "url": event.url,
        "generation": event.generation,
        "catchUp": event.catch_up,
        **({"since": event.since} if event.catch_up else {}),
        "acknowledgedAt": event.acknowledged_at,
        "refs": [
            {"ref": update.ref, "before": update.before, "after": update.after}
            for update in event.updates
        ],
    }


def github_body(event: Event, update: Update) -> dict[str, Any]:
    before = ZERO_ID if update.before is None else update.before
    url = event.url
    return {
        "ref": update.ref,
        "before": before,
        "after": update.after,
        "created": before == ZERO_ID,
        "deleted": update.after == ZERO_ID,
        "forced": False,
        "commits": [],
        "head_commit": None,
        "repository": {
            "name": event.repository,
            "full_name": event.full_name or event.repository,
            "clone_url": url,
            "html_url": url.removesuffix(".git"),
            "default_branch": event.default_branch,
        },
        "gitquorum": {"id": event.id, "generation": event.generation, "catchUp": event.catch_up},
    }


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _headers(event_id: str, extra: Mapping[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/json", EVENT_ID_HEADER: event_id, **extra}


class Poster:
    """Sends webhook requests; one connection pool for all of them."""

    def __init__(self, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, request: Request) -> None:
        """Returns once the receiver answered 2xx; DeliveryError saying why not."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        limit = aiohttp.ClientTimeout(total=self._timeout)
        try:
            # A redirect is not followed (it could send the signed body elsewhere): a 3xx
            # counts as a failure, and the log says where it pointed.
            async with self._session.post(
                url,
                data=request.body,
                headers=dict(request.headers),
                timeout=limit,
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return
                text = (await response.text(errors="replace")).strip()[:MAX_ANSWER_LOGGED]
                if 300 <= response.status < 400:
                    text = f"redirected to {response.headers.get('Location', '?')}"
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise DeliveryError(f"{type(error).__name__}: {error}".strip()) from error
        raise DeliveryError(f"HTTP {response.status}: {text}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
