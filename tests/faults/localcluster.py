"""``gitquorum local`` under the control of a fault test or a benchmark.

:class:`LocalCluster` runs it as a child process (three replicas on loopback and the
controller that restarts and elects) and offers the replicas' URLs and admin status, their
processes and data, and waits for states of the cluster that poll with a deadline. With
``links`` (the default) every connection goes through a relay, so that ``cut`` and ``heal``
can partition a replica; ``kill`` (SIGKILL) needs no relay. The benchmarks run without
links: traffic goes direct, so that a relay's copy is not part of what they measure.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from tests import waiting

STARTUP_TIMEOUT = 30.0
"""Seconds for the cluster to elect its first leader with every replica in sync."""
STATE_TIMEOUT = 30.0
"""Seconds for the cluster to reach a state after a fault (a new leader, a replica back)."""
STATUS_TIMEOUT = 2.0
"""Seconds for a replica's admin status; a cut replica never answers."""
STOP_TIMEOUT = 30.0
"""Seconds for the controller to stop its replicas and exit on SIGTERM before it is killed."""
HEALTHY = "a leader in term >= 1 and every replica InSync"
"""What :meth:`LocalCluster.wait_healthy` says it waited for when the caller says nothing."""
# Loopback needs no proxy, whatever the environment says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalCluster:
    """``gitquorum local`` in a directory, as a context manager.

    Entering waits for a leader in term >= 1 with every replica in sync; leaving stops the
    controller (SIGTERM, which stops the replicas) and, if the block failed, prints the tail
    of every log. A directory of its own (no ``directory`` given) is deleted on the way out
    unless the block failed or :attr:`keep` was set; a given one is the caller's and stays.
    ``env`` is the environment of the controller and so of its replicas (default: this
    process's).
    """

    def __init__(
        self,
        *,
        replicas: int = 3,
        directory: pathlib.Path | None = None,
        links: bool = True,
        env: Mapping[str, str] | None = None,
        replica_arguments: Sequence[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.replica_count = replicas
        self._given = directory
        self.directory = pathlib.Path()
        self.links = links
        self.env = None if env is None else dict(env)
        self.replica_arguments = tuple(replica_arguments)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._token: str | None = None
        self._last: dict[str, Any] = {}
        self.keep = False
        """Keep the directory even when the block succeeds (it found something to look at)."""

    def __enter__(self) -> LocalCluster:
        if self._given is None:
            self.directory = pathlib.Path(tempfile.mkdtemp(prefix="gitquorum-faults-"))
        else:
            self.directory = self._given
            self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "gitquorum",
            "local",
            "--replicas",
            str(self.replica_count),
            "--dir",
            str(self.directory),
            *(["--links"] if self.links else []),
            *(f"--replica-argument={argument}" for argument in self.replica_arguments),
        ]
        with self.controller_log.open("ab") as output:
            # Its own session: a Ctrl-C reaches it only through stop()'s SIGTERM, once the
            # caller's clean-up started, not halfway through a measurement.
            self.process = subprocess.Popen(
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        try:
            self.wait_healthy(HEALTHY, timeout=self.startup_timeout)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self.stop()
        if kind is not None:
            print(self.report(), flush=True)
        if kind is not None or self.keep:
            print(f"cluster directory kept: {self.directory}", flush=True)
        elif self._given is None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def stop(self) -> None:
        """Stop the controller and its replicas; the directory stays until the block ends."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
                return
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # The controller is gone without stopping its replicas (it hung or died): they run in
        # sessions of their own, so they are killed here by the pids it last reported.
        with contextlib.suppress(OSError, ValueError):
            self._last = json.loads((self.directory / "cluster.json").read_text())
        for replica in self._last.get("replicas", []):
            if replica.get("pid") is not None and self._is_ours(replica["id"], replica["pid"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(replica["pid"], signal.SIGKILL)

    @property
    def controller_log(self) -> pathlib.Path:
        """The controller's log (its own lines and its replicas' starts and exits)."""
        return self.directory / "controller.log"

    # -- what cluster.json says ---------------------------------------------------------------

    def cluster(self) -> dict[str, Any]:
        """The controller's newest cluster.json (written whole, renamed into place)."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gitquorum local exited with {self.process.returncode}")
        cluster: dict[str, Any] = json.loads((self.directory / "cluster.json").read_text())
        self._last = cluster
        return cluster

    def replica(self, replica_id: str) -> dict[str, Any]:
        """The replica's entry in cluster.json: pid, role, state, generation, URLs."""
        for replica in self.cluster()["replicas"]:
            if replica["id"] == replica_id:
                return dict(replica)
        raise KeyError(replica_id)

    def ids(self) -> list[str]:
        return [replica["id"] for replica in self.cluster()["replicas"]]

    def leader(self) -> tuple[str, int]:
        """The leader cluster.json names, and its term."""
        cluster = self.cluster()
        return str(cluster["leader"]), int(cluster["term"])

    def followers(self) -> list[str]:
        leader, _ = self.leader()
        return [replica for replica in self.ids() if replica != leader]

    def url(self, replica_id: str) -> str:
        """The replica's clone URL (through its relay, with links) with the push credentials."""
        cluster = self.cluster()
        credentials = cluster["credentials"]
        parts = urllib.parse.urlsplit(self.replica(replica_id)["url"])
        user = urllib.parse.quote(credentials["username"], safe="")
        password = urllib.parse.quote(credentials["password"], safe="")
        return str(parts._replace(netloc=f"{user}:{password}@{parts.netloc}").geturl())

    def urls(self) -> dict[str, str]:
        """Every replica's clone URL with credentials, by replica id."""
        return {replica: self.url(replica) for replica in self.ids()}

    def data(self, replica_id: str) -> pathlib.Path:
        """The replica's data directory: its repositories and its log."""
        return self.directory / "replicas" / replica_id

    def repository(self, replica_id: str) -> pathlib.Path:
        """The replica's bare repository on disk."""
        name = self.cluster()["name"]
        return self.data(replica_id) / "repositories" / f"{name}.git"

    def pids(self) -> list[int]:
        """The controller's process id and every running replica's."""
        assert self.process is not None  # entered
        replicas = self.cluster()["replicas"]
        return [self.process.pid, *(int(r["pid"]) for r in replicas if r["pid"] is not None)]

    # -- faults -------------------------------------------------------------------------------

    def kill(self, replica_id: str) -> int:
        """SIGKILLs the replica's process; returns its pid."""
        pid = self.replica(replica_id)["pid"]
        if pid is None or not self._is_ours(replica_id, pid):
            raise AssertionError(f"replica {replica_id} has no live process to kill (pid {pid})")
        os.kill(pid, signal.SIGKILL)
        return int(pid)

    def _is_ours(self, replica_id: str, pid: int) -> bool:
        """Whether ``pid`` is still this cluster's replica (pids are reused)."""
        try:
            arguments = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.data(replica_id)).encode() in arguments

    def cut(self, replica_id: str) -> None:
        """Cuts the replica off from its peers, the controller and clients (needs links)."""
        self._cut_file(replica_id).touch()

    def heal(self, replica_id: str) -> None:
        self._cut_file(replica_id).unlink(missing_ok=True)

    def _cut_file(self, replica_id: str) -> pathlib.Path:
        if not self.links:
            raise AssertionError("cutting a replica off needs the relays: LocalCluster(links=True)")
        return pathlib.Path(self.cluster()["cut_directory"]) / replica_id

    # -- what the replicas say ----------------------------------------------------------------

    def status(self, replica_id: str, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
        """The replica's ``/admin/status``, with the controller's bearer token."""
        if self._token is None:
            self._token = pathlib.Path(self.cluster()["token_file"]).read_text().strip()
        request = urllib.request.Request(
            self.replica(replica_id)["peer_url"] + "/admin/status",
            headers={"Authorization": f"Bearer {self._token}"},
        )
        with _DIRECT.open(request, timeout=timeout) as answer:
            status: dict[str, Any] = json.load(answer)
            return status

    def status_or_none(
        self, replica_id: str, timeout: float = STATUS_TIMEOUT
    ) -> dict[str, Any] | None:
        """The replica's ``/admin/status``, or None when it does not answer (down, starting)."""
        try:
            return self.status(replica_id, timeout)
        except (OSError, ValueError):  # URLError and timeouts are OSErrors, bad JSON ValueError
            return None

    # -- waiting for states -------------------------------------------------------------------

    def summary(self) -> str:
        """A line on the cluster: term, leader, and each replica's pid, role, state."""
        try:
            cluster = self.cluster()
        except Exception as error:  # the summary is for a failure message: say what is known
            return f"cluster.json unreadable: {error}"
        replicas = ", ".join(
            f"{r['id']}(pid {r['pid']}, {r['role']}, {r['state']}, gen {r['generation']})"
            for r in cluster["replicas"]
        )
        return f"term {cluster['term']}, leader {cluster['leader']}: {replicas}"

    def healthy(self, *, exact: bool = False) -> dict[str, Any] | None:
        """cluster.json if it shows a leader in term >= 1 leading and every replica up and
        InSync, and (``exact``) at the leader's generation and checksum; None otherwise.

        Under a push load the replicas' generations, written a moment apart, rarely agree:
        ``exact`` is for a cluster at rest.
        """
        cluster = self.cluster()
        if int(cluster["term"]) < 1:
            return None
        leader = next((r for r in cluster["replicas"] if r["id"] == cluster["leader"]), None)
        if leader is None or leader["role"] != "Leader":
            return None
        for replica in cluster["replicas"]:
            if replica["pid"] is None or replica["state"] != "InSync":
                return None
            if exact and (replica["generation"], replica["checksum"]) != (
                leader["generation"],
                leader["checksum"],
            ):
                return None
        return cluster

    def wait_healthy(
        self, what: str = HEALTHY, *, timeout: float = STATE_TIMEOUT, exact: bool = False
    ) -> dict[str, Any]:
        """Waits until :meth:`healthy` (``exact`` as there); returns cluster.json then."""
        found = waiting.until(
            what + (" at the leader's generation" if exact else ""),
            lambda: self.healthy(exact=exact),
            timeout=timeout,
            interval=0.1,
            seen=self.summary,
        )
        assert found is not None  # until returns a truthy value
        return found

    def wait_new_leader(self, term: int, *, timeout: float = STATE_TIMEOUT) -> tuple[str, int]:
        """Waits for a leader of a term after ``term`` that is ready; returns it and its term."""

        def elected() -> tuple[str, int] | None:
            leader, now = self.leader()
            replica = self.replica(leader)
            if now > term and replica["role"] == "Leader" and replica["state"] == "InSync":
                return leader, now
            return None

        found = waiting.until(
            f"a ready leader in a term after {term}",
            elected,
            timeout=timeout,
            interval=0.1,
            seen=self.summary,
        )
        assert found is not None  # until returns a truthy value
        return found

    def wait_restarted(self, replica_id: str, pid: int, *, timeout: float = STATE_TIMEOUT) -> int:
        def restarted() -> int | None:
            now = self.replica(replica_id)["pid"]
            return None if now in (None, pid) else int(now)

        found = waiting.until(
            f"replica {replica_id} running again with a pid other than {pid}",
            restarted,
            timeout=timeout,
            interval=0.1,
            seen=self.summary,
        )
        assert found is not None  # until returns a truthy value
        return found

    def statuses(self) -> dict[str, dict[str, Any] | str]:
        """Every replica's admin status, or why it could not be had."""
        found: dict[str, dict[str, Any] | str] = {}
        for replica in self.ids():
            try:
                found[replica] = self.status(replica)
            except Exception as error:  # a replica down or cut off: say so in the report
                found[replica] = f"{type(error).__name__}: {error}"
        return found

    def wait_converged(self, *, timeout: float = STATE_TIMEOUT) -> dict[str, dict[str, Any]]:
        """Waits until every replica is InSync at one generation and checksum, in one term."""
        last: dict[str, dict[str, Any] | str] = {}

        def converged() -> dict[str, dict[str, Any]] | None:
            last.clear()
            last.update(self.statuses())
            answered = {r: s for r, s in last.items() if isinstance(s, dict)}
            if len(answered) != len(last):
                return None
            views = {
                (s["term"], s["leader"], s["generation"], s["checksum"], s["state"])
                for s in answered.values()
            }
            if len(views) == 1 and next(iter(views))[4] == "InSync":
                return answered
            return None

        def seen() -> str:
            return "; ".join(
                f"{replica}: "
                + (
                    f"term {s['term']} leader {s['leader']} gen {s['generation']} "
                    f"checksum {s['checksum'][:12]} {s['state']}"
                    if isinstance(s, dict)
                    else s
                )
                for replica, s in last.items()
            )

        found = waiting.until(
            "every replica InSync with the same term, leader, generation and checksum",
            converged,
            timeout=timeout,
            interval=0.2,
            seen=seen,
        )
        assert found is not None  # until returns a truthy value
        return found

    def replica_logs(self) -> list[tuple[str, pathlib.Path]]:
        """(replica, log file) of every replica."""
        return sorted(
            (path.parent.name, path) for path in self.directory.glob("replicas/*/replica.log")
        )

    def report(self, lines: int = 40) -> str:
        """The tail of the controller's log and of every replica's log."""
        parts = []
        logs = [("controller", self.controller_log), *self.replica_logs()]
        for name, path in logs:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError as error:
                tail = [f"(unreadable: {error})"]
            parts.append(f"---- {name}: {path}\n" + "\n".join(tail))
        return "\n".join(parts)
