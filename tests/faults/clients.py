"""Concurrent git clients that record what they were told and what they saw.

:class:`Workload` is a few client threads, each with its own clone, using the real git CLI as
users do. Some push to the shared branch ``main`` and some each to a branch of their own; each
one commits, pushes to a replica chosen at random, and on a refusal or an error fetches from
another random replica and rebases. Between pushes it reads the branches with ``git
ls-remote`` from a random replica. Every acknowledged push and every observation is recorded
(:class:`Records`) with the monotonic time it started and ended, for the checker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import random
import threading
import time
import traceback
from collections.abc import Iterator, Mapping

from tests import waiting
from tests.faults.gitcli import READ_TIMEOUT, Git, GitResult
from tests.faults.localcluster import STATE_TIMEOUT, LocalCluster

ZERO_ID = "0" * 40
SHARED_BRANCH = "main"
PUSH_TIMEOUT = 6.0
"""Seconds before a client gives a push up: a cut replica accepts and never answers."""
CLIENT_PACE = 0.05
"""Seconds a client waits between two rounds of push and read, so that replicas get CPU."""


def elapsed(origin: float, at: float) -> str:
    return f"{at - origin:.2f}s"


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
            return "\n".join(f"  {elapsed(self.origin, t)} {m}" for t, m in self.events)


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
                f"{elapsed(self.records.origin, started)} {command} {replica} {outcome} "
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
