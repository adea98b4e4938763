"""A git client that pushes and fetches through a repository's Service in a loop, never retrying.

Each round makes an empty commit on main, pushes it, then fetches main from the Service and
checks that it is exactly the commit just acknowledged (read-your-writes). Every push and fetch
is kept as an :class:`Operation` with its start, end and outcome, so a benchmark can cut the
one stream into windows (nothing going on, a rolling update, a drain) and compare them. A
failed push is not retried: the next round's commit builds on it, so history stays linear
whether or not it took effect, and only acknowledged pushes are checked.
"""

import dataclasses
import os
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from bench import kube

ATTEMPT_SECONDS = 30.0
"""A push or fetch that takes longer is killed and counts as failed (replicas hold 10 s)."""
PAUSE = 0.2
"""Seconds between rounds: about three pushes a second, as a busy team's CI would make."""


@dataclasses.dataclass(frozen=True)
class Operation:
    kind: str
    """``push`` or ``fetch``."""
    started: float
    """time.monotonic() when git started."""
    ended: float
    ok: bool
    message: str = ""
    """Why it failed: git's last line of stderr, or what the fetch showed instead."""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclasses.dataclass(frozen=True)
class Stats:
    """What a window of operations adds up to."""

    pushes: int
    fetches: int
    failures: list[str]
    latencies: list[float]
    """Seconds of each acknowledged push, sorted."""

    @classmethod
    def of(cls, operations: Iterable[Operation]) -> "Stats":
        operations = list(operations)
        return cls(
            pushes=sum(op.kind == "push" and op.ok for op in operations),
            fetches=sum(op.kind == "fetch" and op.ok for op in operations),
            failures=[f"{op.kind}: {op.message}" for op in operations if not op.ok],
            latencies=sorted(op.seconds for op in operations if op.kind == "push" and op.ok),
        )

    def percentile(self, fraction: float) -> float:
        """Nearest rank; NaN when nothing was acknowledged."""
        if not self.latencies:
            return float("nan")
        rank = min(len(self.latencies) - 1, int(len(self.latencies) * fraction))
        return self.latencies[rank]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    @property
    def maximum(self) -> float:
        return self.latencies[-1] if self.latencies else float("nan")

    def failed_summary(self) -> str:
        return ", ".join(f"{n}x {text!r}" for text, n in Counter(self.failures).most_common())

    def line(self) -> str:
        return (
            f"{self.pushes} pushes, {self.fetches} fetches checked, {len(self.failures)} failed, "
            f"push p50 {self.p50 * 1000:.0f} ms, p99 {self.percentile(0.99) * 1000:.0f} ms, "
            f"max {self.maximum * 1000:.0f} ms"
        )


class Client:
    """Pushes and fetches in a thread of its own between ``start`` and ``stop``."""

    def __init__(self, url: str, work: Path, *, report: Callable[[Operation], None]) -> None:
        self.url = url
        self.env = kube.git_env(str(work))
        self.writer = work / "writer"
        self.reader = work / "reader"
        self.report = report
        self.operations: list[Operation] = []
        self.acknowledged: list[str] = []
        self._count = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="traffic", daemon=True)

    def start(self) -> None:
        """A first push (retried: the Service may not route yet) and a clone, then the loop."""
        git(self.env, "init", "-q", "--initial-branch=main", str(self.writer))
        sha = self._commit()
        kube.wait(
            "a first push through the Service",
            lambda: git(self.env, "push", "-q", self.url, "main", cwd=self.writer, check=False)[0],
            timeout=60,
        )
        self.acknowledged.append(sha)
        git(self.env, "clone", "-q", self.url, str(self.reader))
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=ATTEMPT_SECONDS * 3)

    def between(self, started: float, ended: float) -> list[Operation]:
        """The operations that overlap [started, ended]."""
        return [op for op in list(self.operations) if op.started <= ended and op.ended >= started]

    def wait_past(self, moment: float) -> None:
        """Until an operation started after ``moment`` is recorded: the client is sequential, so
        every operation in flight at ``moment`` has then ended and is in ``operations``."""
        kube.wait(
            "the client's operations in flight to end",
            lambda: any(op.started > moment for op in reversed(self.operations)),
            timeout=ATTEMPT_SECONDS * 3,
            interval=0.05,
        )

    def wait_pushes(self, count: int, *, timeout: float = 60) -> None:
        """Until ``count`` more pushes were acknowledged: the traffic really flows."""
        target = len(self.acknowledged) + count
        kube.wait(
            f"{count} more acknowledged pushes",
            lambda: len(self.acknowledged) >= target,
            timeout=timeout,
        )

    def main_holds_last_acknowledged(self) -> str:
        """'' when main contains the last acknowledged push, else what it holds instead."""
        ok, _, error = git(self.env, "fetch", "-q", "origin", "main", cwd=self.reader, check=False)
        if not ok:
            return f"fetch failed: {error}"
        last = self.acknowledged[-1]
        contained, _, _ = git(
            self.env,
            "merge-base",
            "--is-ancestor",
            last,
            "FETCH_HEAD",
            cwd=self.reader,
            check=False,
        )
        if contained:
            return ""
        head = git(self.env, "rev-parse", "FETCH_HEAD", cwd=self.reader)[1].strip()
        return f"main is {head[:10]}, which lacks the acknowledged {last[:10]}"

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._round()
            self._stopping.wait(PAUSE)

    def _round(self) -> None:
        sha = self._commit()
        push = self._timed("push", "push", "-q", self.url, "main", cwd=self.writer)
        if not push.ok:
            return
        self.acknowledged.append(sha)
        fetch = self._timed("fetch", "fetch", "-q", "origin", "main", cwd=self.reader)
        if not fetch.ok:
            return
        seen = git(self.env, "rev-parse", "FETCH_HEAD", cwd=self.reader)[1].strip()
        if seen != sha:
            self._record(
                dataclasses.replace(
                    fetch,
                    ok=False,
                    message=f"read-your-writes: main {seen[:10]}, pushed {sha[:10]}",
                )
            )
        else:
            self._record(fetch)

    def _timed(self, kind: str, *args: str, cwd: Path) -> Operation:
        started = time.monotonic()
        ok, _, error = git(self.env, *args, cwd=cwd, check=False)
        operation = Operation(kind, started, time.monotonic(), ok, error)
        if kind == "push" or not ok:
            self._record(operation)
        return operation

    def _record(self, operation: Operation) -> None:
        self.operations.append(operation)
        self.report(operation)

    def _commit(self) -> str:
        self._count += 1
        git(
            self.env, "commit", "-q", "--allow-empty", "-m", f"round {self._count}", cwd=self.writer
        )
        return git(self.env, "rev-parse", "HEAD", cwd=self.writer)[1].strip()


def git(
    env: dict[str, str], *args: str, cwd: Path | None = None, check: bool = True
) -> tuple[bool, str, str]:
    """(success, stdout, stderr's last line) of git, killed whole after ATTEMPT_SECONDS.

    git runs helpers (git-remote-http) that hold its pipes: on timeout the process group is
    killed, or reading the pipes would wait for the helper.
    """
    process = subprocess.Popen(
        ["git", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=ATTEMPT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\nkilled after {ATTEMPT_SECONDS:.0f} s"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    ok = process.returncode == 0
    if check and not ok:
        raise RuntimeError(f"git {args[0]} failed: {stderr.strip()}")
    return ok, stdout, lines[-1] if lines else ("" if ok else f"exit {process.returncode}")
