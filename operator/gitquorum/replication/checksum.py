"""The checksum of a repository's ref state, as replicas compare it.

Spokes compares replicas by a checksum over their refs; so do we. Each ref contributes the
SHA-256 of ``name NUL object-id``; the checksum is the XOR of all contributions. XOR makes
it incremental (a ref update takes out the old contribution and puts in the new one, so a
commit costs one hash per updated ref, not a walk over all refs) and independent of order.
Two replicas at the same generation with different checksums have diverged.
"""

import hashlib
from collections.abc import Iterable, Mapping

ZERO_ID = "0" * 40
EMPTY = "0" * 64
"""The checksum of a repository without refs."""


def _contribution(ref: str, object_id: str) -> int:
    digest = hashlib.sha256(ref.encode() + b"\0" + object_id.encode()).digest()
    return int.from_bytes(digest, "big")


def _hex(value: int) -> str:
    return f"{value:064x}"


def of(refs: Mapping[str, str]) -> str:
    """The checksum of a whole ref state (ref name -> object id)."""
    value = 0
    for ref, object_id in refs.items():
        value ^= _contribution(ref, object_id)
    return _hex(value)


def updated(checksum: str, changes: Iterable[tuple[str, str, str]]) -> str:
    """The checksum after ``(ref, old, new)`` changes; an all-zero id means absent."""
    value = int(checksum, 16)
    for ref, old, new in changes:
        if set(old) != {"0"}:
            value ^= _contribution(ref, old)
        if set(new) != {"0"}:
            value ^= _contribution(ref, new)
    return _hex(value)
