"""A 3-replica ``gitquorum local`` cluster: push latency, rebuild speed, failover.

One run starts the cluster (replicas on loopback, traffic direct) and a ``gitquorum serve``
alone, loads the generated repository (see ``repository``) into both, and measures:

- push: a one-file commit pushed with the git CLI over HTTP, as in ``git_server``, to the
  cluster's leader and to the single server, alternating; p50 and p99 (target: the cluster
  within 1.3x of the single server at p50, 2x at p99). Pushes through a follower, which
  forwards them to the leader, are measured in the same rotation and reported without a
  ratio;
- rebuild: a follower is killed (SIGKILL) and its data directory wiped; the controller starts
  it again from nothing and it copies the leader. Timed from the restart until its status
  shows the leader's generation and checksum, InSync; compared with ``git clone --mirror`` of
  the same repository from the leader, alternating (target: at least half the speed of the
  clone, that is at most twice its time);
- failover: a client pushes tiny commits continually to any replica, moving to the next one
  on a failure; the leader is killed (SIGKILL) and the write unavailability is the time from
  the kill to the end of the first successful push started after it. The controller's part,
  from the kill until ``cluster.json`` names a new leader in a higher term, is reported too
  (``cluster.json`` is written every 0.2 s, so it is that coarse). There is no reference
  system here: the ratio is against the 5 s target.

The replicas' and controller's logs (one line per request, with ``duration_ms``) are copied
to ``bench/results/replication-logs`` at the end, to see where the time went.
"""

import argparse
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bench import git_server, pushpath, repository, servers
from tests.faults import localcluster

TARGETS = ("replicated", "single", "forwarded")
"""Push targets: the cluster's leader, ``gitquorum serve`` alone, a follower of the cluster."""
PUSH_P50_TARGET = 1.3
PUSH_P99_TARGET = 2.0
REBUILD_TIME_TARGET = 2.0
UNAVAILABLE_TARGET_SECONDS = 5.0
HEALTHY_SECONDS = 120.0
REBUILD_SECONDS = 600.0
FAILOVER_SECONDS = 60.0
PUSH_TIMEOUT = 30.0
"""Seconds before a push of the failover client counts as failed (a hung forward)."""
STATUS_POLL_SECONDS = 0.02
LOGS = pathlib.Path(__file__).resolve().parent / "results" / "replication-logs"
MIB = 1024 * 1024

# Git run and percentiles taken as git_server does them, so that push figures compare.
_git = git_server._git
_p = git_server._percentile
T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("replication")
    group.add_argument(
        "--replication-pushes",
        type=int,
        default=50,
        help="small pushes per target (default: %(default)s)",
    )
    group.add_argument(
        "--replication-rebuilds",
        type=int,
        default=3,
        help="follower rebuilds and mirror clones (default: %(default)s)",
    )
    group.add_argument(
        "--replication-failovers",
        type=int,
        default=5,
        help="leader kills under a push load (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gitquorum-bench-replication-") as temporary:
        work = pathlib.Path(temporary)
        env = git_server._client_env(work)
        generated = repository.ensure(repository.Shape(), env)
        print(
            f"   repository: {generated.objects} objects, "
            f"{generated.pack_bytes / MIB:.1f} MiB packed",
            flush=True,
        )
        root = work / "root"
        root.mkdir()
        _git(env, "clone", "-q", "--bare", "--local", str(generated.path), str(root / "bench.git"))
        try:
            with (
                localcluster.LocalCluster(
                    directory=work / "cluster",
                    links=False,
                    env=env,
                    startup_timeout=HEALTHY_SECONDS,
                ) as replicated,
                servers.gitquorum(root, work, env) as single,
            ):
                _load(replicated, generated.path, env)
                pushes = _pushes(replicated, single, env, work, root, args.replication_pushes)
                cpu = _cpu(replicated, single, env, work, root, args.replication_pushes)
                pushpath.report_traces(
                    pushpath.traces([log for _, log in replicated.replica_logs()])
                )
                rebuilds = _rebuilds(replicated, env, work, args.replication_rebuilds)
                failovers = _failovers(replicated, env, work, root, args.replication_failovers)
        finally:
            _keep_logs(work)
    return _report(
        pushes, cpu, rebuilds, failovers, generated.pack_bytes, time.monotonic() - started
    )


# -- loading ------------------------------------------------------------------------------------


def _load(replicated: localcluster.LocalCluster, source: pathlib.Path, env: dict[str, str]) -> None:
    """Pushes every branch and tag of the generated repository to the cluster's leader."""
    described = replicated.wait_healthy(timeout=HEALTHY_SECONDS, exact=True)
    started = time.monotonic()
    _git(
        env,
        "push",
        "-q",
        replicated.url(described["leader"]),
        "refs/heads/*:refs/heads/*",
        "refs/tags/*:refs/tags/*",
        cwd=source,
    )
    pushed = time.monotonic() - started
    replicated.wait_healthy(timeout=HEALTHY_SECONDS, exact=True)
    print(
        f"   loaded the cluster: push {pushed:.1f} s, all replicas in sync after "
        f"{time.monotonic() - started:.1f} s",
        flush=True,
    )


# -- push latency -------------------------------------------------------------------------------


def _pushes(
    replicated: localcluster.LocalCluster,
    single: servers.Served,
    env: dict[str, str],
    work: pathlib.Path,
    root: pathlib.Path,
    count: int,
) -> dict[str, list[float]]:
    described = replicated.wait_healthy(timeout=HEALTHY_SECONDS, exact=True)
    follower = next(r["id"] for r in described["replicas"] if r["id"] != described["leader"])
    urls = {
        "replicated": replicated.url(described["leader"]),
        "single": single.url("bench.git"),
        "forwarded": replicated.url(follower),
    }
    clones = {name: _clone_base(env, root, work / f"push-{name}") for name in TARGETS}
    times: dict[str, list[float]] = {name: [] for name in TARGETS}
    first: dict[str, float] = {}
    for index in range(count + 1):
        shift = index % len(TARGETS)
        for name in TARGETS[shift:] + TARGETS[:shift]:
            clone = clones[name]
            (clone / "pushed.txt").write_text(f"push {index} to {name}\n")
            _git(env, "add", "pushed.txt", cwd=clone)
            _git(env, "commit", "-q", "-m", f"push {index}", cwd=clone)
            started = time.perf_counter()
            _git(env, "push", "-q", urls[name], f"HEAD:refs/heads/push-{name}", cwd=clone)
            elapsed = time.perf_counter() - started
            if index == 0:
                first[name] = elapsed
            else:
                times[name].append(elapsed)
        # Push 0 creates the branch and pays the one-off scrypt check of the credentials.
        if index == 0:
            print(
                "   [push 0, creates the branch] "
                + "  ".join(f"{name} {first[name] * 1000:.1f} ms" for name in TARGETS),
                flush=True,
            )
        elif index % 10 == 0 or index == count:
            print(
                f"   [push {index}/{count}] "
                + "  ".join(f"{name} p50 {_p(times[name], 50) * 1000:.1f} ms" for name in TARGETS),
                flush=True,
            )
    return times


def _cpu(
    replicated: localcluster.LocalCluster,
    single: servers.Served,
    env: dict[str, str],
    work: pathlib.Path,
    root: pathlib.Path,
    count: int,
) -> dict[str, float]:
    """CPU seconds per acknowledged push: pushes to the cluster's leader, then to the server."""
    described = replicated.wait_healthy(timeout=HEALTHY_SECONDS, exact=True)
    urls = {
        "replicated": replicated.url(described["leader"]),
        "single": single.url("bench.git"),
    }
    pids: dict[str, Callable[[], list[int]]] = {
        "replicated": replicated.pids,
        "single": lambda: [single.process.pid],
    }
    per_push = {}
    for name, url in urls.items():
        clone = _clone_base(env, root, work / f"cpu-{name}")

        def push(index: int, clone: pathlib.Path = clone, url: str = url) -> None:
            (clone / "cpu.txt").write_text(f"push {index}\n")
            _git(env, "commit", "-q", "-a", "-m", f"cpu {index}", cwd=clone)
            _git(env, "push", "-q", url, "HEAD:refs/heads/cpu", cwd=clone)

        (clone / "cpu.txt").write_text("created\n")
        _git(env, "add", "cpu.txt", cwd=clone)
        push(-1)  # creates the branch, outside the measurement
        per_push[name] = pushpath.cpu_per_push(pids[name], push, count)
        print(f"   [cpu] {name}: {per_push[name] * 1000:.1f} ms of CPU per push", flush=True)
    return per_push


# -- rebuild ------------------------------------------------------------------------------------


def _rebuilds(
    replicated: localcluster.LocalCluster, env: dict[str, str], work: pathlib.Path, rounds: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"rebuild": [], "mirror": []}
    measures: dict[str, Callable[[int], float]] = {
        "rebuild": lambda index: _rebuild(replicated, index),
        "mirror": lambda index: _mirror(replicated, env, work, index),
    }
    _mirror(replicated, env, work, -1)  # warm-up, not counted: the leader's pack in the cache
    print(
        "   (per rebuild: seconds from the restart at which its status first showed each "
        "state or copy phase)",
        flush=True,
    )
    for index in range(rounds):
        order = ("rebuild", "mirror") if index % 2 == 0 else ("mirror", "rebuild")
        for name in order:
            times[name].append(measures[name](index))
        print(
            f"   [rebuild {index + 1}/{rounds}] rebuild {times['rebuild'][-1]:.2f} s  "
            f"clone --mirror {times['mirror'][-1]:.2f} s",
            flush=True,
        )
    return times


def _rebuild(replicated: localcluster.LocalCluster, index: int) -> float:
    """Kills a follower, wipes its data; seconds from its restart until it holds the leader's."""
    described = replicated.wait_healthy(timeout=HEALTHY_SECONDS, exact=True)
    expected = replicated.status(described["leader"])
    followers = [r["id"] for r in described["replicas"] if r["id"] != described["leader"]]
    follower = followers[index % len(followers)]
    data = replicated.data(follower)
    wiped = data.with_name(f"{data.name}.wiped")
    replicated.kill(follower)
    # Renamed away at once, before the controller restarts it (0.5 s), deleted afterwards.
    data.rename(wiped)
    deadline = time.monotonic() + HEALTHY_SECONDS
    while not data.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the controller did not restart {follower}")
        time.sleep(0.002)
    restarted = time.monotonic()
    timeline = _await_copy(replicated, follower, expected, restarted)
    elapsed = time.monotonic() - restarted
    kept = data.parent.parent / "wiped-logs"
    kept.mkdir(exist_ok=True)
    shutil.copy(wiped / "replica.log", kept / f"{follower}-before-wipe-{index}.log")
    shutil.rmtree(wiped)
    print(
        f"     {follower} rebuilt: "
        + ", ".join(f"{what} +{seconds:.2f}" for what, seconds in timeline),
        flush=True,
    )
    return elapsed


def _await_copy(
    replicated: localcluster.LocalCluster,
    replica: str,
    expected: dict[str, Any],
    restarted: float,
) -> list[tuple[str, float]]:
    """Polls the replica's status until it is the leader's; when each phase was first seen."""
    timeline: list[tuple[str, float]] = []
    seen = "no answer"
    deadline = restarted + REBUILD_SECONDS
    while time.monotonic() < deadline:
        status = replicated.status_or_none(replica)
        now = time.monotonic() - restarted
        if status is None:
            time.sleep(STATUS_POLL_SECONDS)
            continue
        phase = status["copy"]["phase"] if status["copy"]["phase"] != "idle" else status["state"]
        if not timeline or timeline[-1][0] != phase:
            timeline.append((phase, now))
        seen = f"{status['state']} at generation {status['generation']}"
        if (
            status["state"] == "InSync"
            and status["generation"] == expected["generation"]
            and status["checksum"] == expected["checksum"]
        ):
            return timeline
        time.sleep(STATUS_POLL_SECONDS)
    raise RuntimeError(
        f"{replica} did not reach generation {expected['generation']} InSync "
        f"in {REBUILD_SECONDS:.0f} s; last seen {seen}"
    )


def _mirror(
    replicated: localcluster.LocalCluster, env: dict[str, str], work: pathlib.Path, index: int
) -> float:
    described = replicated.wait_healthy(timeout=HEALTHY_SECONDS, exact=True)
    url = replicated.url(described["leader"])
    target = work / f"mirror-{index}"
    started = time.monotonic()
    _git(env, "clone", "-q", "--mirror", url, str(target))
    elapsed = time.monotonic() - started
    shutil.rmtree(target)
    return elapsed


# -- failover -----------------------------------------------------------------------------------


class Pusher:
    """A client that pushes tiny commits continually, to the next replica after a failure."""

    def __init__(self, clone: pathlib.Path, urls: list[str], env: dict[str, str]) -> None:
        self.clone = clone
        self.urls = urls
        self.env = env
        self.pushes: list[tuple[float, float, bool]] = []
        """(started, ended, succeeded) per push, monotonic seconds."""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pusher", daemon=True)

    def _run(self) -> None:
        target = 0
        number = 0
        while not self.stop.is_set():
            number += 1
            _git(self.env, "commit", "-q", "--allow-empty", "-m", f"tick {number}", cwd=self.clone)
            command = ["git", "push", "-q", "--force", self.urls[target], "HEAD:refs/heads/tick"]
            started = time.monotonic()
            try:
                result = subprocess.run(
                    command,
                    cwd=self.clone,
                    env=self.env,
                    capture_output=True,
                    timeout=PUSH_TIMEOUT,
                )
                succeeded = result.returncode == 0
            except subprocess.TimeoutExpired:
                succeeded = False
            self.pushes.append((started, time.monotonic(), succeeded))
            if not succeeded:
                target = (target + 1) % len(self.urls)

    def first_success(self, after: float) -> tuple[float, int] | None:
        """End of the first successful push started after ``after``, and the failures before."""
        if not self.thread.is_alive():
            raise RuntimeError("the pushing client stopped")
        failures = 0
        for started, ended, succeeded in list(self.pushes):
            if started < after:
                continue
            if succeeded:
                return ended, failures
            failures += 1
        return None


def _failovers(
    replicated: localcluster.LocalCluster,
    env: dict[str, str],
    work: pathlib.Path,
    root: pathlib.Path,
    rounds: int,
) -> dict[str, list[float]]:
    replicated.wait_healthy(timeout=HEALTHY_SECONDS)
    urls = list(replicated.urls().values())
    pusher = Pusher(_clone_base(env, root, work / "failover"), urls, env)
    times: dict[str, list[float]] = {"unavailable": [], "elected": []}
    pusher.thread.start()
    try:
        for index in range(rounds):
            unavailable, elected = _failover(replicated, pusher)
            times["unavailable"].append(unavailable)
            times["elected"].append(elected)
            print(
                f"   [failover {index + 1}/{rounds}] new leader in cluster.json after "
                f"{elected:.2f} s, first push after {unavailable:.2f} s",
                flush=True,
            )
    finally:
        pusher.stop.set()
        pusher.thread.join()
    return times


def _failover(replicated: localcluster.LocalCluster, pusher: Pusher) -> tuple[float, float]:
    """Kills the leader under the push load: (seconds without a push, seconds to a new leader)."""
    # Under the push load the replicas' generations, read a moment apart, rarely agree:
    # healthy here is every replica running and in sync by its own account.
    described = replicated.wait_healthy(timeout=HEALTHY_SECONDS)
    healthy = time.monotonic()
    _wait(lambda: pusher.first_success(healthy), "a push before the kill")
    term, leader = described["term"], described["leader"]
    replicated.kill(leader)
    killed = time.monotonic()

    def new_leader() -> tuple[float, str] | None:
        now = replicated.cluster()
        if now["term"] > term and now["leader"] != leader:
            return time.monotonic() - killed, f"{now['leader']} in term {now['term']}"
        return None

    elected, who = _wait(new_leader, f"a leader after {leader} in term {term}")
    ended, failures = _wait(lambda: pusher.first_success(killed), "a successful push")
    print(
        f"     killed leader {leader} (term {term}): {who}; {failures} pushes failed meanwhile",
        flush=True,
    )
    return ended - killed, elected


def _wait(check: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + FAILOVER_SECONDS
    while time.monotonic() < deadline:
        result = check()
        if result is not None:
            return result
        time.sleep(0.01)
    raise RuntimeError(f"no {what} within {FAILOVER_SECONDS:.0f} s")


# -- report -------------------------------------------------------------------------------------


def _report(
    pushes: dict[str, list[float]],
    cpu: dict[str, float],
    rebuilds: dict[str, list[float]],
    failovers: dict[str, list[float]],
    pack_bytes: int,
    wall: float,
) -> dict[str, float]:
    p50 = {name: _p(pushes[name], 50) for name in TARGETS}
    p99 = {name: _p(pushes[name], 99) for name in TARGETS}
    rebuild = statistics.median(rebuilds["rebuild"])
    mirror = statistics.median(rebuilds["mirror"])
    unavailable = failovers["unavailable"]
    elected = failovers["elected"]
    ratios = {
        "push_p50": p50["replicated"] / p50["single"],
        "push_p99": p99["replicated"] / p99["single"],
        "push_cpu": cpu["replicated"] / cpu["single"],
        "rebuild": rebuild / mirror,
        "unavailable_median": statistics.median(unavailable) / UNAVAILABLE_TARGET_SECONDS,
        "unavailable_max": max(unavailable) / UNAVAILABLE_TARGET_SECONDS,
    }

    def verdict(ratio: float, target: float) -> str:
        return "meets" if ratio <= target else "MISSES"

    print("   summary (3 replicas on loopback, traffic direct)")
    print(
        f"   push p50     3 replicas {p50['replicated'] * 1000:7.1f} ms  single "
        f"{p50['single'] * 1000:7.1f} ms  ratio {ratios['push_p50']:.2f}  "
        f"(target <= {PUSH_P50_TARGET}: {verdict(ratios['push_p50'], PUSH_P50_TARGET)})"
    )
    print(
        f"   push p99     3 replicas {p99['replicated'] * 1000:7.1f} ms  single "
        f"{p99['single'] * 1000:7.1f} ms  ratio {ratios['push_p99']:.2f}  "
        f"(target <= {PUSH_P99_TARGET}: {verdict(ratios['push_p99'], PUSH_P99_TARGET)})"
    )
    print(
        f"   push CPU     3 replicas {cpu['replicated'] * 1000:7.1f} ms  single "
        f"{cpu['single'] * 1000:7.1f} ms  ratio {ratios['push_cpu']:.2f}  "
        f"(target <= {pushpath.CPU_TARGET:g}: {verdict(ratios['push_cpu'], pushpath.CPU_TARGET)})"
    )
    print(
        f"   push through a follower (forwarded): p50 {p50['forwarded'] * 1000:.1f} ms, "
        f"p99 {p99['forwarded'] * 1000:.1f} ms (no target)"
    )
    print(
        f"   rebuild      {rebuild:.2f} s ({pack_bytes / MIB / rebuild:.1f} MiB/s)  "
        f"clone --mirror {mirror:.2f} s ({pack_bytes / MIB / mirror:.1f} MiB/s)  "
        f"time ratio {ratios['rebuild']:.2f}, speed {mirror / rebuild:.2f}x the clone's  "
        f"(target time ratio <= {REBUILD_TIME_TARGET}: "
        f"{verdict(ratios['rebuild'], REBUILD_TIME_TARGET)})"
    )
    print(
        f"   failover     writes back after median {statistics.median(unavailable):.2f} s, "
        f"max {max(unavailable):.2f} s; new leader in cluster.json after median "
        f"{statistics.median(elected):.2f} s, max {max(elected):.2f} s"
    )
    print(
        f"                ratio against the {UNAVAILABLE_TARGET_SECONDS:.0f} s target (no "
        f"reference system): median {ratios['unavailable_median']:.2f}, max "
        f"{ratios['unavailable_max']:.2f} "
        f"({verdict(ratios['unavailable_max'], 1.0)} the target at the max)"
    )
    print(f"   wall time {wall:.0f} s; replica logs in {LOGS}", flush=True)
    return ratios


# -- helpers ------------------------------------------------------------------------------------


def _clone_base(env: dict[str, str], root: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    _git(
        env,
        "clone",
        "-q",
        "--single-branch",
        "--branch",
        "base",
        f"file://{root / 'bench.git'}",
        str(target),
    )
    return target


def _keep_logs(work: pathlib.Path) -> None:
    """Copies the controller's, the replicas' and the single server's logs out of ``work``."""
    if LOGS.exists():
        shutil.rmtree(LOGS)
    LOGS.mkdir(parents=True)
    directory = work / "cluster"
    for log in directory.glob("wiped-logs/*.log"):
        shutil.copy(log, LOGS / log.name)
    for log in directory.glob("replicas/*/replica.log"):
        shutil.copy(log, LOGS / f"{log.parent.name}.log")
    if (directory / "controller.log").exists():
        shutil.copy(directory / "controller.log", LOGS / "controller.log")
    if (work / "gitquorum.log").exists():
        shutil.copy(work / "gitquorum.log", LOGS / "single.log")
