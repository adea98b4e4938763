"""Background processes of the testbed: started detached, tracked by pid files, stopped surely.

A pid file records the pid and the process's start time (from /proc), so a recycled pid is never
mistaken for one of ours and never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class ProcessError(RuntimeError):
    """A testbed process failed to start or to become healthy."""


def start(
    name: str,
    argv: Sequence[str],
    *,
    pids: Path,
    logs: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` in a session of its own with output to ``logs/<name>.log``."""
    pids.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    record = {"pid": proc.pid, "start": _start_time(proc.pid), "argv": list(argv)}
    (pids / f"{name}.json").write_text(json.dumps(record))
    return proc.pid


def running(name: str, *, pids: Path) -> int | None:
    """The pid of ``name`` if the process recorded for it is still alive."""
    path = pids / f"{name}.json"
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = int(record["pid"])
    if _start_time(pid) != record.get("start"):
        return None
    return pid if _alive(pid) else None


def names(pids: Path) -> list[str]:
    return sorted(p.stem for p in pids.glob("*.json")) if pids.exists() else []


def stop(name: str, *, pids: Path, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Signal the process's whole session, wait up to ``grace`` seconds, then SIGKILL it."""
    pid = running(name, pids=pids)
    if pid is not None:
        _signal_group(pid, sig)
        deadline = time.monotonic() + grace
        while running(name, pids=pids) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if running(name, pids=pids) is not None:
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while running(name, pids=pids) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
    (pids / f"{name}.json").unlink(missing_ok=True)


def wait_until(what: str, check: object, *, timeout: float, log: Path | None = None) -> None:
    """Poll ``check()`` until it is truthy; fail saying what was awaited and the log's tail."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        else:
            if last:
                return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = (
            "\n--- last lines of "
            + str(log)
            + " ---\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        )
    raise ProcessError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{tail}")


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _alive(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs.

    A zombie main thread is not enough to call a process gone: when a multi-threaded process
    (every Go binary) is killed, its main thread can turn zombie while other threads are still
    tearing down and still hold its files, listening sockets included. Restarting on the
    same port at that moment fails with "address in use".
    """
    try:
        tasks = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    for task in tasks:
        with contextlib.suppress(OSError, IndexError):
            if _stat_fields(task)[0] not in ("Z", "X"):
                return True
    return False


def _start_time(pid: int) -> str | None:
    try:
        return _stat_fields(pid)[19]
    except (OSError, IndexError):
        return None
