"""pkt-line framing: encoding, strict decoding, incremental feeding, and every limit."""

import pytest

from gitquorum import errors
from gitquorum.protocol import pktline

pytestmark = pytest.mark.unit


def test_encode_prefixes_length_including_header() -> None:
    assert pktline.encode(b"hello\n") == b"000ahello\n"
    assert pktline.encode(b"") == b"0004"


def test_encode_rejects_oversized_payload() -> None:
    with pytest.raises(ValueError):
        pktline.encode(b"x" * (pktline.MAX_PAYLOAD_SIZE + 1))


def test_decode_data_and_special_packets() -> None:
    data = pktline.encode(b"a\n") + pktline.DELIM + pktline.encode(b"b") + pktline.FLUSH
    data += pktline.RESPONSE_END
    packets = pktline.decode(data)
    assert [p.kind for p in packets] == [
        pktline.Kind.DATA,
        pktline.Kind.DELIM,
        pktline.Kind.DATA,
        pktline.Kind.FLUSH,
        pktline.Kind.RESPONSE_END,
    ]
    assert packets[0].line == b"a" and packets[2].payload == b"b"
    assert b"".join(p.encode() for p in packets) == data


def test_decode_accepts_uppercase_hex_like_git() -> None:
    assert pktline.decode(b"000Ahello\n")[0].payload == b"hello\n"


def test_decode_largest_packet() -> None:
    payload = b"x" * pktline.MAX_PAYLOAD_SIZE
    assert pktline.decode(pktline.encode(payload))[0].payload == payload


def test_decoder_byte_by_byte_matches_whole() -> None:
    data = b"".join(pktline.encode(bytes([i]) * i) for i in range(1, 60)) + pktline.FLUSH
    decoder = pktline.Decoder()
    packets = []
    for byte in data:
        decoder.feed(bytes([byte]))
        while (packet := decoder.next()) is not None:
            packets.append(packet)
    assert packets == pktline.decode(data)
    assert decoder.buffered == 0


def test_decoder_rest_returns_what_follows_the_packets() -> None:
    decoder = pktline.Decoder()
    decoder.feed(pktline.encode(b"cmd") + pktline.FLUSH + b"PACK\x00\x00")
    assert decoder.next() == pktline.Packet(pktline.Kind.DATA, b"cmd")
    assert decoder.next() == pktline.Packet(pktline.Kind.FLUSH)
    assert decoder.rest() == b"PACK\x00\x00"
    assert decoder.buffered == 0


def test_decoder_waits_for_a_whole_packet() -> None:
    decoder = pktline.Decoder()
    decoder.feed(b"0009abc")
    assert decoder.next() is None
    decoder.feed(b"de")
    assert decoder.next() == pktline.Packet(pktline.Kind.DATA, b"abcde")


def test_error_packet_carries_message() -> None:
    assert pktline.decode(pktline.error("no such thing"))[0].payload == b"ERR no such thing"


@pytest.mark.parametrize("header", [b"zzzz", b"+0x1", b" 12 ", b"1_00", b"-001", b"00g0"])
def test_rejects_non_hex_length(header: bytes) -> None:
    with pytest.raises(errors.ProtocolError, match="length header"):
        pktline.decode(header + b"x" * 20)


def test_rejects_length_three() -> None:
    with pytest.raises(errors.ProtocolError, match="length 3"):
        pktline.decode(b"0003")


def test_rejects_length_over_max_packet_size() -> None:
    # MAX_PACKET_SIZE bounds what one packet makes us buffer.
    with pytest.raises(errors.ProtocolError, match="exceeds"):
        pktline.decode(b"fff1" + b"x" * 0xFFF1)


def test_rejects_truncated_packet() -> None:
    with pytest.raises(errors.ProtocolError, match="truncated"):
        pktline.decode(b"0010short")


def test_rejects_partial_header() -> None:
    with pytest.raises(errors.ProtocolError, match="truncated"):
        pktline.decode(pktline.FLUSH + b"00")
