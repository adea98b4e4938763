"""Calling peers: the client side of the replication API.

Every message is an HTTP request to a peer's replication port with the shared replication
token as a bearer token; answers are JSON. A prepare carries the transaction's pack files
after its JSON header, streamed from disk. Connections are kept alive between messages, so a
push costs round trips, not handshakes. A peer that does not answer within the timeout
counts as not having confirmed: the caller decides what that means.
"""

import asyncio
import json
import pathlib
import struct
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from gitquorum import errors
from gitquorum.replication import transactions, versions

HEADER_LENGTH = struct.Struct(">I")
READ_SIZE = 256 * 1024


class PeerError(errors.GitquorumError):
    """A peer could not be reached or answered with an error."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status of an error answer; None when there was no answer."""


class Peers:
    """An HTTP client for the replication and admin APIs of other replicas."""

    def __init__(self, *, token: str, timeout: float) -> None:
        self._token = token
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={
                    "Authorization": f"Bearer {self._token}",
                    versions.HEADER: str(versions.CURRENT),
                },
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        base: str,
        path: str,
        message: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        method: str | None = None,
    ) -> dict[str, Any]:
        """POSTs ``message`` (GETs without one, unless ``method`` says) and returns the answer."""
        method = method or ("GET" if message is None else "POST")
        return await self._request(method, base + path, json_body=message, timeout=timeout)

    async def prepare(
        self,
        base: str,
        message: Mapping[str, Any],
        *,
        staging: pathlib.Path,
        files: tuple[transactions.PackFile, ...],
        contents: bytes | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Sends a transaction with its files: streamed from ``staging``, or ``contents``,
        the files already read (a small push: one write, sized, rather than a stream)."""
        body: bytes | AsyncIterator[bytes] = (
            _framed(message, staging, files) if contents is None else _header(message) + contents
        )
        return await self._request(
            "POST", base + "/replication/prepare", data=body, timeout=timeout
        )

    async def _request(
        self,
        method: str,
        url: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        data: bytes | AsyncIterator[bytes] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        limit = aiohttp.ClientTimeout(total=timeout or self._timeout)
        try:
            async with self._client().request(
                method, url, json=json_body, data=data, timeout=limit
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    raise PeerError(
                        f"{url}: HTTP {response.status}: {text.strip()[:300]}",
                        status=response.status,
                    )
                answer = json.loads(text)
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as error:
            raise PeerError(f"{url}: {type(error).__name__}: {error}") from error
        if not isinstance(answer, dict):
            raise PeerError(f"{url}: answer is not a JSON object")
        return answer


async def _framed(
    message: Mapping[str, Any], staging: pathlib.Path, files: tuple[transactions.PackFile, ...]
) -> AsyncIterator[bytes]:
    yield _header(message)
    for file in files:
        with (staging / file.name).open("rb") as source:
            if file.size <= READ_SIZE:  # a small push: one read, no thread hop
                yield source.read()
                continue
            while chunk := await asyncio.to_thread(source.read, READ_SIZE):
                yield chunk


def _header(message: Mapping[str, Any]) -> bytes:
    header = json.dumps(message).encode()
    return HEADER_LENGTH.pack(len(header)) + header
