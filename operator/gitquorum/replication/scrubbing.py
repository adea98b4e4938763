"""Integrity: reading every object back, and repairing what does not read back right.

Replication copies whatever lands on a disk, silent corruption included, and nothing reads
an object again until a client asks for it. A scrub does: ``git fsck --full`` reads every
byte of every pack and loose object once, inflates each object and checks it against its
name (the hash of its content), then checks that every ref and every object reaches only
objects that exist. ``--strict`` too when pushes were checked strictly (receive-pack's
``fsckObjects``), so that what was accepted passes. ``--connectivity-only`` would not do: it
reads no object's bytes.

What fsck reports is sorted (``parse``) into damaged packs and loose objects (a file whose
bytes are wrong), missing objects (a ref or object names one that is not there), files
derived from the objects (multi-pack index, commit-graph: rewritten by the next
maintenance), and objects that read back right but break a content rule, which every copy
shares, so they are not damage. A repair (``Repairer``) moves the damaged files aside into
``DIR/damaged/<time>/`` (kept for a look), drops the derived files, then fetches what is
missing from a healthy peer over the replication port into a scratch repository, where
git's index-pack checks every object it receives against its name, and installs the pack it
got, pack first and index last. Objects below a missing commit show up as missing only once
the commit is back, so it looks again, a few rounds. If damage remains that names no file,
it rebuilds: every pack and loose object present is moved aside and everything the refs
reach is fetched. The caller scrubs again to verify.
"""

import asyncio
import dataclasses
import logging
import os
import pathlib
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

from gitquorum import errors
from gitquorum.replication import transactions
from gitquorum.server import spawning

log = logging.getLogger(__name__)

_PACK = re.compile(r"\b(pack-[0-9a-f]{40,64})\.(?:pack|idx|rev|bitmap|mtimes)\b")
_LOOSE = re.compile(r"objects/([0-9a-f]{2})/([0-9a-f]{38}|[0-9a-f]{62})\b")
_MISSING = re.compile(r"^missing (?:blob|tree|commit|tag) ([0-9a-f]{40,64})\b")
_BROKEN_TARGET = re.compile(r"^\s+to\s+(?:blob|tree|commit|tag)\s+([0-9a-f]{40,64})\b")
_INVALID_POINTER = re.compile(r"invalid (?:sha1|object) pointer ([0-9a-f]{40,64})\b")
_CONTENT_RULE = re.compile(r"^(?:error|warning) in (?:blob|tree|commit|tag) [0-9a-f]{40,64}: ")
_DERIVED = ("commit-graph", "multi-pack-index")
_NOISE = ("notice:", "Checking ", "checking ", "dangling ")
PACK_SUFFIXES = (".pack", ".idx", ".rev", ".bitmap", ".mtimes", ".keep", ".promisor")
DERIVED_FILES = ("pack/multi-pack-index", "info/commit-graph", "info/commit-graphs")
MAX_REPORTED_LINES = 20
"""Lines of fsck kept for the status and the log: enough to see what is wrong."""
MISSING_ROUNDS = 4
"""Looks for missing objects in one repair: objects below a missing commit show only once
the commit is back; after this many rounds a rebuild is cheaper than more looks."""
KEPT_QUARANTINES = 3
"""Damaged files are kept for a look, from this many repairs."""


@dataclasses.dataclass(frozen=True)
class Findings:
    """What a scrub found."""

    bad_packs: frozenset[str] = frozenset()
    """Packs (``pack-<hash>``) whose bytes do not read back right."""
    bad_loose: frozenset[str] = frozenset()
    """Loose objects (by id) whose file does not read back right."""
    missing: frozenset[str] = frozenset()
    """Objects a ref or an object names that are not there."""
    derived: bool = False
    """The multi-pack index or the commit-graph does not match the objects."""
    unattributed: tuple[str, ...] = ()
    """Errors that name no file nor object: damage of unknown extent."""
    content: tuple[str, ...] = ()
    """Objects that read back right but break a content rule (the same on every copy)."""

    @property
    def attributed(self) -> bool:
        """Whether the damage names its files or objects (then the errors that name none,
        such as ``inflate: data stream error``, are about those)."""
        return bool(self.bad_packs or self.bad_loose or self.missing or self.derived)

    @property
    def damaged(self) -> bool:
        return self.attributed or bool(self.unattributed)

    def summary(self) -> str:
        parts = []
        if self.bad_packs:
            names = ", ".join(sorted(self.bad_packs))
            parts.append(f"{len(self.bad_packs)} damaged pack(s) ({names})")
        if self.bad_loose:
            parts.append(f"{len(self.bad_loose)} damaged loose object(s)")
        if self.missing:
            shown = ", ".join(sorted(self.missing)[:3])
            parts.append(f"{len(self.missing)} missing object(s) ({shown})")
        if self.derived:
            parts.append("multi-pack index or commit-graph out of step")
        if self.unattributed and not self.attributed:
            parts.append(f"errors: {' | '.join(self.unattributed[:3])}")
        if self.content:
            parts.append(f"{len(self.content)} content warning(s)")
        return "; ".join(parts) or "no damage"


def parse(output: str, *, returncode: int) -> Findings:
    """Sorts fsck's stdout and stderr (interleaved or not) into findings."""
    bad_packs: set[str] = set()
    bad_loose: set[str] = set()
    missing: set[str] = set()
    derived = False
    unattributed: list[str] = []
    content: list[str] = []
    for raw in output.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.startswith(_NOISE):
            continue
        if (match := _MISSING.match(line)) or (match := _BROKEN_TARGET.match(line)):
            missing.add(match.group(1))
        elif line.startswith("broken link from"):
            continue  # its target follows on the next line
        elif _CONTENT_RULE.match(line):
            content.append(line)
        elif packs := _PACK.findall(line):
            bad_packs.update(packs)
        elif loose := _LOOSE.search(line):
            bad_loose.add(loose.group(1) + loose.group(2))
        elif match := _INVALID_POINTER.search(line):
            missing.add(match.group(1))
        elif any(name in line for name in _DERIVED):
            derived = True
        elif line.startswith(("error", "fatal", "bad ")) or "corrupt" in line:
            unattributed.append(line)
    found = bad_packs or bad_loose or missing or derived or unattributed or content
    if returncode != 0 and not found:
        unattributed.append(f"git fsck exited with status {returncode}")
    return Findings(
        bad_packs=frozenset(bad_packs),
        bad_loose=frozenset(bad_loose),
        missing=frozenset(missing),
        derived=derived,
        unattributed=tuple(unattributed[:MAX_REPORTED_LINES]),
        content=tuple(content[:MAX_REPORTED_LINES]),
    )


async def scrub(
    runner: spawning.GitRunner, repository: pathlib.Path, *, strict: bool, full: bool = True
) -> Findings:
    """Reads every object back (``full``), or only checks what is missing."""
    command = ["fsck", "--no-dangling", "--no-progress"]
    command += ["--full", *(["--strict"] if strict else [])] if full else ["--connectivity-only"]
    chunks: list[bytes] = []  # fsck names what is missing on stdout, then fails
    try:
        async with runner.start(command, env={"GIT_DIR": str(repository)}) as git:
            async for chunk in git.output():
                chunks.append(chunk)
            stderr = git.stderr
    except errors.GitFailed as error:
        text = b"".join(chunks).decode(errors="replace") + "\n" + error.stderr
        return parse(text, returncode=error.returncode)
    return parse(b"".join(chunks).decode(errors="replace") + "\n" + stderr, returncode=0)


# -- repair -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    """A peer to fetch objects from: its git URL on the replication port."""

    replica: str
    url: str


class Repairer:
    """Puts a damaged repository's objects right from a peer's."""

    def __init__(
        self,
        *,
        runner: spawning.GitRunner,
        repository: pathlib.Path,
        workspace: pathlib.Path,
        damaged: pathlib.Path,
        token: str,
    ) -> None:
        self._runner = runner
        self.repository = repository
        self._workspace = workspace
        self._damaged = damaged
        self._token = token

    async def repair(self, findings: Findings, source: Source, *, tips: Sequence[str]) -> list[str]:
        """Moves damaged files aside and fetches what is missing from ``source``; returns
        what it did, for the log. Raises GitFailed when the source cannot serve it."""
        done = []
        moved = await asyncio.to_thread(self._set_aside, findings.bad_packs, findings.bad_loose)
        if moved or findings.derived:
            done.append(f"set aside {moved} damaged file(s) and the derived indexes")
        for _ in range(MISSING_ROUNDS):
            missing = await scrub(self._runner, self.repository, strict=False, full=False)
            if not missing.missing:
                break
            await self._fetch(source, sorted(missing.missing))
            done.append(f"fetched {len(missing.missing)} missing object(s) from {source.replica}")
        if not findings.attributed:
            done.append(await self.rebuild(source, tips=tips))
        return done

    async def rebuild(self, source: Source, *, tips: Sequence[str]) -> str:
        """Moves every object present aside and fetches everything the refs reach."""
        packs, loose = await asyncio.to_thread(self._everything)
        moved = await asyncio.to_thread(self._set_aside, packs, loose)
        await self._fetch(source, list(dict.fromkeys(tips)))
        return f"rebuilt: set aside {moved} file(s), fetched what {len(tips)} ref(s) reach"

    def _everything(self) -> tuple[set[str], set[str]]:
        objects = self.repository / "objects"
        packs = {
            name[: -len(".pack")]
            for name in os.listdir(objects / "pack")
            if name.startswith("pack-") and name.endswith(".pack")
        }
        loose = {
            directory.name + entry.name
            for directory in os.scandir(objects)
            if re.fullmatch(r"[0-9a-f]{2}", directory.name)
            for entry in os.scandir(directory.path)
        }
        return packs, loose

    def _set_aside(self, packs: Iterable[str], loose: Iterable[str]) -> int:
        """Moves the files aside, and drops the indexes derived from them."""
        target = self._damaged / time.strftime("%Y%m%dT%H%M%S")
        objects = self.repository / "objects"
        moved = 0
        for base in sorted(packs):
            # The index first: without it git no longer uses the pack.
            for suffix in (".idx", *(s for s in PACK_SUFFIXES if s != ".idx")):
                moved += _move(objects / "pack" / f"{base}{suffix}", target)
        for object_id in sorted(loose):
            moved += _move(objects / object_id[:2] / object_id[2:], target)
        for derived in DERIVED_FILES:
            path = objects / derived
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                for sibling in path.parent.glob(path.name + "*"):
                    sibling.unlink(missing_ok=True)
        transactions.fsync_directory(objects / "pack")
        self._trim_kept()
        return moved

    def _trim_kept(self) -> None:
        if not self._damaged.is_dir():
            return
        kept = sorted(self._damaged.iterdir())
        for old in kept[:-KEPT_QUARANTINES]:
            shutil.rmtree(old, ignore_errors=True)

    async def _fetch(self, source: Source, objects: Sequence[str]) -> None:
        """Fetches ``objects`` and all they reach into a scratch repository (which has
        nothing, so the source sends everything), then installs its packs here."""
        scratch = self._workspace / "repair.git"
        await asyncio.to_thread(shutil.rmtree, scratch, True)
        await self._runner.run(["init", "--quiet", "--bare", str(scratch)])
        env: Mapping[str, str] = {
            "GIT_DIR": str(scratch),
            # The token travels in the environment, not on a command line others can read.
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {self._token}",
        }
        command = [
            *("-c", "fetch.unpackLimit=1"),  # one pack to install, never loose objects
            *("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--stdin", source.url),
        ]
        try:
            async with self._runner.start(command, env=env, stdin=_lines(objects)) as git:
                async for _ in git.output():
                    pass
            files = transactions.pack_files(scratch / "objects" / "pack")
            await asyncio.to_thread(
                transactions.install,
                scratch / "objects" / "pack",
                self.repository / "objects" / "pack",
                files,
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)


def _move(path: pathlib.Path, target: pathlib.Path) -> int:
    if not path.exists():
        return 0
    target.mkdir(parents=True, exist_ok=True)
    shutil.move(str(path), target / path.name)
    return 1


async def _lines(values: Sequence[str]) -> AsyncIterator[bytes]:
    yield "".join(f"{value}\n" for value in values).encode()
