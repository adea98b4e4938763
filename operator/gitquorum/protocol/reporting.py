"""Answers the server writes itself, in the protocol, when git does not get to answer.

A client that sent something we refuse inside the protocol (a malformed request, a push the
write path turns down) must still get a reply that git prints as an error, rather than a hung
or cut connection. Where the client asked for side-band multiplexing, its reader takes every
packet as a band: there an error travels on band 3, which git prints as ``remote error``; a
client without side-band, or whose capabilities we could not parse, gets an ``ERR`` packet.
Push results use git's report-status format so that git prints a rejection per ref.
"""

from collections.abc import Iterable

from dulwich import protocol as dulwich_protocol

from gitquorum import errors
from gitquorum.protocol import pktline, refupdates

# Side-band payloads carry one byte of band number inside the packet.
MAX_SIDEBAND_PAYLOAD = pktline.MAX_PAYLOAD_SIZE - 1


def sideband(band: int, payload: bytes) -> bytes:
    """Frames ``payload`` on one side-band channel, split into as many packets as needed."""
    chunks = [
        payload[start : start + MAX_SIDEBAND_PAYLOAD]
        for start in range(0, len(payload), MAX_SIDEBAND_PAYLOAD)
    ]
    return b"".join(pktline.encode(bytes([band]) + chunk) for chunk in chunks)


def fatal(message: str, *, sideband_enabled: bool) -> bytes:
    """An error that makes the client print ``message`` and give up."""
    if not sideband_enabled:
        return pktline.error(message)
    text = message.encode("utf-8", "replace") + b"\n"
    return sideband(dulwich_protocol.SIDE_BAND_CHANNEL_FATAL, text) + pktline.FLUSH


def rejection(commands: refupdates.PushCommands, reason: str) -> bytes:
    """A report-status turning down every update of a push with the same reason."""
    reason = " ".join(reason.split())  # one line per ref: no newlines may leak in
    lines = [b"unpack ok\n"]
    lines += [f"ng {update.ref} {reason}\n".encode() for update in commands.updates]
    report = _packets(lines) + pktline.FLUSH
    if not commands.sideband:
        return report
    return sideband(dulwich_protocol.SIDE_BAND_CHANNEL_DATA, report) + pktline.FLUSH


def ends_with_error(output: bytes) -> bool:
    """Whether ``output`` ends with an error reported in the protocol: an ``ERR`` packet or a
    side-band 3 message, perhaps followed by a flush.

    git writes one of these before it exits with an error (``not our ref``, a corrupt
    repository): the client has all it needs, and the response can end cleanly. Only the end
    is looked at (at least ``pktline.MAX_PACKET_SIZE`` bytes are enough), so the error is
    recognised by a header that announces exactly the bytes up to the end.
    """
    endings = [output]
    if output.endswith(pktline.FLUSH):
        endings.append(output[: -len(pktline.FLUSH)])
    markers = (pktline.ERR_PREFIX, bytes([dulwich_protocol.SIDE_BAND_CHANNEL_FATAL]))
    return any(_ends_with_packet(ending, marker) for ending in endings for marker in markers)


def _ends_with_packet(output: bytes, marker: bytes) -> bool:
    """Whether ``output`` ends with one whole packet whose payload starts with ``marker``."""
    window = output[-pktline.MAX_PACKET_SIZE :]
    end = len(window)
    while (found := window.rfind(marker, 0, end)) >= pktline.LENGTH_SIZE:
        start = found - pktline.LENGTH_SIZE
        try:
            if pktline.parse_length(window[start:found]) == len(window) - start:
                return True
        except errors.ProtocolError:
            pass  # not a header: pack data that happens to hold the marker
        end = found + len(marker) - 1
    return False


def _packets(lines: Iterable[bytes]) -> bytes:
    return b"".join(pktline.encode(line) for line in lines)


def updated_refs(output: bytes, *, sideband_enabled: bool) -> frozenset[str]:
    """The refs a receive-pack report-status says were updated (``ok <ref>``).

    Anything unexpected yields fewer refs, never more: a caller that finds a ref missing
    writes it itself.
    """
    report = _demultiplexed(output) if sideband_enabled else output
    updated: set[str] = set()
    decoder = pktline.Decoder()
    decoder.feed(report)
    try:
        while (packet := decoder.next()) is not None:
            if packet.line.startswith(b"ok "):
                updated.add(packet.line[3:].decode("utf-8", "replace"))
    except Exception:  # a malformed report: trust nothing of it
        return frozenset()
    return frozenset(updated)


def _demultiplexed(output: bytes) -> bytes:
    decoder = pktline.Decoder()
    decoder.feed(output)
    data = bytearray()
    try:
        while (packet := decoder.next()) is not None:
            payload = packet.payload
            if payload and payload[0] == dulwich_protocol.SIDE_BAND_CHANNEL_DATA:
                data += payload[1:]
    except Exception:
        return b""
    return bytes(data)
