"""pkt-line framing, the packet layer under every git protocol message.

A packet is a four-digit hexadecimal length, counting the four digits themselves, followed by
that many bytes minus four of payload. Lengths 0000, 0001 and 0002 are the special flush,
delimiter and response-end packets; 0003 is invalid. The parser is strict and incremental:
:class:`Decoder` accepts bytes in chunks of any size as they arrive from the network, hands out
whole packets, and keeps whatever follows the last packet (a pack, typically) for the caller.
Anything that is not exactly a sequence of packets raises :class:`errors.ProtocolError` and
nothing else, whatever the input; a fuzz test holds us to that.
"""

import dataclasses
import enum

from gitquorum import errors

LENGTH_SIZE = 4
"""Bytes of the hexadecimal length header in front of every packet."""

FLUSH = b"0000"
DELIM = b"0001"
RESPONSE_END = b"0002"

# git's LARGE_PACKET_MAX: the largest packet git sends or accepts, header included. Holding
# clients to it caps what one packet can make us buffer before we have validated anything.
MAX_PACKET_SIZE = 65520
MAX_PAYLOAD_SIZE = MAX_PACKET_SIZE - LENGTH_SIZE

ERR_PREFIX = b"ERR "
"""Payload prefix of the packet a server sends to make the client print an error and stop."""

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class Kind(enum.Enum):
    """What a packet is: data, or one of the three special packets."""

    DATA = "data"
    FLUSH = "flush"
    DELIM = "delim"
    RESPONSE_END = "response-end"


_SPECIAL_KINDS = {0: Kind.FLUSH, 1: Kind.DELIM, 2: Kind.RESPONSE_END}
_SPECIAL_BYTES = {Kind.FLUSH: FLUSH, Kind.DELIM: DELIM, Kind.RESPONSE_END: RESPONSE_END}


@dataclasses.dataclass(frozen=True)
class Packet:
    """One packet: its kind and, for data packets, its payload."""

    kind: Kind
    payload: bytes = b""

    @property
    def line(self) -> bytes:
        """The payload without the trailing newline that text packets usually carry."""
        return self.payload[:-1] if self.payload.endswith(b"\n") else self.payload

    def encode(self) -> bytes:
        """The packet's bytes on the wire."""
        if self.kind is Kind.DATA:
            return encode(self.payload)
        return _SPECIAL_BYTES[self.kind]


def encode(payload: bytes) -> bytes:
    """Frame one payload as a data packet."""
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise ValueError(f"pkt-line payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_SIZE}")
    return b"%04x" % (len(payload) + LENGTH_SIZE) + payload


def error(message: str) -> bytes:
    """An ``ERR`` packet: git clients print the message as a remote error and stop."""
    return encode(ERR_PREFIX + message.encode("utf-8", "replace")[: MAX_PAYLOAD_SIZE - 4])


def parse_length(header: bytes) -> int:
    """The packet length a four-byte header announces, validated."""
    # int(x, 16) alone would also take "+0x1", " 1_0" and the like: insist on four hex digits.
    if len(header) != LENGTH_SIZE or not _HEX_DIGITS.issuperset(header):
        raise errors.ProtocolError(f"bad pkt-line length header {header!r}")
    length = int(header, 16)
    if length == 3:
        raise errors.ProtocolError("bad pkt-line length 3")
    if length > MAX_PACKET_SIZE:
        raise errors.ProtocolError(f"pkt-line length {length} exceeds {MAX_PACKET_SIZE}")
    return length


class Decoder:
    """Turns bytes arriving in chunks into packets, strictly."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as packets."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes) -> None:
        """Appends bytes received from the peer."""
        if self._start and self._start >= len(self._buffer) // 2:
            # Drop consumed bytes now and then, so a long stream of small packets stays linear.
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next(self) -> Packet | None:
        """The next complete packet, or None until more bytes arrive."""
        if self.buffered < LENGTH_SIZE:
            return None
        header = bytes(self._buffer[self._start : self._start + LENGTH_SIZE])
        length = parse_length(header)
        if length in _SPECIAL_KINDS:
            self._start += LENGTH_SIZE
            return Packet(_SPECIAL_KINDS[length])
        if self.buffered < length:
            return None
        payload = bytes(self._buffer[self._start + LENGTH_SIZE : self._start + length])
        self._start += length
        return Packet(Kind.DATA, payload)

    def rest(self) -> bytes:
        """Takes the bytes after the last packet returned, e.g. the pack that follows them."""
        rest = bytes(self._buffer[self._start :])
        self._buffer.clear()
        self._start = 0
        return rest


def decode(data: bytes) -> list[Packet]:
    """All packets of a complete message; the message must end exactly after a packet."""
    decoder = Decoder()
    decoder.feed(data)
    packets = []
    while (packet := decoder.next()) is not None:
        packets.append(packet)
    if decoder.buffered:
        raise errors.ProtocolError(f"truncated pkt-line: {decoder.buffered} bytes left over")
    return packets
