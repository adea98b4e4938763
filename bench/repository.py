"""A generated benchmark repository: deterministic, at least 30 MB and 25k objects, cached.

The history is written with ``git fast-import`` from a seeded random generator, so every run
on every machine benchmarks the same objects: a tree of text files in directories, commits
that rewrite parts of a few files each, an occasional binary asset, and a ``base`` branch
some commits behind ``main`` for the fetch benchmark. The result is repacked with bitmaps,
as a served repository would be, and cached under ``bench/results/cache`` keyed by the
parameters, so only the first run pays for it.
"""

import dataclasses
import hashlib
import json
import pathlib
import random
import shutil
import subprocess
from collections.abc import Iterator

CACHE = pathlib.Path(__file__).resolve().parent / "results" / "cache"


@dataclasses.dataclass(frozen=True)
class Shape:
    """What the generated history looks like."""

    seed: int = 3
    directories: int = 40
    files_per_directory: int = 30
    commits: int = 3300
    files_per_commit: int = 3
    lines_per_file: int = 90
    binary_every: int = 12
    """Every this many commits add a binary asset of binary_bytes random bytes."""
    binary_bytes: int = 40_000
    base_behind: int = 300
    """Commits between the ``base`` branch and ``main``: what the fetch benchmark fetches."""

    @property
    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Generated:
    path: pathlib.Path
    objects: int
    pack_bytes: int


def ensure(shape: Shape, env: dict[str, str]) -> Generated:
    """The cached repository for ``shape``, generating it first if needed."""
    path = CACHE / f"repo-{shape.key}.git"
    stats = path / "bench-stats.json"
    if not stats.exists():
        if path.exists():
            shutil.rmtree(path)
        print(f"   generating the repository ({shape.commits} commits) in {path}", flush=True)
        _generate(shape, path, env)
        objects, pack_bytes = _measure(path, env)
        stats.write_text(json.dumps({"objects": objects, "pack_bytes": pack_bytes}))
    data = json.loads(stats.read_text())
    return Generated(path=path, objects=data["objects"], pack_bytes=data["pack_bytes"])


def _generate(shape: Shape, path: pathlib.Path, env: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["git", "init", "-q", "--bare", "--initial-branch=main", str(path)], check=True, env=env
    )
    importer = subprocess.Popen(
        ["git", "fast-import", "--quiet"], cwd=path, stdin=subprocess.PIPE, env=env
    )
    assert importer.stdin is not None
    for chunk in _stream(shape):
        importer.stdin.write(chunk)
    importer.stdin.close()
    if importer.wait() != 0:
        raise RuntimeError("git fast-import failed")
    subprocess.run(
        ["git", "repack", "-a", "-d", "-b", "-q", "--window=50"], cwd=path, check=True, env=env
    )
    subprocess.run(["git", "prune-packed"], cwd=path, check=True, env=env)


def _stream(shape: Shape) -> Iterator[bytes]:
    rng = random.Random(shape.seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(5000)]

    def line() -> str:
        return " ".join(rng.choices(vocabulary, k=rng.randint(4, 14))) + "\n"

    def data(content: bytes) -> bytes:
        return b"data %d\n%s\n" % (len(content), content)

    files = {
        f"src/d{d:02d}/f{f:03d}.txt": [line() for _ in range(shape.lines_per_file)]
        for d in range(shape.directories)
        for f in range(shape.files_per_directory)
    }
    names = sorted(files)
    for number in range(shape.commits):
        if number == 0:
            changed = names
        else:
            changed = rng.sample(names, shape.files_per_commit)
            for name in changed:
                lines = files[name]
                start = rng.randrange(len(lines))
                for index in range(start, min(len(lines), start + len(lines) // 3)):
                    lines[index] = line()
                lines.append(line())
        message = f"commit {number}: change {len(changed)} files\n".encode()
        timestamp = 1_600_000_000 + number * 600
        out = [
            b"commit refs/heads/main\n",
            b"committer Bench <bench@example.com> %d +0000\n" % timestamp,
            data(message),
        ]
        out += [
            b"M 644 inline %s\n" % name.encode() + data("".join(files[name]).encode())
            for name in changed
        ]
        if number and number % shape.binary_every == 0:
            asset = rng.randbytes(shape.binary_bytes)
            out.append(b"M 644 inline assets/a%05d.bin\n" % number + data(asset))
        yield b"".join(out)
        if number == shape.commits - 1 - shape.base_behind:
            yield b"reset refs/heads/base\nfrom refs/heads/main\n\n"
    yield b"reset refs/tags/v1\nfrom refs/heads/main\n\n"


def _measure(path: pathlib.Path, env: dict[str, str]) -> tuple[int, int]:
    output = subprocess.run(
        ["git", "count-objects", "-v"],
        cwd=path,
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    fields = dict(line.split(": ") for line in output.splitlines())
    return int(fields["count"]) + int(fields["in-pack"]), int(fields["size-pack"]) * 1024
