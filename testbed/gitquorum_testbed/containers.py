"""A pod's containers as processes: the record of each, and starting and stopping them.

A container is a process group: ``podinit`` is started in a session of its own (inside the
pod's sandbox, in a private mount namespace) and execs the command, so signalling the group
reaches whatever the command started too. The record keeps what the status reports: the
current process, the last exit, the restarts, the reason it is waiting, its probes' states.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from gitquorum_testbed import podstatus, probes


def now_iso() -> str:
    return podstatus.timestamp(datetime.datetime.now(datetime.UTC))


@dataclasses.dataclass
class Container:
    """One container's process and history."""

    spec: client.V1Container
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    restarts: int = 0
    terminated: dict[str, Any] | None = None
    last_state: dict[str, Any] | None = None
    waiting_reason: str = "ContainerCreating"
    waiting_message: str | None = None
    backoff_until: float = 0.0
    readiness: probes.ProbeState | None = None
    liveness: probes.ProbeState | None = None
    startup: probes.ProbeState | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def succeeded(self) -> bool:
        return self.proc is None and podstatus.exited_cleanly(self.terminated)

    def snapshot(self) -> podstatus.ContainerSnapshot:
        return podstatus.ContainerSnapshot(
            name=self.spec.name,
            image=self.spec.image or "",
            init=self.init,
            pid=self.proc.pid if self.proc is not None and self.running else None,
            started_at=self.started_at,
            restarts=self.restarts,
            terminated=self.terminated,
            last_state=self.last_state,
            waiting_reason=self.waiting_reason,
            waiting_message=self.waiting_message,
            startup_passed=self.startup is None or self.startup.result is True,
            readiness_passed=self.readiness is None or self.readiness.result is True,
        )


def podinit_argv(spec_path: Path) -> list[str]:
    """The command that runs a container from its spec file, once inside the sandbox."""
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        sys.executable,
        "-m",
        "gitquorum_testbed.podinit",
        str(spec_path),
    ]


def launch(c: Container, *, argv: list[str], log_path: Path) -> None:
    """Start ``argv`` as the container's process, with fresh probe states."""
    with open(log_path, "ab") as out:
        c.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    c.started_at = now_iso()
    c.started_mono = time.monotonic()
    c.waiting_reason, c.waiting_message = "", None
    for attr in ("readiness", "liveness", "startup"):
        probe = getattr(c.spec, f"{attr}_probe")
        setattr(c, attr, probes.ProbeState(probe, started=c.started_mono) if probe else None)


def record_exit(c: Container) -> int:
    """Record the exit of the container's process, which has ended; returns its exit code."""
    assert c.proc is not None
    code = c.proc.returncode
    exit_code = 128 - code if code < 0 else code
    c.terminated = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": c.started_at,
        "finishedAt": now_iso(),
        "containerID": f"testbed://{c.proc.pid}",
    }
    kill_group(c.proc, signal.SIGKILL)  # reap what the main process left behind
    c.proc = None
    c.readiness = c.liveness = c.startup = None
    return exit_code


def kill_group(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    if sig == signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def stop_group(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL if the process is still there after ``grace`` seconds."""
    if proc is None:
        return
    kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        kill_group(proc, signal.SIGKILL)
