"""What the HTTP layer does when git fails after the response began: end it, or cut it.

git that reported its error in the protocol (an ``ERR`` packet, side-band 3) has told the
client everything: the response ends cleanly. Any other failure after the first byte is a
broken stream, and still surfaces, so that the connection is cut (tested end to end with the
git CLI in tests/integration/test_fetching.py).
"""

import asyncio
from collections.abc import AsyncIterator

import pytest

from gitquorum import errors
from gitquorum.protocol import pktline, reporting
from gitquorum.server import http

pytestmark = pytest.mark.unit

FAILED = errors.GitFailed("upload-pack", 128, "fatal: git upload-pack: not our ref 1111")


async def _git(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    raise FAILED


def _stream(chunks: list[bytes]) -> tuple[list[bytes], http.Exchange]:
    exchange = http.Exchange(repository="r.git")

    async def read() -> list[bytes]:
        return [chunk async for chunk in http._ended_by_git(_git(chunks), exchange)]

    return asyncio.run(read()), exchange


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([pktline.error("upload-pack: not our ref 1111")], id="err-alone"),
        pytest.param(
            [pktline.encode(b"acknowledgments\n"), pktline.error("upload-pack: not our ref")],
            id="err-after-output",
        ),
        pytest.param(
            [b"x" * 300_000, pktline.encode(b"\x02progress\n") + b"0009\x03ab", b"cd"],
            id="band3-split-across-chunks",
        ),
    ],
)
def test_stream_ends_cleanly_after_gits_error_packet(chunks: list[bytes]) -> None:
    received, exchange = _stream(chunks)
    assert received == chunks
    assert exchange.outcome == "git_error"


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([], id="no-output"),
        pytest.param([reporting.sideband(1, b"PACK" + b"\x00" * 5000)], id="mid-pack"),
        pytest.param([pktline.error("boom"), pktline.FLUSH * 2], id="err-then-more"),
    ],
)
def test_stream_failure_without_error_packet_surfaces(chunks: list[bytes]) -> None:
    with pytest.raises(errors.GitFailed):
        _stream(chunks)
