"""Upkeep under a push load: push latency while maintenance runs, packs left, read speed.

One run starts a 3-replica ``gitquorum local`` with its default upkeep settings (maintenance
considered every 16 applied pushes and hourly, one replica at a time by turns), loads the
generated repository (see ``repository``) and measures:

- pushes: ``--maintenance-pushes`` (5,000) small pushes, one one-file commit each, sequential,
  from one client with the git CLI over HTTP to the leader. A watcher polls every replica's
  ``GET /admin/status`` and keeps each maintenance run it reports (``upkeep.lastMaintenance``:
  when it ended and how long it took); a push counts as *during maintenance* when its span
  overlaps a run on any replica. Target: the p50 during maintenance within 1.5x of the p50
  without;
- packs: once upkeep is idle (nothing running, nothing due), the ``objects/pack/*.pack`` files
  in each replica's repository (cruft packs included). Target: at most 20 on every replica;
- reads: the repository of the replica with the most packs, copied as it is, against the same
  copy after a plain ``git gc``, served side by side by one ``gitquorum serve``; ``ls-remote``,
  a fetch of the last 20 pushed commits into a clone of the state before them, and a full
  clone (``--no-checkout``); alternating, the first swapping every round, medians of
  ``--maintenance-rounds`` (5). Target: ours within 1.1x of the gc-ed copy.

Each step prints one line; the full log (every push, every maintenance run) is a file under
bench/results/, whose path is printed first, next to the replicas' and controller's logs.
"""

import argparse
import dataclasses
import datetime
import pathlib
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import git_server, repository, runlog, servers
from tests.faults import localcluster

PUSHES = 5000
PROGRESS_EVERY = 500
RECENT = 20
"""Pushed commits the fetch measurement fetches."""
ROUNDS = 5
PUSH_TARGET = 1.5
PACKS_TARGET = 20
READ_TARGET = 1.1
HEALTHY_SECONDS = 120.0
IDLE_SECONDS = 600.0
IDLE_QUIET_SECONDS = 3.0
"""How long every replica must report nothing running and nothing due to count as idle."""
WATCH_SECONDS = 0.1
"""Status poll period: far below the time between two runs on a replica (16 pushes)."""
MAX_FAILED_PUSHES = 10
BRANCH = "push"
PACKS_CHANGE = re.compile(r"packs (\d+) -> (\d+)")
"""In a run's detail (``upkeep._describe``): the packs before and after it."""
SERVED = ("ours", "gced")
MIB = 1024 * 1024
RESULTS = pathlib.Path(__file__).resolve().parent / "results"

_git = git_server._git
_p = git_server._percentile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("maintenance")
    group.add_argument(
        "--maintenance-pushes",
        type=int,
        default=PUSHES,
        help="small pushes into the 3-replica cluster (default: %(default)s)",
    )
    group.add_argument(
        "--maintenance-rounds",
        type=int,
        default=ROUNDS,
        help="ls-remotes, fetches and clones per served copy (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = RESULTS / f"maintenance-{stamp}"
    directory.mkdir(parents=True)
    with (
        runlog.Log(directory / "maintenance.log", started) as log,
        tempfile.TemporaryDirectory(prefix="gitquorum-bench-maintenance-") as temporary,
    ):
        log.step(f"full log in {log.path}")
        work = pathlib.Path(temporary)
        env = git_server._client_env(work)
        generated = repository.ensure(repository.Shape(), env)
        log.step(
            f"repository: {generated.objects} objects, {generated.pack_bytes / MIB:.1f} MiB packed"
        )
        try:
            with localcluster.LocalCluster(
                directory=work / "cluster",
                links=False,
                env=env,
                startup_timeout=HEALTHY_SECONDS,
            ) as replicated:
                leader_url = _load(log, replicated, generated.path, env)
                client = work / "client"
                _git(
                    env,
                    "clone",
                    "-q",
                    "--single-branch",
                    "--branch",
                    "base",
                    str(generated.path),
                    str(client),
                )
                with Watcher(log, replicated) as watcher:
                    pushes = _pushes(log, watcher, env, client, leader_url, args)
                    _await_idle(log, replicated, watcher)
                runs = watcher.runs()
                repositories = {
                    replica: replicated.repository(replica) for replica in replicated.ids()
                }
            packs = _count_packs(log, repositories)
            busiest = max(packs, key=lambda replica_id: (packs[replica_id], replica_id))
            source = repositories[busiest]
            reads = _reads(log, env, work, client, source=source, name=busiest, args=args)
        finally:
            _keep_logs(work / "cluster", directory)
        ratios = _report(log, pushes, runs, packs, reads)
        log.write(f"wall time {time.monotonic() - started:.0f} s")
    return ratios


def _load(
    log: runlog.Log,
    replicated: localcluster.LocalCluster,
    source: pathlib.Path,
    env: dict[str, str],
) -> str:
    """Pushes every branch and tag of the generated repository; the leader's push URL."""
    described = replicated.wait_healthy(timeout=HEALTHY_SECONDS, exact=True)
    url = replicated.url(described["leader"])
    started = time.monotonic()
    _git(env, "push", "-q", url, "refs/heads/*:refs/heads/*", "refs/tags/*:refs/tags/*", cwd=source)
    replicated.wait_healthy(timeout=HEALTHY_SECONDS, exact=True)
    log.step(
        f"loaded the cluster (leader {described['leader']}): all replicas in sync after "
        f"{time.monotonic() - started:.1f} s"
    )
    return url


# -- watching upkeep ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """One maintenance run on one replica, in wall-clock seconds (``time.time()``)."""

    replica: str
    ended: float
    seconds: float
    outcome: str
    detail: str

    @property
    def began(self) -> float:
        return self.ended - self.seconds


class Watcher:
    """Polls every replica's status in a thread: the maintenance runs, what is running now."""

    def __init__(self, log: runlog.Log, replicated: localcluster.LocalCluster) -> None:
        self.log = log
        self.replicated = replicated
        self.replicas = replicated.ids()
        self.status: dict[str, dict[str, Any]] = {}
        self.samples = 0
        self.running_samples = 0
        self.scrubs: set[tuple[str, float]] = set()
        self._runs: dict[tuple[str, float], Run] = {}
        self._baseline: set[tuple[str, float]] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="upkeep-watcher", daemon=True)

    def __enter__(self) -> "Watcher":
        self._poll()
        # Runs of the load and before: not part of the measurement.
        self._baseline = set(self._runs)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join()

    def runs(self) -> list[Run]:
        with self._lock:
            return sorted(
                (run for key, run in self._runs.items() if key not in self._baseline),
                key=lambda run: run.ended,
            )

    def overlaps(self, began: float, ended: float) -> bool:
        return any(run.began <= ended and began <= run.ended for run in self.runs())

    def _loop(self) -> None:
        while not self._stopping.wait(WATCH_SECONDS):
            self._poll()

    def _poll(self) -> None:
        for replica in self.replicas:
            status = self.replicated.status_or_none(replica)
            upkeep = None if status is None else status.get("upkeep")
            if upkeep is None:
                continue
            with self._lock:
                self.status[replica] = upkeep
                self.samples += 1
                self.running_samples += upkeep.get("running") == "maintenance"
                last = upkeep.get("lastMaintenance")
                if last is not None and (replica, last["at"]) not in self._runs:
                    run = Run(replica, last["at"], last["seconds"], last["outcome"], last["detail"])
                    self._runs[(replica, last["at"])] = run
                    self.log.write(
                        f"maintenance on {run.replica} {run.outcome} in {run.seconds:.3f} s, "
                        f"ended {run.ended:.3f}: {run.detail}"
                    )
                scrub = upkeep.get("lastScrub")
                if scrub is not None and (replica, scrub["at"]) not in self.scrubs:
                    self.scrubs.add((replica, scrub["at"]))
                    self.log.write(f"scrub on {replica}: {scrub}")

    def packs(self) -> str:
        """The packs in each replica's repository now (the status's figures lag up to 5 s)."""
        return " ".join(
            f"{replica} {_packs(self.replicated.repository(replica))}" for replica in self.replicas
        )

    def idle(self) -> str | None:
        """What keeps upkeep from being idle on some replica, or None."""
        with self._lock:
            if len(self.status) < len(self.replicas):
                return f"status of {len(self.status)} of {len(self.replicas)} replicas"
            for replica_id, upkeep in sorted(self.status.items()):
                if upkeep.get("running") or upkeep.get("due"):
                    return f"{replica_id} running {upkeep.get('running')!r}, due {upkeep['due']}"
        return None


# -- pushes -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Push:
    began: float
    """Wall clock, to compare with the replicas' run times."""
    seconds: float
    during: bool
    """Whether a maintenance run on any replica overlapped the push."""


def _pushes(
    log: runlog.Log,
    watcher: Watcher,
    env: dict[str, str],
    client: pathlib.Path,
    url: str,
    args: argparse.Namespace,
) -> list[Push]:
    count = args.maintenance_pushes
    if count <= RECENT:
        raise ValueError(f"--maintenance-pushes must be above {RECENT}, the fetched commits")
    spans: list[tuple[float, float, float]] = []
    failures = 0
    index = 0
    started = time.monotonic()
    while len(spans) < count:
        index += 1
        (client / "pushed.txt").write_text(f"push {index}\n")
        _git(env, "add", "pushed.txt", cwd=client)
        _git(env, "commit", "-q", "-m", f"push {index}", cwd=client)
        began = time.time()
        clock = time.perf_counter()
        result = subprocess.run(
            ["git", "push", "-q", url, f"HEAD:refs/heads/{BRANCH}"],
            cwd=client,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - clock
        if result.returncode != 0:
            failures += 1
            log.step(f"push {index} FAILED after {seconds:.2f} s: {result.stderr.strip()}")
            if failures >= MAX_FAILED_PUSHES:
                raise RuntimeError(f"{failures} pushes failed")
            continue
        spans.append((began, began + seconds, seconds))
        log.write(f"push {len(spans)} took {seconds * 1000:.1f} ms")
        if len(spans) % PROGRESS_EVERY == 0 or len(spans) == count:
            recent = [seconds for _, _, seconds in spans[-PROGRESS_EVERY:]]
            runs = watcher.runs()
            log.step(
                f"push {len(spans)}/{count}: p50 {_p(recent, 50) * 1000:.1f} ms, "
                f"p99 {_p(recent, 99) * 1000:.1f} ms (last {len(recent)}); "
                f"{len(runs)} maintenance runs so far; packs {watcher.packs()}; "
                f"{time.monotonic() - started:.0f} s"
            )
    # The runs that overlap the last pushes are known once they ended: classified at the end.
    return [Push(began, seconds, watcher.overlaps(began, ended)) for began, ended, seconds in spans]


def _await_idle(log: runlog.Log, replicated: localcluster.LocalCluster, watcher: Watcher) -> None:
    """Waits until every replica reports nothing running and nothing due for a while."""
    started = time.monotonic()
    deadline = started + IDLE_SECONDS
    quiet_since: float | None = None
    seen = "nothing yet"
    while time.monotonic() < deadline:
        problem = watcher.idle()
        now = time.monotonic()
        if problem is None:
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= IDLE_QUIET_SECONDS:
                replicated.wait_healthy(timeout=HEALTHY_SECONDS, exact=True)
                log.step(f"upkeep idle on every replica after {now - started:.1f} s")
                return
        else:
            quiet_since, seen = None, problem
        time.sleep(WATCH_SECONDS)
    raise RuntimeError(f"upkeep was not idle within {IDLE_SECONDS:.0f} s: {seen}")


def _count_packs(log: runlog.Log, repositories: dict[str, pathlib.Path]) -> dict[str, int]:
    packs = {replica_id: _packs(git_dir) for replica_id, git_dir in repositories.items()}
    log.step(
        "packs after the pushes: "
        + ", ".join(f"{replica_id} {count}" for replica_id, count in sorted(packs.items()))
    )
    return packs


# -- reads --------------------------------------------------------------------------------------


def _reads(
    log: runlog.Log,
    env: dict[str, str],
    work: pathlib.Path,
    client: pathlib.Path,
    *,
    source: pathlib.Path,
    name: str,
    args: argparse.Namespace,
) -> dict[str, dict[str, list[float]]]:
    """ls-remote, fetch and clone from the replica's repository as it is and after ``git gc``."""
    root = work / "serve"
    root.mkdir()
    # The cluster is stopped: the copy is the replica's repository as upkeep left it.
    shutil.copytree(source, root / "ours.git", symlinks=True)
    shutil.copytree(root / "ours.git", root / "gced.git", symlinks=True)
    started = time.monotonic()
    _git(env, "gc", "-q", cwd=root / "gced.git")
    log.step(
        f"copied {name}'s repository ({_packs(root / 'ours.git')} packs) and git gc-ed a copy "
        f"in {time.monotonic() - started:.1f} s ({_packs(root / 'gced.git')} packs)"
    )
    # The state before the last pushed commits, for the fetch: only what that commit reaches.
    _git(env, "branch", "-f", "before", f"HEAD~{RECENT}", cwd=client)
    base = work / "fetch-base"
    _git(
        env,
        "clone",
        "-q",
        "--bare",
        "--no-local",
        "--single-branch",
        "--branch",
        "before",
        str(client),
        str(base),
    )
    with servers.gitquorum(root, work, env) as served:
        urls = {name: served.url(f"{name}.git") for name in SERVED}
        measures: dict[str, Callable[[str, int], float]] = {
            "ls-remote": lambda name, index: _timed(env, "ls-remote", urls[name]),
            "fetch": lambda name, index: _fetch(env, work, base, urls[name], f"{name}-{index}"),
            "clone": lambda name, index: _clone(env, work, urls[name], f"{name}-{index}"),
        }
        times: dict[str, dict[str, list[float]]] = {}
        for what, measure in measures.items():
            times[what] = {name: [] for name in SERVED}
            for name in SERVED:
                measure(name, -1)  # warm-up, not counted: caches filled for both
            for index in range(args.maintenance_rounds):
                order = SERVED if index % 2 == 0 else SERVED[::-1]
                for name in order:
                    times[what][name].append(measure(name, index))
                log.step(
                    f"{what} {index + 1}/{args.maintenance_rounds}: "
                    + ", ".join(f"{name} {times[what][name][-1]:.3f} s" for name in SERVED)
                )
    return times


def _packs(git_dir: pathlib.Path) -> int:
    return len(list((git_dir / "objects" / "pack").glob("*.pack")))


def _timed(env: dict[str, str], *command: str, cwd: pathlib.Path | None = None) -> float:
    started = time.perf_counter()
    _git(env, *command, cwd=cwd)
    return time.perf_counter() - started


def _fetch(
    env: dict[str, str], work: pathlib.Path, base: pathlib.Path, url: str, label: str
) -> float:
    target = work / f"fetch-{label}"
    shutil.copytree(base, target, symlinks=True)
    seconds = _timed(
        env, "fetch", "-q", url, f"refs/heads/{BRANCH}:refs/heads/{BRANCH}", cwd=target
    )
    shutil.rmtree(target)
    return seconds


def _clone(env: dict[str, str], work: pathlib.Path, url: str, label: str) -> float:
    target = work / f"clone-{label}"
    seconds = _timed(env, "clone", "-q", "--no-checkout", url, str(target))
    shutil.rmtree(target)
    return seconds


# -- report -------------------------------------------------------------------------------------


def _report(
    log: runlog.Log,
    pushes: list[Push],
    runs: list[Run],
    packs: dict[str, int],
    reads: dict[str, dict[str, list[float]]],
) -> dict[str, float]:
    during = [push.seconds for push in pushes if push.during]
    without = [push.seconds for push in pushes if not push.during]
    every = [push.seconds for push in pushes]
    log.step(
        f"maintenance: {len(runs)} runs ("
        + ", ".join(
            f"{replica_id} {sum(run.replica == replica_id for run in runs)}"
            for replica_id in sorted(packs)
        )
        + f"), median {_median([run.seconds for run in runs]):.2f} s, "
        f"max {max((run.seconds for run in runs), default=0.0):.2f} s, "
        f"{sum(run.outcome != 'ok' for run in runs)} not ok"
    )
    # What each run found and left: the count a replica reaches between runs, not only at rest.
    found = [(int(m[1]), int(m[2])) for run in runs for m in [PACKS_CHANGE.search(run.detail)] if m]
    if found:
        log.step(
            f"packs before a run: mean {statistics.mean(b for b, _ in found):.1f}, "
            f"max {max(b for b, _ in found)}; after: mean "
            f"{statistics.mean(a for _, a in found):.1f}, max {max(a for _, a in found)}"
        )
    log.step(
        f"pushes: p50 {_p(every, 50) * 1000:.1f} ms, p99 {_p(every, 99) * 1000:.1f} ms; "
        f"during maintenance {len(during)} (p50 {_p_or_nan(during) * 1000:.1f} ms), "
        f"without {len(without)} (p50 {_p_or_nan(without) * 1000:.1f} ms)"
    )
    medians = {
        what: {name: statistics.median(times[name]) for name in SERVED}
        for what, times in reads.items()
    }
    log.step(
        "reads (median): "
        + "; ".join(
            f"{what} ours {values['ours'] * 1000:.0f} ms, gc-ed {values['gced'] * 1000:.0f} ms"
            for what, values in medians.items()
        )
    )
    ratios = {what: values["ours"] / values["gced"] for what, values in medians.items()}
    ratios["push_p50"] = _p_or_nan(during) / _p_or_nan(without)
    ratios["packs_max"] = float(max(packs.values()))
    log.step(
        f"after {len(pushes)} pushes: packs max {max(packs.values())} "
        f"(target <= {PACKS_TARGET}); ls-remote {ratios['ls-remote']:.2f}x, "
        f"fetch {ratios['fetch']:.2f}x, clone {ratios['clone']:.2f}x of gc-ed "
        f"(target <= {READ_TARGET}x); push p50 during maintenance {ratios['push_p50']:.2f}x "
        f"of without (target <= {PUSH_TARGET}x)"
    )
    return {key.replace("-", "_"): value for key, value in ratios.items()}


def _p_or_nan(values: list[float]) -> float:
    return _p(values, 50) if values else float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _keep_logs(directory: pathlib.Path, results: pathlib.Path) -> None:
    """Copies the controller's and the replicas' logs next to the run's log."""
    for log in directory.glob("replicas/*/replica.log"):
        shutil.copy(log, results / f"{log.parent.name}.log")
    if (directory / "controller.log").exists():
        shutil.copy(directory / "controller.log", results / "controller.log")
