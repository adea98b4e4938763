"""The git CLI as the fault clients and the checker run it: one HOME of its own, time limits."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import subprocess

READ_TIMEOUT = 3.0
"""Seconds before a client gives a fetch or ls-remote up, for the same reason."""


@dataclasses.dataclass(frozen=True)
class GitResult:
    returncode: int | None
    """None when git was killed at its timeout."""
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Git:
    """The git CLI with an isolated environment and a timeout that kills its whole group."""

    def __init__(self, home: pathlib.Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "Fault Client",
            "GIT_AUTHOR_EMAIL": "client@example.com",
            "GIT_COMMITTER_NAME": "Fault Client",
            "GIT_COMMITTER_EMAIL": "client@example.com",
            "LANG": "C",
        }

    def run(
        self, *args: str, cwd: pathlib.Path | None = None, timeout: float = READ_TIMEOUT
    ) -> GitResult:
        # A session of its own: on a timeout, git-remote-http dies with git.
        process = subprocess.Popen(
            ["git", *args],
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            return GitResult(None, stdout, stderr)
        return GitResult(process.returncode, stdout, stderr)

    def out(self, *args: str, cwd: pathlib.Path | None = None, timeout: float = 60.0) -> str:
        """Output of a local command that must succeed."""
        result = self.run(*args, cwd=cwd, timeout=timeout)
        if not result.ok:
            raise AssertionError(
                f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result.stdout
