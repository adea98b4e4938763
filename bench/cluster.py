"""A ``gitquorum local`` cluster as a child process, for the replication benchmark.

The controller runs the replicas and writes ``cluster.json`` every tick; this module reads
that file, asks a replica for its status over the admin API (the file lags by up to a tick,
the status does not), waits until every replica holds the leader's state, and stops the
controller, which stops its replicas, however the benchmark ends.
"""

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

STARTUP_SECONDS = 60.0
STOP_SECONDS = 30.0
POLL_SECONDS = 0.02
STATUS_TIMEOUT = 1.0
"""Seconds for one admin status request: a replica that takes longer counts as not answering."""
# Loopback needs no proxy, whatever the environment says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Cluster:
    """A running ``gitquorum local``: its description, its replicas' status, their URLs."""

    def __init__(self, directory: pathlib.Path, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.process = process
        self.last: dict[str, Any] = {}
        self._token = ""

    def read(self) -> dict[str, Any]:
        """The newest ``cluster.json`` (written atomically by the controller)."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"gitquorum local exited ({self.process.returncode}):\n{self.controller_log()}"
            )
        self.last = json.loads((self.directory / "cluster.json").read_text())
        return self.last

    def replica(self, replica_id: str) -> dict[str, Any]:
        return next(r for r in self.read()["replicas"] if r["id"] == replica_id)

    def url(self, replica: dict[str, Any]) -> str:
        """The replica's clone URL with the push credentials in it."""
        credentials = self.last["credentials"]
        parts = urllib.parse.urlsplit(str(replica["url"]))
        netloc = f"{credentials['username']}:{credentials['password']}@{parts.netloc}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def status(self, replica: dict[str, Any]) -> dict[str, Any] | None:
        """The replica's ``/admin/status``, or None when it does not answer."""
        if not self._token:
            self._token = pathlib.Path(self.last["token_file"]).read_text().strip()
        request = urllib.request.Request(
            f"{replica['peer_url']}/admin/status",
            headers={"Authorization": f"Bearer {self._token}"},
        )
        try:
            with _DIRECT.open(request, timeout=STATUS_TIMEOUT) as answer:
                status: dict[str, Any] = json.loads(answer.read())
                return status
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def wait_healthy(self, timeout: float, *, exact: bool = True) -> dict[str, Any]:
        """Waits until every replica runs and is in sync, and (``exact``) holds the leader's
        generation and checksum."""
        deadline = time.monotonic() + timeout
        seen = "nothing yet"
        while time.monotonic() < deadline:
            cluster = self.read()
            problem = _health_problem(cluster, exact=exact)
            if problem is None:
                return cluster
            seen = problem
            time.sleep(POLL_SECONDS * 5)
        raise RuntimeError(f"the cluster was not healthy within {timeout:.0f} s: {seen}")

    def controller_log(self) -> str:
        return (self.directory / "controller.log").read_text(errors="replace")[-4000:]


def _health_problem(cluster: dict[str, Any], *, exact: bool) -> str | None:
    """What keeps the cluster from being healthy, or None."""
    leader = next(r for r in cluster["replicas"] if r["id"] == cluster["leader"])
    if leader["role"] != "Leader":
        return f"{leader['id']} should lead but reports role {leader['role']}"
    for replica in cluster["replicas"]:
        if replica["pid"] is None:
            return f"{replica['id']} is not running"
        if replica["state"] != "InSync":
            return f"{replica['id']} is {replica['state']}"
        if exact and (replica["generation"], replica["checksum"]) != (
            leader["generation"],
            leader["checksum"],
        ):
            return (
                f"{replica['id']} at generation {replica['generation']}, "
                f"leader at {leader['generation']}"
            )
    return None


@contextlib.contextmanager
def local(
    directory: pathlib.Path,
    env: dict[str, str],
    *,
    replicas: int = 3,
    replica_arguments: tuple[str, ...] = (),
) -> Iterator[Cluster]:
    """``gitquorum local`` in ``directory``, stopped (with its replicas) on the way out."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "gitquorum",
        "local",
        "--replicas",
        str(replicas),
        "--dir",
        str(directory),
        *(f"--replica-argument={argument}" for argument in replica_arguments),
    ]
    with (directory / "controller.log").open("wb") as output:
        # Its own session: a Ctrl-C reaches it only through the SIGTERM below, after the
        # benchmark's clean-up started, not halfway through a measurement.
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    cluster = Cluster(directory, process)
    try:
        _wait_started(cluster)
        yield cluster
    finally:
        _stop(cluster)


def _wait_started(cluster: Cluster) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while not (cluster.directory / "cluster.json").exists():
        if cluster.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gitquorum local did not start:\n{cluster.controller_log()}")
        time.sleep(POLL_SECONDS)
    cluster.wait_healthy(STARTUP_SECONDS)


def _stop(cluster: Cluster) -> None:
    """SIGTERM to the controller, which stops its replicas; SIGKILL to all if it hangs."""
    process = cluster.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
            return
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # The controller is gone without stopping its replicas (it hung or died): they run in
    # sessions of their own, so they are stopped here by the pids it last reported, each
    # checked to still be one of this cluster's replicas.
    with contextlib.suppress(OSError, ValueError):
        described = json.loads((cluster.directory / "cluster.json").read_text())
        for replica in described["replicas"]:
            if replica["pid"] is not None and _is_replica(replica["pid"], cluster.directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(replica["pid"], signal.SIGKILL)


def _is_replica(pid: int, directory: pathlib.Path) -> bool:
    try:
        command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"replica" in command and any(str(directory).encode() in part for part in command)
