"""A client that pushes and clones through a repository's Service in a loop, never retrying,
while a test changes things underneath: every failure counts.

Each round commits, pushes (an acknowledged push is recorded with its latency), then fetches
from the Service and checks that main is exactly the last acknowledged commit: a fetch that
fails, or that shows an older main (read-your-writes broken), is a failure too.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

from tests.e2e.operator import repos

ATTEMPT_SECONDS = 30
"""A push or fetch that takes longer than this counts as failed (and ends the attempt)."""


@dataclasses.dataclass
class Results:
    acknowledged: list[str] = dataclasses.field(default_factory=list)
    latencies: list[float] = dataclasses.field(default_factory=list)
    reads: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        failed = ", ".join(f"{n}x {text!r}" for text, n in Counter(self.failures).items())
        ordered = sorted(self.latencies) or [0.0]
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"{len(self.acknowledged)} pushes acknowledged (p50 "
            f"{statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max "
            f"{ordered[-1] * 1000:.0f} ms), {self.reads} fetches checked, "
            f"{len(self.failures)} failed: {failed or 'none'}"
        )


class Traffic:
    """Pushes and fetches in a thread of its own until ``stop``."""

    def __init__(self, url: str, directory: Path, *, pause: float = 0.2) -> None:
        self.url = url
        self.work = repos.Work(directory / "traffic")
        self.reader = directory / "reader"
        self.pause = pause
        self.results = Results()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self.work.commit()
        self.work.push(self.url)  # the branch exists before anything changes
        self.results.acknowledged.append(
            repos.git("rev-parse", "HEAD", cwd=self.work.path).stdout.strip()
        )
        repos.git("clone", "-q", self.url, str(self.reader))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Results:
        self._stop.set()
        self._thread.join(timeout=ATTEMPT_SECONDS * 3)
        return self.results

    def wait_rounds(self, count: int, *, timeout: float = 60) -> None:
        """Until ``count`` more pushes were acknowledged (the traffic is really flowing)."""
        target = len(self.results.acknowledged) + count
        deadline = time.monotonic() + timeout
        while len(self.results.acknowledged) < target:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"awaited {count} more acknowledged pushes within {timeout}s; saw "
                    f"{self.results.summary()}"
                )
            self._stop.wait(0.1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._round()
            self._stop.wait(self.pause)

    def _round(self) -> None:
        sha = self.work.commit()
        started = time.monotonic()
        pushed = self.work.push(self.url, check=False, timeout=ATTEMPT_SECONDS)
        if pushed.returncode != 0:
            self.results.failures.append(f"push: {_last_line(pushed.stderr)}")
            # Whether it took effect is unknown: later pushes build on it either way, and
            # only acknowledged ones are checked.
            return
        self.results.latencies.append(time.monotonic() - started)
        self.results.acknowledged.append(sha)
        fetched = repos.git(
            "fetch", "-q", "origin", "main", cwd=self.reader, check=False, timeout=ATTEMPT_SECONDS
        )
        if fetched.returncode != 0:
            self.results.failures.append(f"fetch: {_last_line(fetched.stderr)}")
            return
        seen = repos.git("rev-parse", "FETCH_HEAD", cwd=self.reader).stdout.strip()
        self.results.reads += 1
        if seen != sha:
            self.results.failures.append(
                f"read-your-writes: fetched {seen[:10]}, pushed {sha[:10]}"
            )


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "?"
