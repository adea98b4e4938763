"""Validation of upload-pack requests, the client's half of a fetch negotiation.

Over smart HTTP every fetch round is one POST: in protocol v0 the wants, shallow and deepen
lines, a flush, the haves, and ``done`` or a flush; in protocol v2 a ``command=`` line,
capabilities, a delimiter, arguments and a flush. These requests are small (object names, not
objects), so the server reads one whole, checks that it is well-framed and complete, and only
then starts git: a malformed request never reaches git, and git never waits on a client that
stops half-way.
"""

from gitquorum import errors
from gitquorum.protocol import pktline

DONE = b"done"
COMMAND_PREFIX = b"command="


def validate(body: bytes, *, protocol_v2: bool) -> list[pktline.Packet]:
    """The request's packets, if it is a complete request of the protocol version in use."""
    packets = pktline.decode(body)
    if not packets:
        raise errors.ProtocolError("empty upload-pack request")
    last = packets[-1]
    if protocol_v2:
        first = packets[0]
        if first.kind is not pktline.Kind.DATA or not first.line.startswith(COMMAND_PREFIX):
            raise errors.ProtocolError("protocol v2 request does not start with a command")
        if last.kind is not pktline.Kind.FLUSH:
            raise errors.ProtocolError("protocol v2 request does not end with a flush")
        return packets
    if any(p.kind in (pktline.Kind.DELIM, pktline.Kind.RESPONSE_END) for p in packets):
        raise errors.ProtocolError("protocol v2 packet in a protocol v0 request")
    if last.kind is not pktline.Kind.FLUSH and last.line != DONE:
        raise errors.ProtocolError("upload-pack request ends before a flush or done")
    return packets
