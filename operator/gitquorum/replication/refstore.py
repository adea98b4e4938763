"""Reading and writing a replica's refs with git itself.

Refs are written with ``git update-ref --stdin``: one transaction for all updates of a
transaction, with git's own locking, packed-refs handling and ref-name rules, and fsync of
every ref file (``core.fsync`` includes references in the replica's git configuration). A
follower passes the old values it expects, so git refuses an update whose ref is not where
the leader saw it: that is a divergence, caught here rather than applied over.
"""

import asyncio
import contextlib
import os
import pathlib
from collections.abc import AsyncIterator, Iterable

from gitquorum.replication import transactions
from gitquorum.server import spawning

HEAD_PREFIX = "ref: "


async def read_all(runner: spawning.GitRunner, repository: str) -> dict[str, str]:
    """Every ref under ``refs/`` and the object it names."""
    output = await runner.run(
        ["for-each-ref", "--format=%(objectname) %(refname)", "refs/"],
        env={"GIT_DIR": repository},
    )
    refs: dict[str, str] = {}
    for line in output.decode().splitlines():
        object_id, _, ref = line.partition(" ")
        refs[ref] = object_id
    return refs


async def read_head(runner: spawning.GitRunner, repository: str) -> str:
    """The ref HEAD names."""
    output = await runner.run(["symbolic-ref", "HEAD"], env={"GIT_DIR": repository})
    return output.decode().strip()


async def set_head(runner: spawning.GitRunner, repository: str, target: str) -> None:
    await runner.run(["symbolic-ref", "HEAD", target], env={"GIT_DIR": repository})


async def apply(
    runner: spawning.GitRunner,
    repository: str,
    changes: Iterable[transactions.Change],
    *,
    check_old: bool,
) -> None:
    """Applies all changes in one ref transaction; raises GitFailed and changes nothing if
    any ref is not at its old value (with ``check_old``) or cannot be written."""
    changes = list(changes)
    if not changes:
        return
    if check_old and await asyncio.to_thread(write_loose, pathlib.Path(repository), changes):
        return
    lines = [_line(change, check_old=check_old) for change in changes]
    async with runner.start(
        ["update-ref", "--stdin"], env={"GIT_DIR": repository}, stdin=_once("".join(lines))
    ) as git:
        async for _ in git.output():
            pass


def _line(change: transactions.Change, *, check_old: bool) -> str:
    old = f" {change.old}" if check_old else ""
    if change.deletes:
        return f"delete {change.ref}{old}\n"
    return f"update {change.ref} {change.new}{old}\n"


async def _once(text: str) -> AsyncIterator[bytes]:
    yield text.encode()


def differences(current: dict[str, str], wanted: dict[str, str]) -> list[transactions.Change]:
    """The changes that turn ref state ``current`` into ``wanted``."""
    changes = [
        transactions.Change(ref, current.get(ref, transactions.ZERO_ID), object_id)
        for ref, object_id in wanted.items()
        if current.get(ref) != object_id
    ]
    changes += [
        transactions.Change(ref, object_id, transactions.ZERO_ID)
        for ref, object_id in current.items()
        if ref not in wanted
    ]
    return changes


def write_loose(repository: pathlib.Path, changes: list[transactions.Change]) -> bool:
    """Moves refs by writing their loose files as git does; False: left to git, unchanged.

    A follower applies a transaction on every push, and starting ``git update-ref`` costs
    more than the write itself. The common case (creates and updates, no symbolic refs) is
    done here the way git does it: every ref's ``.lock`` file is created exclusively, its old
    value checked (the loose file's, else packed-refs' entry, which a loose file shadows) and
    the new one written and fsynced, and only then are the locks renamed over the refs.
    Anything else, and any surprise on the way, goes to git, which has the full rules and the
    right error messages. Maintenance packs refs under the same lock as this runs under.
    """
    if any(c.deletes for c in changes):
        return False
    packed: dict[str, str] | None = None
    read_packed = False
    locks: list[tuple[pathlib.Path, pathlib.Path]] = []
    try:
        for change in changes:
            path = repository / change.ref
            current = _current(path)
            if current == _ABSENT:
                if not read_packed:
                    packed, read_packed = _packed(repository), True
                current = _packed_value(packed, change.ref)
            if current != change.old:
                _remove(lock for lock, _ in locks)
                return False
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = path.with_name(path.name + ".lock")
            descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            locks.append((lock, path))
            try:
                os.write(descriptor, f"{change.new}\n".encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
    except OSError:
        _remove(lock for lock, _ in locks)
        return False
    except BaseException:
        _remove(lock for lock, _ in locks)
        raise
    for lock, path in locks:
        os.replace(lock, path)
    for directory in {path.parent for _, path in locks}:
        transactions.fsync_directory(directory)
    return True


_ABSENT = "absent"


def _current(path: pathlib.Path) -> str | None:
    """The object a loose ref names, ``_ABSENT`` without a file, None if it is not a plain
    ref."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return _ABSENT
    except OSError:
        return None
    value = text.strip()
    return value if len(value) in (40, 64) and not value.startswith("ref:") else None


MAX_PACKED_REFS_BYTES = 64 * 1024
"""Above this (some 700 refs) reading packed-refs here costs more than starting git."""


def _packed(repository: pathlib.Path) -> dict[str, str] | None:
    """packed-refs as a map (empty without the file); None when it is large, or a line is
    not ``<id> <ref>``, a peeled ``^<id>`` or the header: git decides then."""
    path = repository / "packed-refs"
    try:
        if path.stat().st_size > MAX_PACKED_REFS_BYTES:
            return None
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    refs: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(("#", "^")):
            continue
        object_id, _, ref = line.partition(" ")
        if len(object_id) not in (40, 64) or not ref.startswith("refs/"):
            return None
        refs[ref] = object_id
    return refs


def _packed_value(packed: dict[str, str] | None, ref: str) -> str | None:
    """A ref's packed value, ZERO_ID if it has none; None when git must decide: packed-refs
    unread, or a packed ref that is a directory of this one or lies below it (a conflict git
    refuses, and that no loose file would show here)."""
    if packed is None:
        return None
    parts = ref.split("/")
    if any("/".join(parts[:n]) in packed for n in range(2, len(parts))):
        return None
    if any(name.startswith(ref + "/") for name in packed):
        return None
    return packed.get(ref, transactions.ZERO_ID)


def _remove(paths: Iterable[pathlib.Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
