"""A replicated repository under faults: the cluster, the clients, and the invariants' checker.

:class:`LocalCluster` runs ``gitquorum local --links`` as a child process (three replicas on
loopback behind relays, and the controller that restarts and elects) and offers what a fault
needs: the replicas' URLs and admin status, ``kill`` (SIGKILL), ``cut`` and ``heal`` (a
partition through the relays), and waits for states of the cluster that poll with a deadline.

:class:`Workload` is a few client threads, each with its own clone, using the real git CLI as
users do. Some push to the shared branch ``main`` and some each to a branch of their own; each
one commits, pushes to a replica chosen at random, and on a refusal or an error fetches from
another random replica and rebases. Between pushes it reads the branches with ``git
ls-remote`` from a random replica. Every acknowledged push and every observation is recorded
with the monotonic time it started and ended.

:class:`Checker` then proves, from those records and the replicas' final state, the
invariants of DESIGN.md ("Replication: the invariants"), and names what broke:

- no acknowledged push is lost: every acknowledged commit is in its branch on every in-sync
  replica at the end;
- no ref goes backwards: a client's successive reads of a branch are fast-forwards (clients
  only push fast-forwards), every value read survives to the end, and a read that started
  after a push was acknowledged (to this client or to any: the leader acknowledges only once
  no replica can serve the older state) shows that push;
- the replicas converge: identical generation, checksum and refs on disk;
- every ref transaction was decided once: no two acknowledged pushes of a branch share an
  old value.

Ancestry questions are answered from git's own commit graph (``git rev-list --parents``) in a
checker repository that borrows the objects of every client clone (``objects/info/
alternates``), so that even a commit no replica holds any more can be placed. A scenario
(:data:`SCENARIOS`) is one kind of fault, repeated for some rounds on one cluster, each round
checked; the tests and ``bench/faults.py`` run the same ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from gitquorum.replication import checksum
from tests import waiting

ZERO_ID = "0" * 40
SHARED_BRANCH = "main"
STARTUP_TIMEOUT = 30.0
"""Seconds for the cluster to elect its first leader with every replica in sync."""
STATE_TIMEOUT = 30.0
"""Seconds for the cluster to reach a state after a fault (a new leader, a replica back)."""
PUSH_TIMEOUT = 6.0
"""Seconds before a client gives a push up: a cut replica accepts and never answers."""
READ_TIMEOUT = 3.0
"""Seconds before a client gives a fetch or ls-remote up, for the same reason."""
STATUS_TIMEOUT = 2.0
"""Seconds for a replica's admin status; a cut replica never answers."""
CLIENT_PACE = 0.05
"""Seconds a client waits between two rounds of push and read, so that replicas get CPU."""
REPORTED = 15
"""Problems of one kind printed in full; the rest are counted."""
ALARMS = ("refs differ from the leader's", "does not apply here")
"""What a replica logs when it finds itself diverged from the leader and starts a repair.
With the invariants intact no replica diverges, so each line is worth a look. They are
reported, not failed on: today a follower also logs one when a heartbeat that left the
leader before a commit is handled after the follower applied that commit (a false alarm,
followed by a needless copy of the leader's state)."""


def _elapsed(origin: float, at: float) -> str:
    return f"{at - origin:.2f}s"


# -- git --------------------------------------------------------------------------------------


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


# -- the cluster ------------------------------------------------------------------------------


class LocalCluster:
    """``gitquorum local --links`` in a directory of its own, as a context manager.

    Entering waits for a leader in term >= 1 with every replica in sync; leaving stops the
    controller (SIGTERM, which stops the replicas) and, if the block failed, prints the tail
    of every log and keeps the directory.
    """

    def __init__(
        self,
        *,
        replicas: int = 3,
        directory: pathlib.Path | None = None,
        replica_arguments: Sequence[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.replica_count = replicas
        self._given = directory
        self.directory = pathlib.Path()
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
            "--links",
            *(f"--replica-argument={argument}" for argument in self.replica_arguments),
        ]
        with (self.directory / "controller.log").open("ab") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self.wait_healthy(
                "a leader in term >= 1 and every replica InSync", timeout=self.startup_timeout
            )
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
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            for replica in self._last.get("replicas", []):
                if replica.get("pid") is not None and self._is_ours(replica["id"], replica["pid"]):
                    os.kill(replica["pid"], signal.SIGKILL)

    # -- what cluster.json says ---------------------------------------------------------------

    def cluster(self) -> dict[str, Any]:
        """The controller's newest cluster.json (written whole, renamed into place)."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gitquorum local exited with {self.process.returncode}")
        cluster: dict[str, Any] = json.loads((self.directory / "cluster.json").read_text())
        self._last = cluster
        return cluster

    def replica(self, replica_id: str) -> dict[str, Any]:
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
        """The replica's clone URL (through its relay) with the push credentials in it."""
        cluster = self.cluster()
        credentials = cluster["credentials"]
        parts = urllib.parse.urlsplit(self.replica(replica_id)["url"])
        user = urllib.parse.quote(credentials["username"], safe="")
        password = urllib.parse.quote(credentials["password"], safe="")
        return str(parts._replace(netloc=f"{user}:{password}@{parts.netloc}").geturl())

    def urls(self) -> dict[str, str]:
        """Every replica's clone URL with credentials, by replica id."""
        return {replica: self.url(replica) for replica in self.ids()}

    def repository(self, replica_id: str) -> pathlib.Path:
        """The replica's bare repository on disk."""
        name = self.cluster()["name"]
        return self.directory / "replicas" / replica_id / "repositories" / f"{name}.git"

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
        data = str(self.directory / "replicas" / replica_id).encode()
        return data in arguments

    def cut(self, replica_id: str) -> None:
        """Cuts the replica off from its peers, the controller and clients."""
        (pathlib.Path(self.cluster()["cut_directory"]) / replica_id).touch()

    def heal(self, replica_id: str) -> None:
        (pathlib.Path(self.cluster()["cut_directory"]) / replica_id).unlink(missing_ok=True)

    def status(self, replica_id: str, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
        """The replica's ``/admin/status``, with the controller's bearer token."""
        if self._token is None:
            self._token = pathlib.Path(self.cluster()["token_file"]).read_text().strip()
        request = urllib.request.Request(
            self.replica(replica_id)["peer_url"] + "/admin/status",
            headers={"Authorization": f"Bearer {self._token}"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status: dict[str, Any] = json.load(answer)
            return status

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

    def healthy(self) -> bool:
        """A leader in term >= 1 leading, every replica up and InSync (as cluster.json says)."""
        cluster = self.cluster()
        if int(cluster["term"]) < 1:
            return False
        for replica in cluster["replicas"]:
            if replica["pid"] is None or replica["state"] != "InSync":
                return False
            if replica["id"] == cluster["leader"] and replica["role"] != "Leader":
                return False
        return True

    def wait_healthy(self, what: str, *, timeout: float = STATE_TIMEOUT) -> None:
        waiting.until(what, self.healthy, timeout=timeout, interval=0.1, seen=self.summary)

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
        logs = [("controller", self.directory / "controller.log")]
        logs += sorted(
            (path.parent.name, path) for path in self.directory.glob("replicas/*/replica.log")
        )
        for name, path in logs:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError as error:
                tail = [f"(unreadable: {error})"]
            parts.append(f"---- {name}: {path}\n" + "\n".join(tail))
        return "\n".join(parts)


# -- clients ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Acknowledgement:
    """A push git reported as done: exit status 0 and its ref updated."""

    client: str
    branch: str
    old: str
    new: str
    replica: str
    started: float
    ended: float


@dataclasses.dataclass(frozen=True)
class Observation:
    """What ``git ls-remote`` showed one client: branch -> commit."""

    client: str
    replica: str
    started: float
    ended: float
    refs: Mapping[str, str]


class Records:
    """What the clients saw, appended from their threads."""

    def __init__(self) -> None:
        self.origin = time.monotonic()
        self._lock = threading.Lock()
        self.acknowledgements: list[Acknowledgement] = []
        self.observations: list[Observation] = []
        self.errors: list[str] = []
        self.events: list[tuple[float, str]] = []

    def acknowledged(self, acknowledgement: Acknowledgement) -> None:
        with self._lock:
            self.acknowledgements.append(acknowledgement)

    def observed(self, observation: Observation) -> None:
        with self._lock:
            self.observations.append(observation)

    def error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def event(self, message: str) -> None:
        """A fault or recovery, for the timeline printed with a failure."""
        with self._lock:
            self.events.append((time.monotonic(), message))

    def acknowledged_since(self, moment: float) -> int:
        with self._lock:
            return sum(1 for a in self.acknowledgements if a.started >= moment)

    def timeline(self) -> str:
        with self._lock:
            return "\n".join(f"  {_elapsed(self.origin, t)} {m}" for t, m in self.events)


class Client:
    """One user: a clone of its own, a branch it pushes to, a loop run in a thread."""

    def __init__(
        self,
        name: str,
        *,
        branch: str,
        work: pathlib.Path,
        git: Git,
        urls: Mapping[str, str],
        records: Records,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.branch = branch
        self.work = work
        self.git = git
        self.urls = dict(urls)
        self.records = records
        self.rng = rng
        self.pending = False
        """HEAD holds a commit not known to be on the remote."""
        self.commits = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log = work.parent / f"{name}.log"
        """Every remote command and how it ended, for looking into a failure."""

    def clone(self, *, timeout: float = STATE_TIMEOUT) -> None:
        """An empty repository with ``main`` fetched from a replica."""
        self.work.mkdir(parents=True)
        self.git.out("init", "-q", str(self.work))
        for key, value in (("gc.auto", "0"), ("core.abbrev", "40"), ("commit.gpgSign", "false")):
            self.git.out("config", key, value, cwd=self.work)

        def fetched() -> bool:
            return self._fetch(SHARED_BRANCH) is True

        waiting.until(f"{self.name} fetching {SHARED_BRANCH}", fetched, timeout=timeout)
        base = f"refs/remotes/origin/{SHARED_BRANCH}"
        self.git.out("checkout", "-q", "-B", "work", base, cwd=self.work)

    @property
    def objects(self) -> pathlib.Path:
        return self.work / ".git" / "objects"

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"client-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.records.error(f"{self.name}: still running {timeout:.0f}s after stop")

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
                self._stop.wait(CLIENT_PACE)
        except Exception:
            self.records.error(f"{self.name} crashed:\n{traceback.format_exc()}")

    def _step(self) -> None:
        if not self.pending:
            self.commits += 1
            path = self.work / self.name / f"{self.commits:05d}"
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"{self.name} commit {self.commits}\n")
            self.git.out("add", str(path), cwd=self.work)
            self.git.out("commit", "-q", "-m", f"{self.name} {self.commits}", cwd=self.work)
            self.pending = True
        self._push()
        if self.pending and self._fetch(self.branch) is not False:
            self._rebase()
        self._observe()

    def _pick(self) -> tuple[str, str]:
        replica = self.rng.choice(sorted(self.urls))
        return replica, self.urls[replica]

    def _push(self) -> None:
        replica, url = self._pick()
        head = self.git.out("rev-parse", "HEAD", cwd=self.work).strip()
        started = time.monotonic()
        result = self.git.run(
            "push",
            "--porcelain",
            url,
            f"HEAD:refs/heads/{self.branch}",
            cwd=self.work,
            timeout=PUSH_TIMEOUT,
        )
        ended = time.monotonic()
        self._note("push", replica, result, started, ended)
        if not result.ok:
            return
        line = _porcelain_line(result.stdout, f"refs/heads/{self.branch}")
        if line is None:
            self.records.error(f"{self.name}: push exited 0 without a line: {result.stdout!r}")
            return
        flag, summary = line
        if flag == "=":  # an earlier push, whose answer was lost, put it there
            self.pending = False
            return
        if flag not in (" ", "*"):
            self.records.error(f"{self.name}: push exited 0 with {flag!r} {summary}")
            return
        old, new = (ZERO_ID, head) if flag == "*" else summary.split("..")
        if new != head:
            self.records.error(f"{self.name}: pushed {head} but git reports {summary}")
        self.records.acknowledged(
            Acknowledgement(self.name, self.branch, old, new, replica, started, ended)
        )
        self.pending = False

    def _fetch(self, branch: str) -> bool | None:
        """Fetches ``branch`` into origin/; None when the branch does not exist yet."""
        replica, url = self._pick()
        started = time.monotonic()
        result = self.git.run(
            "fetch",
            "-q",
            "--no-tags",
            url,
            f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
            cwd=self.work,
        )
        self._note("fetch", replica, result, started, time.monotonic())
        if result.ok:
            return True
        if result.returncode is not None and "couldn't find remote ref" in result.stderr:
            return None
        return False

    def _rebase(self) -> None:
        upstream = f"refs/remotes/origin/{self.branch}"
        if self.git.run("rev-parse", "-q", "--verify", upstream, cwd=self.work).returncode != 0:
            return  # the branch is not there yet: the next push creates it
        rebased = self.git.run("rebase", "-q", upstream, cwd=self.work, timeout=60)
        if not rebased.ok:
            self.git.run("rebase", "--abort", cwd=self.work, timeout=60)
            raise AssertionError(f"rebase onto {upstream} failed: {rebased.stderr.strip()}")
        heads = self.git.out("rev-parse", "HEAD", upstream, cwd=self.work).split()
        if heads[0] == heads[1]:
            self.pending = False  # a push whose answer was lost had put it there

    def _observe(self) -> None:
        replica, url = self._pick()
        started = time.monotonic()
        result = self.git.run("ls-remote", "--heads", url, cwd=self.work)
        ended = time.monotonic()
        self._note("ls-remote", replica, result, started, ended)
        if not result.ok:
            return
        refs = {}
        for line in result.stdout.splitlines():
            object_id, _, ref = line.partition("\t")
            refs[ref.removeprefix("refs/heads/")] = object_id
        self.records.observed(Observation(self.name, replica, started, ended, refs))

    def _note(
        self, command: str, replica: str, result: GitResult, started: float, ended: float
    ) -> None:
        outcome = "timed out" if result.returncode is None else f"exit {result.returncode}"
        detail = (result.stderr.strip().splitlines() or [""])[-1]
        if result.ok and command == "push":
            detail = " ".join(result.stdout.split("\t")[-1:]).strip().replace("\n", " ")
        with self.log.open("a") as log:
            log.write(
                f"{_elapsed(self.records.origin, started)} {command} {replica} {outcome} "
                f"after {ended - started:.2f}s {detail}\n"
            )


def _porcelain_line(output: str, ref: str) -> tuple[str, str] | None:
    """The flag and summary of ``ref`` in ``git push --porcelain`` output."""
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1].endswith(f":{ref}"):
            return fields[0], fields[2]
    return None


class Workload:
    """Client threads on a shared branch and on branches of their own, with their records."""

    def __init__(
        self, cluster: LocalCluster, *, shared: int = 2, own: int = 2, seed: int | None = None
    ) -> None:
        self.cluster = cluster
        self.root = cluster.directory / "clients"
        self.git = Git(self.root / "home")
        self.records = Records()
        self.rng = random.Random(seed)
        self.urls = cluster.urls()
        self.seed_work = self.root / "seed"
        self._seed()
        self.clients = []
        for index in range(shared + own):
            name = f"c{index}"
            client = Client(
                name,
                branch=SHARED_BRANCH if index < shared else name,
                work=self.root / name,
                git=self.git,
                urls=self.urls,
                records=self.records,
                rng=random.Random(self.rng.random()),
            )
            client.clone()
            self.clients.append(client)

    def _seed(self, *, timeout: float = STATE_TIMEOUT) -> None:
        """The first commit of ``main``, pushed (and recorded) before any client starts."""
        work = self.seed_work
        work.mkdir(parents=True)
        self.git.out("init", "-q", str(work))
        self.git.out("config", "core.abbrev", "40", cwd=work)
        (work / "README").write_text("fault tests\n")
        self.git.out("add", "README", cwd=work)
        self.git.out("commit", "-q", "-m", "seed", cwd=work)
        head = self.git.out("rev-parse", "HEAD", cwd=work).strip()
        replicas = iter(sorted(self.urls) * 100)

        def pushed() -> bool:
            replica = next(replicas)
            started = time.monotonic()
            result = self.git.run(
                "push",
                "--porcelain",
                self.urls[replica],
                f"HEAD:refs/heads/{SHARED_BRANCH}",
                cwd=work,
                timeout=PUSH_TIMEOUT,
            )
            line = _porcelain_line(result.stdout, f"refs/heads/{SHARED_BRANCH}")
            if result.ok and line is not None and line[0] in ("*", "="):
                if line[0] == "*":
                    self.records.acknowledged(
                        Acknowledgement(
                            "seed", SHARED_BRANCH, ZERO_ID, head, replica, started, time.monotonic()
                        )
                    )
                return True
            raise AssertionError(f"seed push to {replica}: {result.stderr.strip()}")

        waiting.until(f"the seed push to {SHARED_BRANCH}", pushed, timeout=timeout)

    @property
    def object_stores(self) -> list[pathlib.Path]:
        return [self.seed_work / ".git" / "objects", *(c.objects for c in self.clients)]

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Clients push and read while the block runs; stopped (and joined) after it."""
        for client in self.clients:
            client.start()
        try:
            yield
        finally:
            for client in self.clients:
                client.stop()
            for client in self.clients:
                client.join(PUSH_TIMEOUT + READ_TIMEOUT * 2 + 10)

    def wait_for_pushes(
        self, count: int, *, since: float, what: str, timeout: float = STATE_TIMEOUT
    ) -> None:
        """Waits for ``count`` acknowledged pushes started at ``since`` or later."""

        def seen() -> str:
            return (
                f"{self.records.acknowledged_since(since)} acknowledged; "
                f"client errors {self.records.errors[-3:]}; cluster {self.cluster.summary()}"
            )

        # Truthy on a client error too, so that a crashed client fails the wait at once.
        waiting.until(
            f"{count} pushes acknowledged {what}",
            lambda: self.records.errors or self.records.acknowledged_since(since) >= count,
            timeout=timeout,
            interval=0.1,
            seen=seen,
        )
        if self.records.errors:
            raise AssertionError(
                f"a client failed while waiting for {count} pushes acknowledged {what}:\n"
                + "\n".join(self.records.errors)
            )


# -- the checker ------------------------------------------------------------------------------


class Ancestry:
    """The commit graph of a repository, loaded once with ``git rev-list --parents``."""

    def __init__(self, git: Git, repository: pathlib.Path, commits: set[str]) -> None:
        listed = "\n".join(sorted(commits)) + "\n"
        checked = subprocess.run(
            ["git", "cat-file", "--batch-check=%(objectname) %(objecttype)"],
            cwd=repository,
            env=git.env,
            input=listed,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        present = [line.split()[0] for line in checked.splitlines() if line.endswith(" commit")]
        self.missing = commits - set(present)
        self.parents: dict[str, list[str]] = {}
        if present:
            graph = subprocess.run(
                ["git", "rev-list", "--parents", "--stdin"],
                cwd=repository,
                env=git.env,
                input="\n".join(present) + "\n",
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for line in graph.splitlines():
                commit, *parents = line.split()
                self.parents[commit] = parents
        self._ancestors: dict[str, frozenset[str]] = {}

    def ancestors(self, commit: str) -> frozenset[str]:
        """The commit and everything it descends from."""
        if commit in self._ancestors:
            return self._ancestors[commit]
        found: set[str] = set()
        stack = [commit]
        while stack:
            current = stack.pop()
            if current in found:
                continue
            if current in self._ancestors:
                found |= self._ancestors[current]
                continue
            found.add(current)
            stack.extend(self.parents.get(current, ()))
        self._ancestors[commit] = frozenset(found)
        return self._ancestors[commit]

    def contains(self, descendant: str | None, ancestor: str) -> bool:
        """Whether ``descendant`` (None: an absent ref) is ``ancestor`` or descends from it."""
        return descendant is not None and ancestor in self.ancestors(descendant)


@dataclasses.dataclass
class Verdict:
    """What the checker found, by invariant."""

    acknowledged: int = 0
    observations: int = 0
    lost: list[str] = dataclasses.field(default_factory=list)
    """(a) acknowledged pushes missing from a replica's final state."""
    regressions: list[str] = dataclasses.field(default_factory=list)
    """(b) a read going backwards, or a value read that did not survive."""
    stale_reads: list[str] = dataclasses.field(default_factory=list)
    """(b) a read older than a push acknowledged before it started."""
    divergence: list[str] = dataclasses.field(default_factory=list)
    """(c) replicas that did not converge to one generation, checksum and ref state."""
    conflicts: list[str] = dataclasses.field(default_factory=list)
    """(d) two acknowledged updates of one branch from the same old value."""
    client_errors: list[str] = dataclasses.field(default_factory=list)
    alarms: list[str] = dataclasses.field(default_factory=list)
    """Replica log lines that claim a divergence; reported, not failed on (see ALARMS)."""
    timeline: str = ""

    @property
    def lost_pushes(self) -> int:
        return len({line.split(" | ")[0] for line in self.lost})

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.regressions
            or self.stale_reads
            or self.divergence
            or self.conflicts
            or self.client_errors
        )

    def summary(self) -> str:
        return (
            f"{self.acknowledged} acknowledged pushes, {self.observations} observations; "
            f"lost pushes {self.lost_pushes}, regressions {len(self.regressions)}, "
            f"stale reads {len(self.stale_reads)}, conflicting acknowledgements "
            f"{len(self.conflicts)}, divergence {len(self.divergence)}, "
            f"client errors {len(self.client_errors)}; divergence alarms in replica logs "
            f"{len(self.alarms)}"
        )

    def describe(self) -> str:
        parts = [self.summary()]
        for title, problems in (
            ("(a) acknowledged pushes lost", self.lost),
            ("(b) refs that went backwards", self.regressions),
            ("(b) reads older than an acknowledged push", self.stale_reads),
            ("(c) replicas that did not converge", self.divergence),
            ("(d) one ref transaction acknowledged twice", self.conflicts),
            ("client errors", self.client_errors),
            ("divergence alarms in replica logs (not failed on)", self.alarms),
        ):
            if problems:
                parts.append(f"{title}: {len(problems)}")
                parts += [f"  - {problem}" for problem in problems[:REPORTED]]
                if len(problems) > REPORTED:
                    parts.append(f"  ... and {len(problems) - REPORTED} more")
        if self.timeline:
            parts.append("timeline (since the workload started):\n" + self.timeline)
        return "\n".join(parts)

    def assert_ok(self) -> None:
        assert self.ok, "replication invariants broken:\n" + self.describe()


class Checker:
    """Checks the invariants over a workload's records and the replicas' final state.

    It may run several times over one workload (after each round of faults). What depends
    on the final state is checked again each time; what depends only on the records (the
    order of one client's reads, reads after acknowledged pushes) is checked once per
    observation, and its findings are kept.
    """

    def __init__(self, cluster: LocalCluster, workload: Workload) -> None:
        self.cluster = cluster
        self.workload = workload
        self.records = workload.records
        self.git = workload.git
        self.repository = cluster.directory / "checker.git"
        self._checked = 0
        """Observations already checked for order and staleness."""
        self._newest: dict[str, dict[str, tuple[str, Observation]]] = {}
        """Per client, per branch: the newest value it read, and where."""
        self._regressions: list[str] = []
        self._stale_reads: list[str] = []

    def check(self, *, timeout: float = STATE_TIMEOUT) -> Verdict:
        """Waits for the replicas to converge (the scenario has ended), then checks."""
        records = self.records
        verdict = Verdict(
            acknowledged=len(records.acknowledgements),
            observations=len(records.observations),
            timeline=records.timeline(),
        )
        in_sync = self._converge(verdict, timeout)
        finals = {replica: self._refs_on_disk(replica) for replica in in_sync}
        self._compare_finals(verdict, finals, in_sync)
        ancestry = self._ancestry(finals)
        self._check_acknowledged(verdict, ancestry, finals)
        self._check_new_observations(ancestry)
        verdict.regressions += self._regressions
        verdict.stale_reads += self._stale_reads
        self._check_reads_survive(verdict, ancestry, finals)
        self._check_decided_once(verdict)
        verdict.client_errors = list(records.errors)
        verdict.alarms = self._alarms()
        return verdict

    def _alarms(self) -> list[str]:
        found = []
        for name, log in self.cluster.replica_logs():
            for line in log.read_text(errors="replace").splitlines():
                if any(alarm in line for alarm in ALARMS):
                    found.append(f"{name}: {line}")
        return found

    def _t(self, moment: float) -> str:
        return _elapsed(self.records.origin, moment)

    # (c) convergence ------------------------------------------------------------------------

    def _converge(self, verdict: Verdict, timeout: float) -> dict[str, dict[str, Any]]:
        """The statuses of the in-sync replicas, once all converged or the deadline passed."""
        try:
            return self.cluster.wait_converged(timeout=timeout)
        except AssertionError as error:
            verdict.divergence.append(str(error))
        return {
            replica: status
            for replica, status in self.cluster.statuses().items()
            if isinstance(status, dict) and status.get("state") == "InSync"
        }

    def _refs_on_disk(self, replica: str) -> dict[str, str]:
        output = self.git.out(
            # A replica's volume belongs to the replica's user (a pod's fsGroup), not to us.
            "-c",
            "safe.directory=*",
            "--git-dir",
            str(self.cluster.repository(replica)),
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/",
        )
        refs = {}
        for line in output.splitlines():
            object_id, _, ref = line.partition(" ")
            refs[ref] = object_id
        return refs

    def _compare_finals(
        self,
        verdict: Verdict,
        finals: dict[str, dict[str, str]],
        statuses: dict[str, dict[str, Any]],
    ) -> None:
        for replica, refs in finals.items():
            on_disk = checksum.of(refs)
            if on_disk != statuses[replica]["checksum"]:
                verdict.divergence.append(
                    f"{replica} reports checksum {statuses[replica]['checksum'][:12]} at "
                    f"generation {statuses[replica]['generation']}, its refs on disk give "
                    f"{on_disk[:12]}"
                )
        names = sorted(finals)
        for replica in names[1:]:
            first = finals[names[0]]
            other = finals[replica]
            differing = sorted(
                ref for ref in first.keys() | other.keys() if first.get(ref) != other.get(ref)
            )
            for ref in differing:
                verdict.divergence.append(
                    f"{ref} is {first.get(ref, '(absent)')[:12]} on {names[0]} "
                    f"but {other.get(ref, '(absent)')[:12]} on {replica}"
                )

    # ancestry -------------------------------------------------------------------------------

    def _ancestry(self, finals: dict[str, dict[str, str]]) -> Ancestry:
        """A repository holding every commit any client made, and the leader's refs."""
        if not self.repository.exists():
            self.git.out("init", "-q", "--bare", str(self.repository))
        alternates = self.repository / "objects" / "info" / "alternates"
        alternates.write_text("".join(f"{path}\n" for path in self.workload.object_stores))
        leader, _ = self.cluster.leader()
        fetched = self.git.run(
            "fetch",
            "-q",
            "--no-tags",
            self.cluster.url(leader),
            "+refs/*:refs/leader/*",
            cwd=self.repository,
            timeout=60,
        )
        if not fetched.ok:
            self.records.error(f"checker: fetch from the leader failed: {fetched.stderr.strip()}")
        commits = {a.new for a in self.records.acknowledgements}
        commits |= {a.old for a in self.records.acknowledgements if a.old != ZERO_ID}
        for observation in self.records.observations:
            commits |= set(observation.refs.values())
        for refs in finals.values():
            commits |= set(refs.values())
        ancestry = Ancestry(self.git, self.repository, commits)
        for commit in sorted(ancestry.missing):
            self.records.error(f"checker: commit {commit} is in no client's clone")
        return ancestry

    # (a) every acknowledged push is present -------------------------------------------------

    def _check_acknowledged(
        self, verdict: Verdict, ancestry: Ancestry, finals: dict[str, dict[str, str]]
    ) -> None:
        for ack in self.records.acknowledgements:
            for replica, refs in finals.items():
                final = refs.get(f"refs/heads/{ack.branch}")
                if not ancestry.contains(final, ack.new):
                    verdict.lost.append(
                        f"{ack.client} {ack.branch} {ack.new[:12]} | pushed "
                        f"{ack.old[:12]}..{ack.new[:12]} via {ack.replica}, acknowledged at "
                        f"{self._t(ack.ended)} (started {self._t(ack.started)}); {replica} ends "
                        f"with {ack.branch} at {(final or '(absent)')[:12]}, which lacks it"
                    )

    # (b) no ref went backwards, and reads follow acknowledged writes -------------------------

    def _check_new_observations(self, ancestry: Ancestry) -> None:
        """Each client's reads in order, and each read against the pushes acknowledged before.

        A client records its observations one after the other, so the records hold each
        client's in the order it made them; every push acknowledged before a read started is
        recorded by the time the clients have stopped.
        """
        acknowledgements: dict[str, list[Acknowledgement]] = {}
        for ack in self.records.acknowledgements:
            acknowledgements.setdefault(ack.branch, []).append(ack)
        observations = self.records.observations[self._checked :]
        self._checked += len(observations)
        for observation in observations:
            self._check_order(ancestry, observation)
            for branch, acks in sorted(acknowledgements.items()):
                self._check_read_after_writes(ancestry, observation, branch, acks)

    def _check_order(self, ancestry: Ancestry, observation: Observation) -> None:
        newest = self._newest.setdefault(observation.client, {})
        for branch, (value, earlier) in sorted(newest.items()):
            now = observation.refs.get(branch)
            if not ancestry.contains(now, value):
                self._regressions.append(
                    f"{observation.client} read {branch} at {value[:12]} from {earlier.replica} "
                    f"({self._t(earlier.started)}-{self._t(earlier.ended)}), then at "
                    f"{(now or '(absent)')[:12]} from {observation.replica} "
                    f"({self._t(observation.started)}-{self._t(observation.ended)})"
                )
        for branch, value in observation.refs.items():
            newest[branch] = (value, observation)

    def _check_read_after_writes(
        self,
        ancestry: Ancestry,
        observation: Observation,
        branch: str,
        acks: list[Acknowledgement],
    ) -> None:
        value = observation.refs.get(branch)
        missed = [
            ack
            for ack in acks
            if ack.ended < observation.started and not ancestry.contains(value, ack.new)
        ]
        if not missed:
            return
        ack = max(missed, key=lambda a: a.ended)
        whose = "its own" if ack.client == observation.client else f"{ack.client}'s"
        self._stale_reads.append(
            f"{observation.client} read {branch} at {(value or '(absent)')[:12]} from "
            f"{observation.replica} ({self._t(observation.started)}-"
            f"{self._t(observation.ended)}) after {whose} push of {ack.new[:12]} via "
            f"{ack.replica} was acknowledged at {self._t(ack.ended)}"
            + (f" ({len(missed)} acknowledged pushes missed)" if len(missed) > 1 else "")
        )

    def _check_reads_survive(
        self, verdict: Verdict, ancestry: Ancestry, finals: dict[str, dict[str, str]]
    ) -> None:
        """A value a replica served was decided: every in-sync replica must end with it."""
        for observation in self.records.observations:
            for branch, value in sorted(observation.refs.items()):
                for replica, refs in finals.items():
                    final = refs.get(f"refs/heads/{branch}")
                    if not ancestry.contains(final, value):
                        verdict.regressions.append(
                            f"{observation.client} read {branch} at {value[:12]} from "
                            f"{observation.replica} ({self._t(observation.started)}-"
                            f"{self._t(observation.ended)}); {replica} ends with "
                            f"{(final or '(absent)')[:12]}, which lacks it"
                        )

    # (d) one decision per ref transaction ---------------------------------------------------

    def _check_decided_once(self, verdict: Verdict) -> None:
        decided: dict[tuple[str, str], Acknowledgement] = {}
        for ack in sorted(self.records.acknowledgements, key=lambda a: a.ended):
            first = decided.setdefault((ack.branch, ack.old), ack)
            if first.new != ack.new:
                verdict.conflicts.append(
                    f"{ack.branch} from {ack.old[:12]}: {first.client} was acknowledged "
                    f"{first.new[:12]} via {first.replica} at {self._t(first.ended)}, "
                    f"{ack.client} {ack.new[:12]} via {ack.replica} at {self._t(ack.ended)}"
                )


# -- scenarios --------------------------------------------------------------------------------

Fault = Callable[[LocalCluster, Workload], None]
"""One round of a fault: inject it while clients run, wait through it, recover."""

PUSHES_PER_PHASE = 3
"""Acknowledged pushes awaited before a fault, during it and after it: proof of progress."""


def kill_follower(cluster: LocalCluster, workload: Workload) -> None:
    victim = workload.rng.choice(cluster.followers())
    pid = cluster.kill(victim)
    killed = time.monotonic()
    workload.records.event(f"SIGKILL follower {victim} (pid {pid})")
    workload.wait_for_pushes(PUSHES_PER_PHASE, since=killed, what=f"after {victim} was killed")
    cluster.wait_restarted(victim, pid)
    cluster.wait_healthy(f"{victim} back and every replica InSync")
    workload.records.event(f"{victim} back, every replica InSync")


def kill_leader(cluster: LocalCluster, workload: Workload) -> None:
    victim, term = cluster.leader()
    pid = cluster.kill(victim)
    killed = time.monotonic()
    workload.records.event(f"SIGKILL leader {victim} (pid {pid}) of term {term}")
    leader, new_term = cluster.wait_new_leader(term)
    workload.records.event(f"{leader} leads term {new_term}")
    assert leader != victim, f"{victim} was killed, yet leads term {new_term} after it"
    workload.wait_for_pushes(PUSHES_PER_PHASE, since=killed, what=f"after {victim} was killed")
    cluster.wait_healthy(f"{victim} back as a follower and every replica InSync")
    workload.records.event(f"{victim} back, every replica InSync")


def cut_follower(cluster: LocalCluster, workload: Workload) -> None:
    victim = workload.rng.choice(cluster.followers())
    cluster.cut(victim)
    cut = time.monotonic()
    workload.records.event(f"cut follower {victim} off")
    try:
        workload.wait_for_pushes(PUSHES_PER_PHASE, since=cut, what=f"while {victim} is cut off")
    finally:
        cluster.heal(victim)
        workload.records.event(f"healed {victim}")
    cluster.wait_healthy(f"{victim} healed and every replica InSync")
    workload.records.event("every replica InSync")


def cut_leader(cluster: LocalCluster, workload: Workload) -> None:
    victim, term = cluster.leader()
    cluster.cut(victim)
    cut = time.monotonic()
    workload.records.event(f"cut leader {victim} of term {term} off")
    try:
        leader, new_term = cluster.wait_new_leader(term)
        workload.records.event(f"{leader} leads term {new_term}")
        workload.wait_for_pushes(PUSHES_PER_PHASE, since=cut, what=f"while {victim} is cut off")
    finally:
        cluster.heal(victim)
        workload.records.event(f"healed {victim}")
    cluster.wait_healthy(f"{victim} healed, following, and every replica InSync")
    workload.records.event("every replica InSync")


SCENARIOS: dict[str, Fault] = {
    "follower-killed": kill_follower,
    "leader-killed": kill_leader,
    "follower-cut": cut_follower,
    "leader-cut": cut_leader,
}


def run_scenario(
    fault: Fault,
    *,
    rounds: int,
    shared: int = 2,
    own: int = 2,
    seed: int | None = None,
    strict: bool = True,
    progress: Callable[[int, Verdict], None] | None = None,
    directory: pathlib.Path | None = None,
) -> Verdict:
    """Runs ``rounds`` rounds of ``fault`` on one cluster under load, checking after each.

    A round: clients push until some pushes are acknowledged, the fault is injected and
    recovered from while they keep going, then they stop and the checker runs over
    everything recorded so far. With ``strict`` a broken invariant fails at once (inside the
    cluster's block, so that the logs are printed); otherwise the verdict is returned and the
    rounds stop at the first broken one. With ``directory`` the cluster's data, logs and
    client clones stay there afterwards.
    """
    verdict = Verdict()
    seed = random.randrange(2**32) if seed is None else seed
    with LocalCluster(directory=directory) as cluster:
        workload = Workload(cluster, shared=shared, own=own, seed=seed)
        workload.records.event(f"workload seed {seed} ({fault.__name__}, {rounds} rounds)")
        checker = Checker(cluster, workload)
        try:
            for index in range(rounds):
                verdict = _round(cluster, workload, checker, fault, index + 1)
                if progress is not None:
                    progress(index, verdict)
                if not verdict.ok:
                    break
        except BaseException:
            print("timeline (since the workload started):\n" + workload.records.timeline())
            raise
        if not verdict.ok:
            if strict:
                verdict.assert_ok()
            print(verdict.describe(), flush=True)
            print(cluster.report(), flush=True)
            cluster.keep = True
    return verdict


def _round(
    cluster: LocalCluster, workload: Workload, checker: Checker, fault: Fault, number: int
) -> Verdict:
    with workload.running():
        workload.wait_for_pushes(
            PUSHES_PER_PHASE, since=time.monotonic(), what=f"before the fault of round {number}"
        )
        workload.records.event(f"round {number}")
        fault(cluster, workload)
        workload.wait_for_pushes(
            PUSHES_PER_PHASE, since=time.monotonic(), what=f"after round {number}'s recovery"
        )
    workload.records.event(f"round {number}: clients stopped")
    return checker.check()
