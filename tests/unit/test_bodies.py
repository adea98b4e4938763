"""Request bodies: gzip decoded incrementally, size and idle limits, stream helpers."""

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import pytest

from gitquorum import errors
from gitquorum.server import bodies

pytestmark = pytest.mark.unit


async def source(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def decode(*chunks: bytes, encoding: str | None = None, limit: int = 1 << 30) -> bytes:
    return asyncio.run(
        bodies.read_all(bodies.decode(source(*chunks), encoding=encoding, limit=limit))
    )


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_identity_passes_through() -> None:
    assert decode(b"ab", b"cd") == b"abcd"
    assert decode(b"ab", encoding="identity") == b"ab"


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP"])
def test_gzip_decoded_across_chunk_boundaries(encoding: str) -> None:
    data = bytes(range(256)) * 1000
    assert decode(*split(gzip.compress(data), 7), encoding=encoding) == data


def test_gzip_bomb_stays_in_bounded_steps() -> None:
    # MAX_DECOMPRESSED_CHUNK: a tiny body that inflates hugely comes out in bounded pieces.
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))

    async def largest() -> int:
        sizes = [len(c) async for c in bodies.decode(source(bomb), encoding="gzip", limit=1 << 30)]
        return max(sizes)

    assert asyncio.run(largest()) <= bodies.MAX_DECOMPRESSED_CHUNK


def test_rejects_body_over_limit_after_decompression() -> None:
    with pytest.raises(errors.BodyTooLarge):
        decode(gzip.compress(b"x" * 10_000), encoding="gzip", limit=9_999)
    with pytest.raises(errors.BodyTooLarge):
        decode(b"x" * 10, b"y", limit=10)


def test_rejects_truncated_gzip() -> None:
    with pytest.raises(errors.BadRequest, match="truncated"):
        decode(gzip.compress(b"x" * 1000)[:-6], encoding="gzip")


def test_rejects_corrupt_gzip() -> None:
    with pytest.raises(errors.BadRequest, match="corrupt"):
        decode(b"\x1f\x8b\x08\x00garbage-garbage", encoding="gzip")


def test_rejects_data_after_gzip_stream() -> None:
    with pytest.raises(errors.BadRequest, match="after the end"):
        decode(gzip.compress(b"a") + b"trailing", encoding="gzip")
    with pytest.raises(errors.BadRequest, match="after the end"):
        decode(gzip.compress(b"a"), b"more", encoding="gzip")


def test_rejects_unknown_encoding() -> None:
    with pytest.raises(errors.UnsupportedMediaType):
        decode(zlib.compress(b"a"), encoding="deflate")


def test_chunks_stop_at_end_and_time_out_when_idle() -> None:
    async def scenario() -> None:
        parts = [b"a", b"b", b""]

        async def read() -> bytes:
            return parts.pop(0)

        assert [c async for c in bodies.chunks(read, idle_timeout=1)] == [b"a", b"b"]

        async def stalled() -> bytes:
            await asyncio.Event().wait()
            return b""

        with pytest.raises(errors.RequestTimeout):
            [c async for c in bodies.chunks(stalled, idle_timeout=0.01)]

    asyncio.run(scenario())


def test_prepend_and_once() -> None:
    async def scenario() -> bytes:
        return await bodies.read_all(bodies.prepend(b"head", bodies.once(b"tail")))

    assert asyncio.run(scenario()) == b"headtail"
