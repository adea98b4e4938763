"""Request bodies as a stream of decoded chunks, within size and time limits.

git compresses large fetch requests with gzip (``Content-Encoding: gzip``); other clients may
compress pushes too. Bodies are decompressed incrementally, never more than one bounded chunk
at a time, and the limit applies to the decompressed size, so a small compressed body cannot
inflate into gigabytes in memory or on disk. A client that goes quiet mid-body is dropped
after the idle timeout instead of holding a git process open.
"""

import asyncio
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

from gitquorum import errors

IDENTITY = "identity"
GZIP_ENCODINGS = ("gzip", "x-gzip")

# The most decompressed bytes one step may produce. A gzip body can expand a thousandfold;
# stepping in bounded chunks keeps memory flat whatever the ratio.
MAX_DECOMPRESSED_CHUNK = 256 * 1024

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib's way to ask for a gzip header and trailer


async def chunks(
    read: Callable[[], Awaitable[bytes]], *, idle_timeout: float
) -> AsyncIterator[bytes]:
    """The raw body, chunk by chunk from ``read`` (which returns b"" at the end)."""
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await read()
        except TimeoutError as error:
            raise errors.RequestTimeout(f"no request data for {idle_timeout:g} s") from error
        if not chunk:
            return
        yield chunk


async def decode(
    raw: AsyncIterator[bytes], *, encoding: str | None, limit: int
) -> AsyncIterator[bytes]:
    """The decoded body, refusing it once it grows past ``limit`` bytes."""
    encoding = (encoding or IDENTITY).strip().lower()
    if encoding == IDENTITY:
        stream = raw
    elif encoding in GZIP_ENCODINGS:
        stream = _gunzip(raw)
    else:
        raise errors.UnsupportedMediaType(f"unsupported Content-Encoding {encoding[:20]!r}")
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise errors.BodyTooLarge(f"request body exceeds {limit} bytes")
        yield chunk


async def read_all(body: AsyncIterator[bytes]) -> bytes:
    """A whole (already size-limited) body in memory."""
    return b"".join([chunk async for chunk in body])


async def _gunzip(raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    decompressor = zlib.decompressobj(_GZIP_WBITS)
    async for chunk in raw:
        if decompressor.eof:
            raise errors.BadRequest("data after the end of the gzip body")
        pending = chunk
        while pending:
            try:
                out = decompressor.decompress(pending, MAX_DECOMPRESSED_CHUNK)
            except zlib.error as error:
                raise errors.BadRequest(f"corrupt gzip body: {error}") from error
            pending = decompressor.unconsumed_tail
            if decompressor.eof and decompressor.unused_data:
                raise errors.BadRequest("data after the end of the gzip body")
            if out:
                yield out
    if not decompressor.eof:
        raise errors.BadRequest("truncated gzip body")


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first``, then everything ``rest`` yields: a body whose start was already read."""
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def once(data: bytes) -> AsyncIterator[bytes]:
    """A body that is all in memory already."""
    yield data
