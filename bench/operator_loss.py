"""Node loss: a follower's node stopped (the heal) and the leader's node stopped (failover).

- heal: after a push of a few MiB, a follower's node is stopped (power loss); the time until a
  replica with a new name is InSync in ``status.replicaStatuses`` and the lost one has left
  ``status.members``. Target: 60 s plus the copy time, reported apart (the new replica's pod
  Running to InSync, and its Rebuilding or Behind state to InSync when the polls saw one);
- failover: a client pushes a new commit to a new branch through the Service in a loop, each
  push with a 5 s timeout; the leader's node is stopped; the time from the stop to the end of
  the first successful push started after it. Target: 15 s, the node-monitor grace included.

Both stop worker nodes only (never node-system, where the operator runs) and start them again.
There is no reference system: the ratios are against the targets.
"""

import dataclasses
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import kube
from gitquorum_testbed import cluster

HEAL_TARGET = 60.0
"""Seconds from a follower's node stop to its replacement in sync, plus the copy time."""
FAILOVER_TARGET = 15.0
HEAL_TIMEOUT = 300.0
PUSH_TIMEOUT = 5.0
MIB = 1024 * 1024
Body = dict[str, Any]


@dataclasses.dataclass
class Heal:
    seconds: float
    """From the node stop to a new replica InSync and the lost one out of the members."""
    copy: float
    """The new replica's pod Running to InSync."""
    rebuilding: float | None
    """The new replica's first Rebuilding/Behind state to InSync, when the polls saw one."""
    data_bytes: int


def follower(bed: cluster.Testbed, api: kube.Kube, mib: int) -> Heal:
    print(f"   heal: {mib} MiB pushed, then a follower's node stopped", flush=True)
    with api.namespace("heal") as namespace, tempfile.TemporaryDirectory() as work:
        api.create_ready(namespace)
        url = api.clone_url(namespace, "bench")
        head, size = _push_data(url, Path(work), mib)
        status = _wait_all_in_sync(api, namespace)
        leader = status["leader"]
        chosen = next(r for r in status["replicaStatuses"] if r["name"] != leader)
        lost, node = chosen["name"], chosen["node"]
        before = {r["name"] for r in status["replicaStatuses"]}
        print(f"     stopping {node}, the node of follower {lost} (leader {leader})", flush=True)
        stopped = time.monotonic()
        bed.node_stop(node)
        try:
            heal = _watch_heal(api, namespace, lost=lost, before=before, stopped=stopped)
        finally:
            bed.node_start(node)
        remote = _ls_remote(url, Path(work))
        if remote != head:
            raise RuntimeError(f"main is {remote} after the heal, {head} was pushed")
    return dataclasses.replace(heal, data_bytes=size)


def _watch_heal(
    api: kube.Kube, namespace: str, *, lost: str, before: set[str], stopped: float
) -> Heal:
    seen: dict[tuple[str, str], float] = {}
    running: dict[str, float] = {}
    last = ""
    deadline = stopped + HEAL_TIMEOUT
    while time.monotonic() < deadline:
        status = api.repository(namespace, "bench").get("status") or {}
        now = time.monotonic()
        for pod in api.core.list_namespaced_pod(namespace).items:
            if pod.status.phase == "Running":
                running.setdefault(pod.metadata.name, now)
        states = {r["name"]: r["state"] for r in status.get("replicaStatuses") or ()}
        for name, state in states.items():
            seen.setdefault((name, state), now)
        line = ", ".join(f"{n} {s}" for n, s in states.items())
        if line != last:
            print(f"     +{now - stopped:5.1f} s  {line}", flush=True)
            last = line
        members = {m["name"] for m in status.get("members") or ()}
        new = [n for n, s in states.items() if n not in before and s == "InSync"]
        if lost not in members and new:
            insync = seen[(new[0], "InSync")]
            started = running.get(new[0], insync)
            copying = [seen[(new[0], s)] for s in ("Rebuilding", "Behind") if (new[0], s) in seen]
            return Heal(
                seconds=now - stopped,
                copy=insync - started,
                rebuilding=insync - min(copying) if copying else None,
                data_bytes=0,
            )
        time.sleep(0.2)
    raise RuntimeError(f"no replacement of {lost} in sync within {HEAL_TIMEOUT:.0f} s: {last}")


def _wait_all_in_sync(api: kube.Kube, namespace: str) -> Body:
    def check() -> Body | None:
        status: Body = api.repository(namespace, "bench").get("status") or {}
        replicas = status.get("replicaStatuses") or ()
        return (
            status if len(replicas) == 3 and all(r["state"] == "InSync" for r in replicas) else None
        )

    return kube.wait("all 3 replicas InSync", check, timeout=kube.READY_TIMEOUT)


def _push_data(url: str, work: Path, mib: int) -> tuple[str, int]:
    """Pushes ``mib`` MiB of incompressible files in 8 commits; returns main's commit and size."""
    env = kube.git_env(str(work))
    repo = work / "data"
    _git(env, "init", "-q", "--initial-branch=main", str(repo))
    rng = random.Random(7)
    for index in range(8):
        (repo / f"blob-{index}.bin").write_bytes(rng.randbytes(mib * MIB // 8))
        _git(env, "add", ".", cwd=repo)
        _git(env, "commit", "-q", "-m", f"data {index}", cwd=repo)
    started = time.monotonic()
    _git(env, "push", "-q", url, "HEAD:refs/heads/main", cwd=repo)
    print(f"     pushed {mib} MiB in {time.monotonic() - started:.1f} s", flush=True)
    head = _git(env, "rev-parse", "HEAD", cwd=repo).strip()
    return head, mib * MIB


def _ls_remote(url: str, work: Path) -> str:
    output = _git(kube.git_env(str(work)), "ls-remote", url, "refs/heads/main")
    return output.split()[0] if output else ""


@dataclasses.dataclass
class Failover:
    seconds: float
    """From the node stop to the end of the first successful push started after it."""
    elected: float
    """From the node stop to a new leader in the status."""
    failed_pushes: int


class Pusher:
    """Pushes a new commit to a new branch in a loop, each push with a short timeout."""

    def __init__(self, url: str, work: Path) -> None:
        self.url = url
        self.env = kube.git_env(str(work))
        self.repo = work / "pusher"
        self.results: list[tuple[float, float, bool]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="pusher", daemon=True)
        _git(self.env, "init", "-q", "--initial-branch=main", str(self.repo))

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()

    def first_success_after(self, moment: float) -> float | None:
        return next((end for start, end, ok in list(self.results) if ok and start > moment), None)

    def _loop(self) -> None:
        index = 0
        while not self.stopping.is_set():
            index += 1
            _git(self.env, "commit", "-q", "--allow-empty", "-m", f"push {index}", cwd=self.repo)
            started = time.monotonic()
            ok = _run_with_timeout(
                ["git", "push", "-q", self.url, f"HEAD:refs/heads/p-{index}"],
                env=self.env,
                cwd=self.repo,
                timeout=PUSH_TIMEOUT,
            )
            self.results.append((started, time.monotonic(), ok))
            if not ok:
                self.stopping.wait(0.1)


def leader(bed: cluster.Testbed, api: kube.Kube) -> Failover:
    print("   failover: pushes in a loop, then the leader's node stopped", flush=True)
    with api.namespace("failover") as namespace, tempfile.TemporaryDirectory() as work:
        api.create_ready(namespace)
        pusher = Pusher(api.clone_url(namespace, "bench"), Path(work))
        pusher.start()
        stopped_node = None
        try:
            kube.wait(
                "3 successful pushes before the stop",
                lambda: sum(ok for _, _, ok in list(pusher.results)) >= 3,
                timeout=60,
            )
            status = api.repository(namespace, "bench")["status"]
            leader = status["leader"]
            node = next(r["node"] for r in status["replicaStatuses"] if r["name"] == leader)
            print(f"     stopping {node}, the node of leader {leader}", flush=True)
            stopped = time.monotonic()
            bed.node_stop(node)
            stopped_node = node
            elected = kube.wait(
                "a new leader in the status",
                lambda: _new_leader(api, namespace, leader, stopped),
                timeout=HEAL_TIMEOUT,
            )
            ended = kube.wait(
                "a successful push started after the stop",
                lambda: pusher.first_success_after(stopped),
                timeout=HEAL_TIMEOUT,
            )
        finally:
            pusher.stop()
            if stopped_node is not None:
                bed.node_start(stopped_node)
        failed = sum(1 for start, _, ok in pusher.results if start > stopped and not ok)
        print(
            f"     new leader after {elected:.1f} s, writes back after {ended - stopped:.1f} s; "
            f"{failed} pushes failed meanwhile",
            flush=True,
        )
    return Failover(seconds=ended - stopped, elected=elected, failed_pushes=failed)


def _new_leader(api: kube.Kube, namespace: str, old: str, stopped: float) -> float | None:
    leader = (api.repository(namespace, "bench").get("status") or {}).get("leader")
    return time.monotonic() - stopped if leader and leader != old else None


def _git(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:2])} failed:\n{result.stderr}")
    return result.stdout


def _run_with_timeout(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> bool:
    """Runs ``argv`` in a process group of its own, killed whole at the timeout."""
    process = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return process.wait(timeout=timeout) == 0
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False
