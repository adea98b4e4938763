"""Ref transactions as replicas exchange them, and the pack files that travel with them.

A transaction is what the leader decided for one push: the exact ref updates (old -> new),
the new target of HEAD if it changes, and the pack files of the push's objects. Followers
never re-run the push: they store the files, then apply exactly these updates.

The files of a transaction wait in a staging directory of their own (``transactions/<id>``
in the replica's data directory) until it is applied, when they move into the repository's
``objects/pack``: the pack first and its index last, because git sees a pack only through
its index, so a reader never finds an index without its pack.
"""

import concurrent.futures
import dataclasses
import os
import pathlib
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dulwich import refs as dulwich_refs

from gitquorum import errors
from gitquorum.replication import decisions

ZERO_ID = "0" * 40

# Only git's own pack file names travel; anything else in a message is refused, so a peer
# cannot make us write outside the staging directory or into another part of the repository.
_PACK_FILE = re.compile(r"pack-[0-9a-f]{40,64}\.(pack|idx|rev)")
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TRANSACTION_ID = re.compile(r"[0-9a-f]{32}")
# The index last: once it is in place git uses the pack, so everything else must be there.
_INSTALL_ORDER = {"pack": 0, "rev": 1, "idx": 2}

# A push updating more refs than this is refused by the leader's receive-pack limits long
# before; the bound keeps a peer's message from making us hold an unbounded list.
MAX_UPDATES = 100_000

# A push brings one pack with its index and reverse index; the bound keeps a peer's message
# from listing files without end.
MAX_FILES = 1_000

# Terms, generations, sequence numbers and sizes count up from zero. A value that does not fit
# a signed 64-bit integer is no real state (nor could the operator's status, int64, hold it):
# it is refused, never stored.
MAX_INTEGER = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Change:
    """One ref update: ``old`` and ``new`` object ids, all zeros meaning absent."""

    ref: str
    old: str
    new: str

    @property
    def deletes(self) -> bool:
        return self.new == ZERO_ID


@dataclasses.dataclass(frozen=True)
class PackFile:
    """A file of the push's objects: its name in ``objects/pack`` and its size in bytes."""

    name: str
    size: int


@dataclasses.dataclass(frozen=True)
class Transaction:
    """One decided ref transaction, as proposed by a leader."""

    id: str
    term: int
    generation: int
    """The generation a replica reaches by applying it."""
    seq: int
    """The leader's count of proposals in its term; orders retries of one generation."""
    changes: tuple[Change, ...]
    head: str | None = None
    """The ref HEAD names after this transaction, when the transaction changes it."""
    files: tuple[PackFile, ...] = ()

    @property
    def position(self) -> decisions.Position:
        return decisions.Position(self.term, self.generation, self.seq)

    @property
    def size(self) -> int:
        return sum(file.size for file in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "term": self.term,
            "generation": self.generation,
            "seq": self.seq,
            "changes": [[change.ref, change.old, change.new] for change in self.changes],
            "head": self.head,
            "files": [[file.name, file.size] for file in self.files],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Transaction":
        """Parses a transaction from a peer or the state file, refusing anything unexpected."""
        if not isinstance(data, Mapping):
            kind = type(data).__name__
            raise errors.ReplicationError(f"a transaction is an object, not a {kind}")
        try:
            changes = data["changes"]
            if not isinstance(changes, list) or len(changes) > MAX_UPDATES:
                raise errors.ReplicationError("transaction changes must be a bounded list")
            transaction = cls(
                id=_matching(_TRANSACTION_ID, data["id"], "transaction id"),
                term=_natural(data["term"], "term"),
                generation=_natural(data["generation"], "generation"),
                seq=_natural(data["seq"], "seq"),
                changes=tuple(_change(item) for item in changes),
                head=_head(data.get("head")),
                files=tuple(_pack_file(item) for item in _bounded_list(data.get("files", []))),
            )
        except KeyError as error:
            raise errors.ReplicationError(f"malformed transaction: no field {error}") from error
        except (TypeError, ValueError) as error:
            raise errors.ReplicationError(f"malformed transaction: {error}") from error
        return transaction


def _natural(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INTEGER:
        raise errors.ReplicationError(f"{what} must be an integer from 0 to {MAX_INTEGER}")
    return value


def _matching(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str):
        # Named by its type only: a peer's nested value is never rendered into a message.
        raise errors.ReplicationError(f"malformed {what}: a {type(value).__name__}")
    if not pattern.fullmatch(value):
        raise errors.ReplicationError(f"malformed {what}: {value[:80]!r}")
    return value


def check_id(value: object) -> str:
    """A transaction id from a peer: 32 lowercase hexadecimal digits."""
    return _matching(_TRANSACTION_ID, value, "transaction id")


def _bounded_list(value: object) -> list[object]:
    if not isinstance(value, list) or len(value) > MAX_FILES:
        raise errors.ReplicationError("transaction files must be a bounded list")
    return value


def _change(item: object) -> Change:
    if not isinstance(item, list) or len(item) != 3:
        raise errors.ReplicationError("a change is [ref, old, new]")
    ref, old, new = item
    return Change(
        ref=check_ref_name(ref),
        old=_matching(_OBJECT_ID, old, "object id"),
        new=_matching(_OBJECT_ID, new, "object id"),
    )


def _head(value: object) -> str | None:
    return None if value is None else check_ref_name(value)


def _pack_file(item: object) -> PackFile:
    if not isinstance(item, list) or len(item) != 2:
        raise errors.ReplicationError("a file is [name, size]")
    name, size = item
    return PackFile(name=_matching(_PACK_FILE, name, "pack file name"), size=_natural(size, "size"))


def check_ref_name(value: object) -> str:
    """A ref name from a peer, checked as git would before it reaches ``git update-ref``."""
    if not isinstance(value, str):
        raise errors.ReplicationError(f"malformed ref name: a {type(value).__name__}")
    if not value.startswith("refs/") or " " in value:
        raise errors.ReplicationError(f"malformed ref name: {value[:80]!r}")
    if not dulwich_refs.check_ref_format(dulwich_refs.Ref(value.encode())):
        raise errors.ReplicationError(f"malformed ref name: {value[:80]!r}")
    return value


def pack_files(directory: pathlib.Path) -> list[PackFile]:
    """The pack files of a push in a quarantine's or staging's ``pack`` directory."""
    if not directory.is_dir():
        return []
    found = [
        PackFile(name=path.name, size=path.stat().st_size)
        for path in directory.iterdir()
        if _PACK_FILE.fullmatch(path.name)
    ]
    return sorted(found, key=_install_key)


def _install_key(file: PackFile) -> tuple[int, str]:
    return (_INSTALL_ORDER[file.name.rsplit(".", 1)[1]], file.name)


def link_into(source: pathlib.Path, staging: pathlib.Path, files: Iterable[PackFile]) -> None:
    """Hard-links the files of a push into its staging directory and makes them durable.

    Linking keeps them when git removes its quarantine, at no copying cost.
    """
    fsync_together(link_files(source, staging, files))


def link_files(
    source: pathlib.Path, staging: pathlib.Path, files: Iterable[PackFile]
) -> list[pathlib.Path]:
    """Hard-links the files of a push into its staging directory; returns what must then be
    fsynced for them to be durable (each file and the directory)."""
    staging.mkdir(parents=True, exist_ok=True)
    written = []
    for file in files:
        target = staging / file.name
        if not target.exists():
            os.link(source / file.name, target)
        # Fresh from now on (the quarantine's file is the same inode): maintenance expires
        # unreachable objects by their pack's age, and these reach the refs only later.
        os.utime(target)
        written.append(target)
    return [*written, staging]


def read_files(directory: pathlib.Path, files: Iterable[PackFile]) -> bytes:
    """The files of a small transaction one after the other, as a prepare carries them."""
    parts = []
    for file in files:
        with (directory / file.name).open("rb") as source:
            data = source.read()
        if len(data) != file.size:
            raise errors.ReplicationError(f"{file.name} is {len(data)} bytes, not {file.size}")
        parts.append(data)
    return b"".join(parts)


def install(staging: pathlib.Path, pack_directory: pathlib.Path, files: Iterable[PackFile]) -> None:
    """Moves a transaction's files into the repository, index last, durably."""
    for file in sorted(files, key=_install_key):
        source = staging / file.name
        target = pack_directory / file.name
        if target.exists():
            continue  # installed before a crash, or git moved it there itself
        os.replace(source, target)
    fsync_directory(pack_directory)


def discard(staging: pathlib.Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def fsync_file(path: pathlib.Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(path: pathlib.Path) -> None:
    """Makes renames and new entries in a directory durable."""
    fsync_file(path)


def fsync_together(paths: Sequence[pathlib.Path]) -> None:
    """fsyncs files and directories at once: the file system commits its journal once for
    all of them (one after the other, each fsync waits for a commit of its own)."""
    if len(paths) <= 1:
        for path in paths:
            fsync_file(path)
        return
    list(_FSYNCS.map(fsync_file, paths))  # the list re-raises the first failure here


# fsyncs of one transaction's files run side by side; a few threads are enough for that.
_FSYNCS = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fsync")
