"""Fuzzing the pkt-line parser: whatever the bytes, it parses or raises ProtocolError."""

import contextlib
import random

import pytest

from gitquorum import errors
from gitquorum.protocol import pktline, refupdates, uploadpack

pytestmark = pytest.mark.unit

SEED = 20240603
ITERATIONS = 4000


def valid_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(0, 8)):
        choice = rng.random()
        if choice < 0.2:
            parts.append(rng.choice([pktline.FLUSH, pktline.DELIM, pktline.RESPONSE_END]))
        else:
            parts.append(pktline.encode(rng.randbytes(rng.randint(0, 300))))
    return b"".join(parts)


def mutate(rng: random.Random, data: bytes) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        operation = rng.randrange(5)
        position = rng.randint(0, len(buffer))
        if operation == 0 and buffer:
            buffer[min(position, len(buffer) - 1)] = rng.randrange(256)
        elif operation == 1:
            buffer[position:position] = rng.randbytes(rng.randint(1, 8))
        elif operation == 2:
            del buffer[position : position + rng.randint(1, 8)]
        elif operation == 3:
            buffer[position:position] = rng.choice([b"0000", b"0003", b"ffff", b"fff0", b"000"])
        else:
            buffer = buffer[:position]
    return bytes(buffer)


def inputs(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.3:
        return rng.randbytes(rng.randint(0, 64))
    if kind < 0.5:
        return bytes(rng.choice(b"0123456789abcdefABCDEF xg\n") for _ in range(rng.randint(0, 40)))
    if kind < 0.8:
        return mutate(rng, valid_stream(rng))
    return valid_stream(rng)


def test_decode_fuzz_only_raises_protocol_error() -> None:
    rng = random.Random(SEED)
    parsed = 0
    for _ in range(ITERATIONS):
        data = inputs(rng)
        try:
            packets = pktline.decode(data)
        except errors.ProtocolError:
            continue
        parsed += 1
        # what parses, re-encodes to an equivalent stream
        assert pktline.decode(b"".join(p.encode() for p in packets)) == packets
    assert parsed > ITERATIONS // 10, "the fuzzer produced almost no valid input"


def test_decoder_fuzz_in_random_chunks_matches_decode() -> None:
    rng = random.Random(SEED + 1)
    for _ in range(ITERATIONS // 2):
        data = inputs(rng)
        try:
            expected: list[pktline.Packet] | None = pktline.decode(data)
        except errors.ProtocolError:
            expected = None
        decoder = pktline.Decoder()
        packets = []
        try:
            position = 0
            while position < len(data):
                step = rng.randint(1, 50)
                decoder.feed(data[position : position + step])
                position += step
                while (packet := decoder.next()) is not None:
                    packets.append(packet)
            complete = decoder.buffered == 0
        except errors.ProtocolError:
            assert expected is None
            continue
        if expected is None:
            assert not complete
        else:
            assert packets == expected


def test_request_parsers_fuzz_only_raise_protocol_error() -> None:
    rng = random.Random(SEED + 2)
    zero = b"0" * 40
    seed_line = pktline.encode(zero + b" " + b"1" * 40 + b" refs/heads/main\0report-status")
    for _ in range(ITERATIONS):
        data = mutate(rng, seed_line + pktline.FLUSH) if rng.random() < 0.7 else inputs(rng)
        with contextlib.suppress(errors.ProtocolError):
            uploadpack.validate(data, protocol_v2=rng.random() < 0.5)
        parser = refupdates.Parser(max_bytes=4096)
        try:
            for packet in pktline.decode(data):
                if parser.feed(packet):
                    parser.result()
                    break
        except errors.ProtocolError:
            pass
