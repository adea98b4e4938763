"""The git wire protocol as data: framing, requests and reports, with no I/O.

Everything here works on bytes already in memory and raises :class:`gitquorum.errors.
ProtocolError` for input that does not follow the protocol, so the server can validate what a
client sent before any git process sees it.
"""
