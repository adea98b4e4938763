"""Making the git bundle of a backup from a live repository.

A backup is of one applied state of the repository (a :class:`Snapshot`: its generation, refs
and HEAD, read together), but pushes go on while the bundle is made, and ``git bundle create
--all`` in the live repository would bundle whatever the refs are by then. So the bundle is made
in a scratch bare repository that borrows the live one's objects through
``objects/info/alternates`` and holds exactly the snapshot's refs: no object is copied, and
the refs cannot move. Objects the snapshot reaches stay in the live repository while we read
them, because maintenance never drops an object a ref reached within its expiry.

An incremental bundle excludes the base backup's ref tips (``^<oid>``): git leaves out
everything they reach and names the excluded boundary commits as the bundle's prerequisites,
which a restore must already hold. The bundle's header (gitformat-bundle(5)) is read back for
the manifest: a signature line, capabilities (v3), ``-<oid>`` prerequisite lines,
``<oid> <ref>`` lines, a blank line, then the pack.
"""

import asyncio
import dataclasses
import hashlib
import pathlib
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import BinaryIO

from gitquorum import errors
from gitquorum.replication import refstore
from gitquorum.server import spawning

BUNDLE_NAME = "repository.bundle"
NO_HEAD = "refs/gitquorum/unborn-head"
SNAPSHOT_NAME = "snapshot.git"

SIGNATURES = (b"# v2 git bundle\n", b"# v3 git bundle\n")
PREREQUISITE = b"-"
CAPABILITY = b"@"

MAX_HEADER_BYTES = 64 * 1024 * 1024
"""The header lists every ref of the bundle and is read into memory: this bounds what a
damaged or foreign file can make us allocate. Some 600 000 refs fit."""

READ_SIZE = 1024 * 1024

_OBJECT_ID = re.compile(rb"[0-9a-f]{40}")


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One applied state of a repository, the state a backup records."""

    generation: int
    """The replication generation the refs were read at."""
    head: str | None
    """The ref HEAD names, None to leave HEAD out of the bundle."""
    refs: Mapping[str, str]
    """Every ref and the object id it names."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A bundle file made and verified by git."""

    path: pathlib.Path
    size: int
    """In bytes."""
    sha256: str
    """Of the whole file, in hex."""
    prerequisites: tuple[str, ...]
    """The commits a repository must hold before the bundle applies to it."""


@dataclasses.dataclass(frozen=True)
class Header:
    """What a bundle's header says."""

    version: int
    prerequisites: tuple[str, ...]
    refs: tuple[tuple[str, str], ...]
    """``(object id, ref name)`` pairs in the bundle's order (HEAD among them, if bundled)."""


async def create(
    runner: spawning.GitRunner,
    *,
    repository: pathlib.Path,
    snapshot: Snapshot,
    scratch: pathlib.Path,
    exclude: Iterable[str],
) -> Bundle | None:
    """The bundle of ``snapshot`` less what ``exclude`` reaches, in ``scratch`` (made, and
    left for the caller to remove); None when it would hold no object."""
    snapshot_repository = await _snapshot_repository(
        runner, repository=repository, snapshot=snapshot, scratch=scratch
    )
    env = {"GIT_DIR": str(snapshot_repository)}
    negatives = [f"^{oid}\n" for oid in await _existing_commits(runner, env=env, oids=exclude)]
    path = scratch / BUNDLE_NAME
    try:
        command = ["bundle", "create", "--quiet", str(path), "--all", "--stdin"]
        await _run(runner, command, env=env, stdin=negatives)
    except errors.GitFailed:
        # git refuses to write a bundle without refs, and says so only in English: ask git
        # instead whether any object is new, and if one is, the refusal was something else.
        if not await _anything_new(runner, env=env, negatives=negatives):
            return None
        raise
    await runner.run(["bundle", "verify", "--quiet", str(path)], env=env)
    size, digest = await asyncio.to_thread(_measure, path)
    header = await asyncio.to_thread(read_header, path)
    return Bundle(path=path, size=size, sha256=digest, prerequisites=header.prerequisites)


async def _snapshot_repository(
    runner: spawning.GitRunner,
    *,
    repository: pathlib.Path,
    snapshot: Snapshot,
    scratch: pathlib.Path,
) -> pathlib.Path:
    """A bare repository with the snapshot's refs over the live repository's objects."""
    target = scratch / SNAPSHOT_NAME
    scratch.mkdir(parents=True, exist_ok=True)
    await runner.run(["init", "--quiet", "--bare", str(target)])
    objects = (repository / "objects").resolve()
    (target / "objects" / "info" / "alternates").write_text(f"{objects}\n")
    # update-ref checks each object exists, so a snapshot whose objects are gone fails here.
    changes = refstore.differences({}, dict(snapshot.refs))
    await refstore.apply(runner, str(target), changes, check_old=False)
    if snapshot.head is not None:
        await refstore.set_head(runner, str(target), snapshot.head)
    else:
        # HEAD must name something for git to see a repository; a ref no snapshot holds
        # leaves it unborn, so the bundle holds no HEAD.
        await refstore.set_head(runner, str(target), NO_HEAD)
    return target


async def _existing_commits(
    runner: spawning.GitRunner, *, env: Mapping[str, str], oids: Iterable[str]
) -> list[str]:
    """The ``oids`` that exist and peel to a commit: the ones git can exclude from a bundle.

    A base's tip that is gone (history dropped and pruned since) cannot be a prerequisite;
    leaving it out only makes the bundle larger."""
    wanted = sorted(set(oids))
    if not wanted:
        return []
    lines = [f"{oid}^{{commit}}\n" for oid in wanted]
    output = await _run(runner, ["cat-file", "--batch-check=%(objecttype)"], env=env, stdin=lines)
    answers = output.decode().splitlines()
    if len(answers) != len(wanted):
        raise errors.BackupError(
            f"git cat-file answered {len(answers)} lines for {len(wanted)} objects"
        )
    return [oid for oid, answer in zip(wanted, answers, strict=True) if answer == "commit"]


async def _anything_new(
    runner: spawning.GitRunner, *, env: Mapping[str, str], negatives: list[str]
) -> bool:
    async with runner.start(
        ["rev-list", "--objects", "--all", "--stdin"], env=env, stdin=_lines(negatives)
    ) as git:
        async for chunk in git.output():
            if chunk:
                # One object is enough; leaving the block kills git before it walks on.
                return True
    return False


async def _run(
    runner: spawning.GitRunner, args: list[str], *, env: Mapping[str, str], stdin: list[str]
) -> bytes:
    async with runner.start(args, env=env, stdin=_lines(stdin)) as git:
        return b"".join([chunk async for chunk in git.output()])


async def _lines(lines: list[str]) -> AsyncIterator[bytes]:
    for start in range(0, len(lines), 4096):
        yield "".join(lines[start : start + 4096]).encode()


def _measure(path: pathlib.Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def read_header(path: pathlib.Path) -> Header:
    """The header of the bundle at ``path``; BackupCorrupt if it is not a v2 or v3 bundle."""
    with path.open("rb") as file:
        return parse_header(file)


def parse_header(file: BinaryIO) -> Header:
    """The header of a bundle read from ``file``, left at the start of the pack."""
    signature = file.readline(len(SIGNATURES[0]) + 1)
    if signature not in SIGNATURES:
        raise errors.BackupCorrupt(f"not a git bundle: it starts {signature[:40]!r}")
    version = SIGNATURES.index(signature) + 2
    prerequisites: list[str] = []
    refs: list[tuple[str, str]] = []
    consumed = len(signature)
    while True:
        line = file.readline(MAX_HEADER_BYTES - consumed + 1)
        consumed += len(line)
        if consumed > MAX_HEADER_BYTES:
            raise errors.BackupCorrupt(f"bundle header exceeds {MAX_HEADER_BYTES} bytes")
        if not line.endswith(b"\n"):
            raise errors.BackupCorrupt("bundle header ends before its blank line")
        if line == b"\n":
            break
        if line.startswith(CAPABILITY) and version == 3 and not refs and not prerequisites:
            continue
        if line.startswith(PREREQUISITE):
            # "-<oid>" optionally followed by a space and the commit's subject.
            oid = line[1:41]
            if not _OBJECT_ID.fullmatch(oid) or line[41:42] not in (b"\n", b" "):
                raise errors.BackupCorrupt(f"malformed bundle prerequisite {line[:80]!r}")
            prerequisites.append(oid.decode())
            continue
        oid, space, ref = line[:-1].partition(b" ")
        if not _OBJECT_ID.fullmatch(oid) or not space or not ref:
            raise errors.BackupCorrupt(f"malformed bundle header line {line[:80]!r}")
        refs.append((oid.decode(), ref.decode("utf-8", "replace")))
    return Header(version=version, prerequisites=tuple(prerequisites), refs=tuple(refs))
