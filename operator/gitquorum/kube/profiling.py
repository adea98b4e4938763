"""Where the operator's memory goes: an opt-in tracemalloc profile, served at /debug/memory.

Off by default: tracing every allocation costs memory and time (``--trace-memory FRAMES``, the
chart's ``traceMemoryFrames``). When on, ``/debug/memory`` on the metrics port answers with the
Python memory in use, grouped by package (``kopf``, ``kubernetes``, ``aiohttp``, one group per
module of ``gitquorum``) and by line, as JSON: what ``python -m bench operator-scale`` prints
next to the resident size. Resident memory beyond the traced total is the interpreter, the
libraries' code and the allocator's free lists.
"""

import dataclasses
import pathlib
import tracemalloc
from typing import Any

SITES = 25
"""How many groups and lines a profile names; the rest is summed into the total."""


@dataclasses.dataclass(frozen=True)
class Site:
    where: str
    """A package (``kopf``), a module of ours (``gitquorum/kube/views.py``) or a line."""
    bytes: int
    blocks: int


@dataclasses.dataclass(frozen=True)
class Profile:
    traced_bytes: int
    """Python memory allocated now (traced since the operator started)."""
    peak_bytes: int
    packages: tuple[Site, ...]
    lines: tuple[Site, ...]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, answer: dict[str, Any]) -> "Profile":
        return cls(
            traced_bytes=int(answer["traced_bytes"]),
            peak_bytes=int(answer["peak_bytes"]),
            packages=tuple(Site(**site) for site in answer["packages"]),
            lines=tuple(Site(**site) for site in answer["lines"]),
        )


def start(frames: int) -> None:
    if frames > 0:
        tracemalloc.start(frames)


def take() -> Profile | None:
    """The profile now; None while tracing is off."""
    if not tracemalloc.is_tracing():
        return None
    snapshot = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),)
    )
    current, peak = tracemalloc.get_traced_memory()
    packages: dict[str, list[int]] = {}
    for stat in snapshot.statistics("filename"):
        group = packages.setdefault(package(stat.traceback[0].filename), [0, 0])
        group[0] += stat.size
        group[1] += stat.count
    ranked = sorted(packages.items(), key=lambda item: -item[1][0])[:SITES]
    lines = snapshot.statistics("lineno")[:SITES]
    return Profile(
        traced_bytes=current,
        peak_bytes=peak,
        packages=tuple(Site(name, size, count) for name, (size, count) in ranked),
        lines=tuple(
            Site(
                f"{package(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                s.size,
                s.count,
            )
            for s in lines
        ),
    )


def package(filename: str) -> str:
    """``kopf`` for any file of kopf, ``gitquorum/kube/views.py`` for a module of ours, the
    standard library's module name (``json``) for the rest."""
    parts = pathlib.PurePath(filename).parts
    if "gitquorum" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("gitquorum") - 1 :])
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            return rest[0].removesuffix(".py") if rest else filename
    return parts[-1].removesuffix(".py") if parts else filename
