"""Replica processes for integration tests: ``gitquorum replica`` with a fixed configuration.

Unlike ``gitquorum local`` there is no controller here: the tests start, stop and configure
replicas themselves, so that each step of the protocol can be looked at on its own.
"""

import json
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from gitquorum.replication import invocation, membership
from tests import waiting
from tests.integration import helpers
from tests.ports import free_port

STARTUP_DEADLINE = 20.0


class Replicas:
    """A set of replica processes sharing a token, an auth file and a configuration."""

    def __init__(
        self,
        base: pathlib.Path,
        auth_file: pathlib.Path,
        count: int,
        extra_args: tuple[str, ...] = (),
        program: Callable[[str], Sequence[str]] | None = None,
        startup_timeout: float = STARTUP_DEADLINE,
    ) -> None:
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args
        """More arguments of every replica's command line."""
        self.program = program or (lambda replica: (sys.executable, "-m", "gitquorum"))
        """How to run gitquorum for a replica: this checkout's, or an image's (tests/image)."""
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.auth_file = auth_file
        self.token = secrets.token_hex(16)
        self.token_file = base / "token"
        self.token_file.write_text(self.token)
        self.ids = [f"r{index}" for index in range(count)]
        self.ports = {replica: (free_port(), free_port()) for replica in self.ids}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.term = 1
        self.leader = self.ids[0]
        self.stopped: frozenset[str] = frozenset()

    def configuration(self) -> membership.Configuration:
        members = tuple(
            membership.Member(
                replica,
                f"http://127.0.0.1:{self.ports[replica][0]}",
                f"http://127.0.0.1:{self.ports[replica][1]}",
            )
            for replica in self.ids
        )
        return membership.Configuration(
            term=self.term, leader=self.leader, members=members, stopped=self.stopped
        )

    def data(self, replica: str) -> pathlib.Path:
        return self.base / replica

    def log(self, replica: str) -> str:
        path = self.data(replica) / "replica.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, replica: str) -> None:
        self.data(replica).mkdir(parents=True, exist_ok=True)
        port, peer_port = self.ports[replica]
        command = invocation.ReplicaCommand(
            replica=replica,
            data=str(self.data(replica)),
            listen=f"127.0.0.1:{port}",
            peer_listen=f"127.0.0.1:{peer_port}",
            peer_token_file=str(self.token_file),
            auth_file=str(self.auth_file),
            anonymous_read=True,
            extra=("--prepare-timeout", "2", "--log-level", "DEBUG", *self.extra_args),
        ).argv(program=self.program(replica))
        with (self.data(replica) / "replica.log").open("ab") as output:
            self.processes[replica] = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=dict(os.environ)
            )
        waiting.until(
            f"replica {replica} to answer on its replication port",
            lambda: self.status(replica),
            timeout=self.startup_timeout,
            interval=0.05,
            seen=lambda: self.log(replica)[-2000:],
        )

    def configure(self, replica: str) -> dict[str, Any]:
        return self.call(replica, "PUT", "/admin/configuration", self.configuration().to_json())

    def start_all(self) -> None:
        for replica in self.ids:
            self.start(replica)
        for replica in self.ids:
            self.configure(replica)
        self.wait_in_sync()

    def kill(self, replica: str) -> None:
        process = self.processes.pop(replica)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def call(
        self,
        replica: str,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        token: str | None = None,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[replica][1]}{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def status(self, replica: str) -> dict[str, Any]:
        return self.call(replica, "GET", "/admin/status")

    def url(self, replica: str, user: tuple[str, str] = helpers.ALICE) -> str:
        return f"http://{user[0]}:{user[1]}@127.0.0.1:{self.ports[replica][0]}/repository.git"

    def wait_in_sync(self, replicas: list[str] | None = None, timeout: float = 20.0) -> str:
        """Waits until the replicas agree on generation and checksum and serve reads."""
        chosen = replicas or list(self.processes)

        def agreed() -> str | None:
            statuses = [self.status(replica) for replica in chosen]
            states = {(s["generation"], s["checksum"]) for s in statuses}
            if len(states) == 1 and all(s["readable"] for s in statuses):
                return str(statuses[0]["checksum"])
            return None

        return waiting.until(
            f"replicas {chosen} to agree and serve reads",
            agreed,
            timeout=timeout,
            interval=0.05,
            seen=lambda: [
                {k: self.status(r).get(k) for k in ("replica", "generation", "state", "readable")}
                for r in chosen
            ],
        )


def http_error(call: Any) -> urllib.error.HTTPError:
    """The HTTPError a call raises (the call is expected to fail)."""
    try:
        call()
    except urllib.error.HTTPError as error:
        return error
    raise AssertionError("the call succeeded; an HTTP error was expected")
