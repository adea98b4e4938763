"""Carrying out a maintenance plan with git, safely next to pushes, and reading the figures
the plan is made from.

Every step is git's own and runs while the replica goes on serving and voting:

- ``git repack`` writes new packs under temporary names and deletes only the packs it
  rewrote, after the new ones are in place; packs that arrive meanwhile (a push, a
  transaction installed, a copy) are not touched. Readers that hold an old pack open keep
  reading it. So a repack never waits for a push nor makes one wait;
- ``git pack-refs`` and ``git reflog expire`` take the same ref locks as a ref update, and a
  follower applying a transaction, or the leader's receive-pack, would fail rather than wait
  on one: they run under the replica's lock for ref changes, which they hold briefly
  (milliseconds for a few thousand refs; ``refs_lock``);
- ``git commit-graph write`` adds a file beside the objects and locks only its own chain.

Nothing is ever removed but by the full repack's cruft expiration: objects that no root
reaches and that were last written, or found unreachable, longer than ``prune_expiry`` ago
(``expire_before``). No ``git prune`` and no ``git gc``: ``prune`` also deletes temporary
directories, among them receive-pack's quarantine of a push in flight. The roots of that
repack are not the repository's refs alone: it runs in a *view*, a directory with its own
refs and the repository's object directory (``GIT_OBJECT_DIRECTORY``), whose refs are the
refs as git and the store see them when it starts plus every value replaced within the
history window (``history``). An object a push in flight may lean on is therefore reachable
in the view for the whole repack, whatever the refs do meanwhile; objects that arrive during
it come in packs newer than ``expire_before``.
"""

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from gitquorum.replication import maintenance
from gitquorum.server import spawning

log = logging.getLogger(__name__)

_LOOSE_DIRECTORY = re.compile(r"[0-9a-f]{2}")
_LOOSE_NAME = re.compile(r"[0-9a-f]{38}|[0-9a-f]{62}")
MIDX_SIGNATURE = b"MIDX"
MIDX_PACK_COUNT = slice(8, 12)
GRAPH_SIGNATURE = b"CGPH"
GRAPH_HEADER_BYTES = 8
GRAPH_CHUNK_ENTRY_BYTES = 12
BLOOM_CHUNKS = {b"BIDX", b"BDAT"}
# A commit-graph names a few chunks; more in its table is not a graph we understand.
MAX_GRAPH_CHUNKS = 64
STALE_REPACK_TEMPORARY = maintenance.HOUR
"""A repack's temporary file this old belongs to a repack that was killed."""
KEEP_REF_PREFIX = "refs/keep/"


def collect(repository: pathlib.Path, *, stale_before: float) -> maintenance.Stats:
    """The figures of a repository's objects and refs; blocks (run it in a thread)."""
    objects = repository / "objects"
    packs = _packs(objects / "pack")
    loose, loose_bytes, stale = _loose(objects, stale_before)
    graph, bloom = _commit_graph(objects / "info")
    loose_refs = sum(
        1
        for _, _, files in os.walk(repository / "refs")
        for name in files
        if not name.endswith(".lock")
    )
    return maintenance.Stats(
        packs=packs.count,
        cruft_packs=packs.cruft,
        pack_bytes=packs.size,
        midx_packs=_midx_packs(objects / "pack" / "multi-pack-index"),
        has_bitmap=packs.bitmap,
        loose_objects=loose,
        loose_bytes=loose_bytes,
        stale_loose_objects=stale,
        has_commit_graph=graph,
        has_bloom_filters=bloom,
        loose_refs=loose_refs,
        packed_refs_bytes=_size(repository / "packed-refs"),
        has_reflogs=any(files for _, _, files in os.walk(repository / "logs")),
    )


@dataclasses.dataclass
class _Packs:
    count: int = 0
    cruft: int = 0
    size: int = 0
    bitmap: bool = False


def _packs(directory: pathlib.Path) -> _Packs:
    found = _Packs()
    try:
        names = set(os.listdir(directory))
    except FileNotFoundError:
        return found
    for name in names:
        if name.endswith(".bitmap"):
            found.bitmap = True
        if name.startswith("pack-") and name.endswith(".pack"):
            found.count += 1
            found.cruft += name[: -len(".pack")] + ".mtimes" in names
            found.size += _size(directory / name)
    return found


def _loose(objects: pathlib.Path, stale_before: float) -> tuple[int, int, int]:
    count = size = stale = 0
    try:
        directories = [e for e in os.scandir(objects) if _LOOSE_DIRECTORY.fullmatch(e.name)]
    except FileNotFoundError:
        return 0, 0, 0
    for directory in directories:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(directory.path):
                if not _LOOSE_NAME.fullmatch(entry.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    status = entry.stat()
                    count += 1
                    size += status.st_size
                    stale += status.st_mtime < stale_before
    return count, size, stale


def _size(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _midx_packs(path: pathlib.Path) -> int | None:
    try:
        with path.open("rb") as midx:
            header = midx.read(MIDX_PACK_COUNT.stop)
    except FileNotFoundError:
        return None
    if len(header) < MIDX_PACK_COUNT.stop or not header.startswith(MIDX_SIGNATURE):
        return None
    return int.from_bytes(header[MIDX_PACK_COUNT], "big")


def _commit_graph(info: pathlib.Path) -> tuple[bool, bool]:
    """Whether a commit-graph exists, and whether its newest file has Bloom filters."""
    chain = info / "commit-graphs" / "commit-graph-chain"
    newest: pathlib.Path | None = None
    with contextlib.suppress(FileNotFoundError):
        hashes = chain.read_text().split()
        if hashes:
            newest = info / "commit-graphs" / f"graph-{hashes[-1]}.graph"
    if newest is None and (info / "commit-graph").is_file():
        newest = info / "commit-graph"
    if newest is None:
        return False, False
    try:
        with newest.open("rb") as graph:
            header = graph.read(GRAPH_HEADER_BYTES)
            if len(header) < GRAPH_HEADER_BYTES or not header.startswith(GRAPH_SIGNATURE):
                return True, False
            chunks = min(header[6], MAX_GRAPH_CHUNKS)
            table = graph.read(GRAPH_CHUNK_ENTRY_BYTES * chunks)
    except FileNotFoundError:
        return False, False
    ids = {table[i : i + 4] for i in range(0, len(table), GRAPH_CHUNK_ENTRY_BYTES)}
    return True, ids >= BLOOM_CHUNKS


# -- running a plan -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Roots:
    """What the full repack counts as reachable: the refs and HEAD as the store holds them,
    and the values replaced within the history window; all taken at one moment, with the
    verdict on pruning of that moment (``maintenance.may_prune``)."""

    refs: Mapping[str, str]
    head: str
    replaced: Sequence[str]
    no_prune: str | None = None
    """Why nothing may expire now; None when unreachable objects may."""


@dataclasses.dataclass
class Result:
    """What a run did: each task with its seconds, and whether the full repack pruned."""

    tasks: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    pruned: bool = False
    no_prune: str | None = None
    """Why the full repack kept every unreachable object, when it did."""

    def describe(self) -> str:
        done = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.tasks) or "nothing"
        if self.no_prune is not None:
            done += f" (nothing expired: {self.no_prune})"
        return done


RefsLock = Callable[[], contextlib.AbstractAsyncContextManager[object]]


class Housekeeper:
    """Runs maintenance plans on one repository."""

    def __init__(
        self, *, runner: spawning.GitRunner, repository: pathlib.Path, workspace: pathlib.Path
    ) -> None:
        self._runner = runner
        self.repository = repository
        self._workspace = workspace
        self._env = {"GIT_DIR": str(repository)}

    async def run(
        self,
        plan: maintenance.Plan,
        *,
        refs_lock: RefsLock,
        roots: Callable[[], Roots],
        expire_before: float | None,
    ) -> Result:
        """Carries ``plan`` out; ``expire_before`` (wall-clock seconds) lets the full repack
        expire unreachable objects last written before it. Raises GitFailed."""
        result = Result()
        if plan.pack_refs or plan.expire_reflogs:
            async with refs_lock():
                if plan.pack_refs:
                    await self._timed(result, "pack-refs", ["pack-refs", "--all"])
                if plan.expire_reflogs:
                    await self._timed(result, "expire-reflogs", ["reflog", "expire", "--all"])
        if plan.repack is not None:
            await asyncio.to_thread(self._remove_stale_temporaries)
        if plan.repack is maintenance.Repack.GEOMETRIC:
            command = ["repack", "--geometric=2", "-d", "-l", "-q"]
            await self._timed(result, plan.repack.value, [*command, *_INDEXES])
        elif plan.repack is maintenance.Repack.FULL:
            started = time.monotonic()
            await self._full_repack(result, roots, expire_before)
            result.tasks.append((plan.repack.value, time.monotonic() - started))
        if plan.commit_graph:
            split = "--split=replace" if plan.replace_graph_chain or result.pruned else "--split"
            command = ["commit-graph", "write", "--reachable", "--changed-paths", split]
            await self._timed(result, "commit-graph", command)
        return result

    async def _timed(self, result: Result, name: str, args: list[str]) -> None:
        started = time.monotonic()
        await self._runner.run(args, env=self._env)
        result.tasks.append((name, time.monotonic() - started))

    async def _full_repack(
        self, result: Result, roots: Callable[[], Roots], expire_before: float | None
    ) -> None:
        # git's refs first, then the store's: a ref git moved in between (the leader's
        # receive-pack) had its old value recorded in the history before it moved.
        on_disk = await self._refs_on_disk()
        taken = roots()
        stale = [value for ref, value in on_disk.items() if taken.refs.get(ref) != value]
        replaced = await self._existing([*taken.replaced, *stale])
        view = self._workspace / "view"
        await asyncio.to_thread(_write_view, view, taken.refs, taken.head, replaced)
        command = ["repack", "--cruft", "-d", "-l", "-q", *_INDEXES]
        result.no_prune = taken.no_prune if expire_before is not None else "no expiry given"
        if expire_before is not None and taken.no_prune is None:
            command.append(f"--cruft-expiration=@{int(expire_before)}")
            result.pruned = True
        env = {"GIT_DIR": str(view), "GIT_OBJECT_DIRECTORY": str(self.repository / "objects")}
        try:
            await self._runner.run(command, env=env)
        finally:
            await asyncio.to_thread(shutil.rmtree, view, True)

    async def _refs_on_disk(self) -> dict[str, str]:
        output = await self._runner.run(
            ["for-each-ref", "--format=%(objectname) %(refname)", "refs/"], env=self._env
        )
        refs = {}
        for line in output.decode().splitlines():
            object_id, _, ref = line.partition(" ")
            refs[ref] = object_id
        return refs

    async def _existing(self, object_ids: Sequence[str]) -> list[str]:
        """The objects of ``object_ids`` the repository holds (a missing root fails a repack)."""
        if not object_ids:
            return []
        command = ["cat-file", "--batch-check=%(objectname)"]
        async with self._runner.start(command, env=self._env, stdin=_lines(object_ids)) as git:
            output = b"".join([chunk async for chunk in git.output()])
        present = [line for line in output.decode().splitlines() if not line.endswith(" missing")]
        return list(dict.fromkeys(present))

    def _remove_stale_temporaries(self) -> None:
        """Temporary packs of a repack that was killed (its turn lost, the replica stopped)."""
        cutoff = time.time() - STALE_REPACK_TEMPORARY
        pack_directory = self.repository / "objects" / "pack"
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(pack_directory):
                if entry.name.startswith(".tmp-") and entry.stat().st_mtime < cutoff:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


_INDEXES = ["--write-midx", "--write-bitmap-index"]
"""The multi-pack index and its reachability bitmap: one lookup for all packs, and
fetches and clones that count objects without walking the history."""


async def _lines(values: Sequence[str]) -> AsyncIterator[bytes]:
    yield "".join(f"{value}\n" for value in values).encode()


def _write_view(
    view: pathlib.Path, refs: Mapping[str, str], head: str, replaced: Sequence[str]
) -> None:
    """A git directory whose refs are ``refs`` plus ``refs/keep/<n>`` for each replaced value."""
    shutil.rmtree(view, ignore_errors=True)
    (view / "refs").mkdir(parents=True)
    (view / "HEAD").write_text(f"ref: {head}\n")
    (view / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
    lines = [f"{object_id} {ref}\n" for ref, object_id in sorted(refs.items())]
    lines += [f"{object_id} {KEEP_REF_PREFIX}{n}\n" for n, object_id in enumerate(replaced)]
    (view / "packed-refs").write_text("".join(lines))
