"""The two servers under comparison, as child processes: ``gitquorum serve`` and ``git daemon``."""

import contextlib
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

from gitquorum.server import auth, passwords
from tests.ports import free_port

USER = ("bench", "bench-token-0123456789")
STARTUP_SECONDS = 30.0
SERVING = re.compile(r"serving repositories under .* on http://[^:]+:(\d+)")


class Served:
    """A running server: its process, the URL of a repository, its memory."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], url: str) -> None:
        self.name = name
        self.process = process
        self.base_url = url

    def url(self, repository: str) -> str:
        return f"{self.base_url}/{repository}"

    def memory(self) -> tuple[int, int]:
        """Current and peak resident memory of the server process, in bytes."""
        status = pathlib.Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)


@contextlib.contextmanager
def gitquorum(
    root: pathlib.Path, work: pathlib.Path, env: dict[str, str], extra: Sequence[str] = ()
) -> Iterator[Served]:
    """``gitquorum serve`` with an auth file (default hash cost) and anonymous read; ``extra``
    arguments after those (SSH's, say)."""
    auth_file = work / "users"
    secret = passwords.hash_token(USER[1].encode())
    auth_file.write_text(auth.render(USER[0], secret, permission=auth.Permission.WRITE) + "\n")
    log = work / "gitquorum.log"
    command = [
        sys.executable,
        "-m",
        "gitquorum",
        "serve",
        "--root",
        str(root),
        "--listen",
        "127.0.0.1:0",
        "--auth-file",
        str(auth_file),
        "--anonymous-read",
        "--log-level",
        "INFO",
        *extra,
    ]  # as in production: one log line per request
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        port = _wait_for_port(process, log)
        yield Served("gitquorum", process, f"http://{USER[0]}:{USER[1]}@127.0.0.1:{port}")
    finally:
        _stop(process)


@contextlib.contextmanager
def git_daemon(root: pathlib.Path, env: dict[str, str]) -> Iterator[Served]:
    """``git daemon`` exporting every repository, receive-pack enabled."""
    port = free_port()
    command = [
        "git",
        "daemon",
        "--reuseaddr",
        "--export-all",
        "--enable=receive-pack",
        f"--base-path={root}",
        "--listen=127.0.0.1",
        f"--port={port}",
        str(root),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        _wait_for_listener(process, port)
        yield Served("git-daemon", process, f"git://127.0.0.1:{port}")
    finally:
        _stop(process)


def _wait_for_port(process: subprocess.Popen[bytes], log: pathlib.Path) -> int:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gitquorum serve exited:\n{log.read_text()}")
        match = SERVING.search(log.read_text())
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise RuntimeError(f"gitquorum serve did not start in {STARTUP_SECONDS} s:\n{log.read_text()}")


def _wait_for_listener(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("git daemon exited")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"git daemon did not listen on {port} in {STARTUP_SECONDS} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
