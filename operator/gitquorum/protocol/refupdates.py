"""The command section of a receive-pack request: which refs a push changes, and how.

A push request starts with ``shallow`` lines (from shallow clients), then one packet per ref
update, ``<old-oid> <new-oid> <refname>``, the first one followed by a NUL and the client's
capabilities, then a flush. With the ``push-options`` capability a second list, of options,
ends with another flush. Then comes the pack, unless every update is a deletion.

The server parses this section itself before git sees it, for two reasons: a malformed
request is turned away before anything touches the repository, and the write path (see
``gitquorum.server.writepath``) gets the exact list of updates to decide on, which is what a
replicated write path votes on.
"""

import dataclasses
import enum
import re

from dulwich import protocol as dulwich_protocol
from dulwich import refs as dulwich_refs

from gitquorum import errors
from gitquorum.protocol import pktline

SHALLOW_PREFIX = b"shallow "
PUSH_CERT = b"push-cert"
CAPABILITIES_SEPARATOR = b"\0"

OBJECT_FORMAT_LENGTHS = {"sha1": 40, "sha256": 64}
"""Hexadecimal object-name length for each object format git knows."""

# Loose refs are files, so a longer name fails on most file systems anyway; refusing it here
# keeps a client from making us hold and log kilobytes of ref name per update.
MAX_REF_NAME_LENGTH = 1024

# Capabilities are short tokens (``agent=git/2.39.5`` is among the longest); the bound keeps a
# hostile first line from becoming thousands of set entries.
MAX_CAPABILITIES = 64

_OID = re.compile(rb"[0-9a-f]+")
_CAPABILITY = re.compile(rb"[\x21-\x7e]+")


@dataclasses.dataclass(frozen=True)
class RefUpdate:
    """One ref a push changes: from ``old`` to ``new``; all zeros means absent."""

    ref: str
    old: str
    new: str

    @property
    def is_create(self) -> bool:
        return set(self.old) == {"0"}

    @property
    def is_delete(self) -> bool:
        return set(self.new) == {"0"}


@dataclasses.dataclass(frozen=True)
class PushCommands:
    """A parsed command section: the updates, the client's capabilities, and the rest."""

    updates: tuple[RefUpdate, ...]
    capabilities: tuple[str, ...]
    shallow: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def has(self, capability: bytes) -> bool:
        """Whether the client asked for a capability (given without any ``=value``)."""
        name = capability.decode()
        return any(c == name or c.startswith(name + "=") for c in self.capabilities)

    @property
    def sideband(self) -> bool:
        """Whether the response is multiplexed in side-band packets."""
        return self.has(dulwich_protocol.CAPABILITY_SIDE_BAND_64K) or self.has(
            dulwich_protocol.CAPABILITY_SIDE_BAND
        )

    @property
    def expects_pack(self) -> bool:
        """Whether a pack follows the section; git sends none for pure deletions."""
        return any(not update.is_delete for update in self.updates)

    def encode(self) -> bytes:
        """The section as packets, the way git receive-pack is to read it."""
        packets = [pktline.encode(SHALLOW_PREFIX + oid.encode()) for oid in self.shallow]
        for index, update in enumerate(self.updates):
            line = f"{update.old} {update.new} {update.ref}".encode()
            if index == 0 and self.capabilities:
                line += CAPABILITIES_SEPARATOR + " ".join(self.capabilities).encode()
            packets.append(pktline.encode(line))
        packets.append(pktline.FLUSH)
        if self.has(dulwich_protocol.CAPABILITY_PUSH_OPTIONS):
            packets.extend(pktline.encode(option.encode()) for option in self.options)
            packets.append(pktline.FLUSH)
        return b"".join(packets)


class _State(enum.Enum):
    COMMANDS = "commands"
    OPTIONS = "options"
    DONE = "done"


class Parser:
    """Reads the packets of a command section one at a time and validates them."""

    def __init__(self, *, max_bytes: int) -> None:
        # The whole section is held in memory until git starts, so its size is bounded.
        self._max_bytes = max_bytes
        self._bytes = 0
        self._state = _State.COMMANDS
        self._updates: list[RefUpdate] = []
        self._refs: set[str] = set()
        self._capabilities: tuple[str, ...] = ()
        self._oid_length = OBJECT_FORMAT_LENGTHS["sha1"]
        self._shallow: list[str] = []
        self._options: list[str] = []

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def sideband(self) -> bool:
        """Whether the capabilities read so far ask for side-band multiplexing."""
        return PushCommands(updates=(), capabilities=self._capabilities).sideband

    def feed(self, packet: pktline.Packet) -> bool:
        """Takes the next packet; returns True once the section is complete."""
        if self.done:
            raise errors.ProtocolError("packet after the end of the command section")
        self._bytes += len(packet.payload) + pktline.LENGTH_SIZE
        if self._bytes > self._max_bytes:
            raise errors.ProtocolError(f"push command section exceeds {self._max_bytes} bytes")
        if packet.kind is pktline.Kind.FLUSH:
            self._end_list()
        elif packet.kind is not pktline.Kind.DATA:
            raise errors.ProtocolError(f"unexpected {packet.kind.value} packet in push commands")
        elif self._state is _State.OPTIONS:
            self._options.append(_text(packet.line, "push option"))
        else:
            self._command(packet.line)
        return self.done

    def result(self) -> PushCommands:
        """The parsed section; only once :meth:`feed` has returned True."""
        if not self.done:
            raise errors.ProtocolError("push command section is incomplete")
        return PushCommands(
            updates=tuple(self._updates),
            capabilities=self._capabilities,
            shallow=tuple(self._shallow),
            options=tuple(self._options),
        )

    def _end_list(self) -> None:
        if self._state is _State.OPTIONS:
            self._state = _State.DONE
            return
        if not self._updates:
            raise errors.ProtocolError("push request has no ref updates")
        wants_options = dulwich_protocol.CAPABILITY_PUSH_OPTIONS.decode() in self._capabilities
        self._state = _State.OPTIONS if wants_options else _State.DONE

    def _command(self, line: bytes) -> None:
        if line.startswith(SHALLOW_PREFIX):
            if self._updates:
                raise errors.ProtocolError("shallow line after the first ref update")
            self._shallow.append(self._oid(line[len(SHALLOW_PREFIX) :]))
            return
        if line.split(CAPABILITIES_SEPARATOR, 1)[0] == PUSH_CERT:
            raise errors.ProtocolError("signed pushes (push-cert) are not supported")
        if not self._updates:
            line = self._take_capabilities(line)
        elif CAPABILITIES_SEPARATOR in line:
            raise errors.ProtocolError("capabilities after the first ref update")
        fields = line.split(b" ")
        if len(fields) != 3:
            raise errors.ProtocolError(f"malformed ref update {line[:100]!r}")
        update = RefUpdate(ref=_ref(fields[2]), old=self._oid(fields[0]), new=self._oid(fields[1]))
        if update.is_create and update.is_delete:
            raise errors.ProtocolError(f"ref update of {update.ref} has two zero object names")
        if update.ref in self._refs:
            raise errors.ProtocolError(f"ref {update.ref} is updated twice")
        self._refs.add(update.ref)
        self._updates.append(update)

    def _take_capabilities(self, line: bytes) -> bytes:
        if CAPABILITIES_SEPARATOR not in line:
            return line
        line, _, raw = line.partition(CAPABILITIES_SEPARATOR)
        tokens = raw.split()
        if len(tokens) > MAX_CAPABILITIES:
            raise errors.ProtocolError(f"more than {MAX_CAPABILITIES} capabilities")
        if not all(_CAPABILITY.fullmatch(token) for token in tokens):
            raise errors.ProtocolError("malformed capability list")
        self._capabilities = tuple(token.decode("ascii") for token in tokens)
        for capability in self._capabilities:
            if capability.startswith("object-format="):
                name = capability.partition("=")[2]
                if name not in OBJECT_FORMAT_LENGTHS:
                    raise errors.ProtocolError(f"unknown object format {name!r}")
                self._oid_length = OBJECT_FORMAT_LENGTHS[name]
        return line

    def _oid(self, raw: bytes) -> str:
        if len(raw) != self._oid_length or not _OID.fullmatch(raw):
            raise errors.ProtocolError(f"malformed object name {raw[:80]!r}")
        return raw.decode("ascii")


def _ref(raw: bytes) -> str:
    if len(raw) > MAX_REF_NAME_LENGTH:
        raise errors.ProtocolError(f"ref name longer than {MAX_REF_NAME_LENGTH} bytes")
    # dulwich implements git check-ref-format; clients only ever push full names under refs/.
    if not raw.startswith(b"refs/") or not dulwich_refs.check_ref_format(dulwich_refs.Ref(raw)):
        raise errors.ProtocolError(f"invalid ref name {raw[:100]!r}")
    return _text(raw, "ref name")


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise errors.ProtocolError(f"{what} is not UTF-8") from error
