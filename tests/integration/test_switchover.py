"""Switchover between running replicas: the leader hands off, a new term begins, and no client
operation fails; requests that arrive meanwhile are held, not refused.

Three ``gitquorum replica`` processes on loopback; the test plays the controller (hand-off,
then the new configuration, the new leader first), as the operator does.
"""

import json
import pathlib
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests import waiting
from tests.integration.helpers import Git
from tests.integration.replicas import Replicas, http_error

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(tmp_path: pathlib.Path, auth_file: pathlib.Path) -> Iterator[Replicas]:
    # A short resume, so that a hand-off the controller never completes ends soon.
    group = Replicas(
        tmp_path / "replicas",
        auth_file,
        3,
        extra_args=("--handoff-resume", "2"),
    )
    try:
        group.start_all()
        yield group
    finally:
        group.stop_all()


class Pushes:
    """Pushes to every replica in turn, in a thread, never retrying; reads after each."""

    def __init__(self, git: Git, replicas: Replicas, work: pathlib.Path) -> None:
        self.git, self.replicas, self.work = git, replicas, work
        self.acknowledged: list[str] = []
        self.failures: list[str] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Pushes":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def wait(self, count: int) -> None:
        target = len(self.acknowledged) + count
        waiting.until(
            f"{count} more acknowledged pushes",
            lambda: len(self.acknowledged) >= target or self.failures,
            timeout=60,
            seen=lambda: (len(self.acknowledged), self.failures),
        )

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            replica = self.replicas.ids[index % len(self.replicas.ids)]
            index += 1
            head = self.git.commit(self.work, "file", f"{index}\n")
            started = time.monotonic()
            pushed = self.git.run(
                "push", "-q", self.replicas.url(replica), "main", cwd=self.work, check=False
            )
            if pushed.returncode != 0:
                self.failures.append(f"push to {replica}: {pushed.stderr.strip()}")
                continue
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.acknowledged.append(head)
            seen = self.git.run(
                "ls-remote", self.replicas.url(replica), "refs/heads/main", check=False
            )
            if seen.returncode != 0 or not seen.stdout.startswith(head):
                self.failures.append(f"read from {replica}: {seen.stdout or seen.stderr}")


def _work(git: Git, tmp_path: pathlib.Path) -> pathlib.Path:
    work = tmp_path / "work"
    git.run("init", "-q", str(work))
    git.commit(work, "README", "hello\n")
    return work


def _switch_over(replicas: Replicas, successor: str) -> dict[str, object]:
    handed = replicas.call(
        replicas.leader, "POST", "/admin/handoff",
        {"term": replicas.term, "to": successor, "timeout": 5},
    )  # fmt: skip
    replicas.term += 1
    # The old leader handed off: it serves no reads since, as the operator tells the others.
    replicas.stopped = frozenset({replicas.leader})
    replicas.leader = successor
    replicas.configure(successor)
    for replica in replicas.ids:
        if replica != successor:
            replicas.configure(replica)
    return handed


def test_switchover_under_pushes_to_every_replica_fails_nothing(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    with Pushes(git, replicas, work) as pushes:
        pushes.wait(3)
        handed = _switch_over(replicas, "r1")
        pushes.wait(6)
        _switch_over(replicas, "r2")
        pushes.wait(6)
    assert not pushes.failures, pushes.failures
    assert handed["ok"] is True
    assert replicas.status("r2")["role"] == "Leader"
    assert replicas.status("r0")["role"] == "Follower"
    replicas.wait_in_sync()
    clone = tmp_path / "clone"
    git.run("clone", "-q", replicas.url("r0"), str(clone))
    reachable = set(git.out("rev-list", "HEAD", cwd=clone).split())
    assert set(pushes.acknowledged) <= reachable
    print(f"{len(pushes.acknowledged)} pushes, slowest {pushes.slowest:.2f} s")


def test_switchover_push_during_hand_off_is_held_then_served_by_the_new_leader(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    replicas.call("r0", "POST", "/admin/handoff", {"term": 1, "to": "r1", "timeout": 5})
    assert replicas.status("r0")["writable"] is False
    head = git.commit(work, "file", "held\n")
    held = threading.Thread(
        target=lambda: git.run("push", "-q", replicas.url("r2"), "main", cwd=work)
    )
    held.start()
    # The push waits at r0 (r2 forwarded it); the new term then takes it.
    replicas.term, replicas.leader, replicas.stopped = 2, "r1", frozenset({"r0"})
    for replica in ("r1", "r2", "r0"):
        replicas.configure(replica)
    held.join(timeout=30)
    assert not held.is_alive()
    assert git.out("ls-remote", replicas.url("r1"), "refs/heads/main").split()[0] == head


def test_switchover_hand_off_never_followed_by_a_term_resumes_writes(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    replicas.call("r0", "POST", "/admin/handoff", {"term": 1, "to": "r1", "timeout": 5})
    git.commit(work, "file", "after\n")
    started = time.monotonic()
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)  # held, then served by r0
    assert time.monotonic() - started < 10
    assert replicas.status("r0")["role"] == "Leader"


def test_rejects_hand_off_of_another_term_or_to_a_non_member(replicas: Replicas) -> None:
    stale = http_error(
        lambda: replicas.call("r0", "POST", "/admin/handoff", {"term": 7, "to": "r1", "timeout": 1})
    )
    assert stale.code == 409
    stranger = http_error(
        lambda: replicas.call("r0", "POST", "/admin/handoff", {"term": 1, "to": "rX", "timeout": 1})
    )
    assert stranger.code == 400
    endless = http_error(
        lambda: replicas.call(
            "r0", "POST", "/admin/handoff", {"term": 1, "to": "r1", "timeout": 1e9}
        )
    )
    assert endless.code == 400
    follower = http_error(
        lambda: replicas.call("r1", "POST", "/admin/handoff", {"term": 1, "to": "r2", "timeout": 1})
    )
    assert follower.code == 409
    assert replicas.status("r0")["writable"] is True, "a refused hand-off changes nothing"


@pytest.fixture
def leaving(tmp_path: pathlib.Path, auth_file: pathlib.Path) -> Iterator[Replicas]:
    """Replicas whose leader waits for a switchover on SIGTERM, as in a pod."""
    group = Replicas(tmp_path / "leaving", auth_file, 3, extra_args=("--leave-timeout", "20"))
    try:
        group.start_all()
        yield group
    finally:
        if group.leader in group.processes:
            group.kill(group.leader)  # a SIGTERM would wait out --leave-timeout
        group.stop_all()


def test_leader_on_sigterm_keeps_serving_until_leadership_moves(
    git: Git, leaving: Replicas, tmp_path: pathlib.Path
) -> None:
    replicas = leaving
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    leader = replicas.processes["r0"]
    leader.send_signal(signal.SIGTERM)
    waiting.until(
        "the leader to say it waits for a switchover",
        lambda: "waiting for a switchover" in replicas.log("r0"),
        timeout=10,
    )
    assert leader.poll() is None
    git.commit(work, "file", "while stopping\n")
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    _switch_over(replicas, "r1")
    waiting.until("the old leader to exit", lambda: leader.poll() is not None, timeout=40)
    replicas.processes.pop("r0")
    git.commit(work, "file", "after\n")
    git.run("push", "-q", replicas.url("r2"), "main", cwd=work)


def test_rejects_unknown_protocol_version(replicas: Replicas) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{replicas.ports['r0'][1]}/admin/status",
        headers={"Authorization": f"Bearer {replicas.token}", "Gitquorum-Protocol": "99"},
    )
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as error:
        assert error.code == 400
        assert "protocol version 99" in json.loads(error.read())["reason"]
    else:
        raise AssertionError("a message of protocol version 99 was accepted")


def test_follower_on_sigterm_gives_its_read_lease_back(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    """A follower that shuts down stops serving reads and tells the leader, which then need
    not wait for that lease to lapse before acknowledging the next push."""
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    leaving = replicas.processes.pop("r2")
    leaving.send_signal(signal.SIGTERM)
    waiting.until(
        "the leader to record r2's lease given back",
        lambda: "r2 gave its read lease back" in replicas.log("r0"),
        timeout=10,
        seen=lambda: replicas.log("r0")[-1500:],
    )
    leaving.wait(timeout=30)
    head = git.commit(work, "file", "after r2 left\n")
    git.run("push", "-q", replicas.url("r1"), "main", cwd=work)
    assert git.out("ls-remote", replicas.url("r1"), "refs/heads/main").split()[0] == head


def test_request_to_a_replica_not_configured_yet_waits_for_its_configuration(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    """A Service may still send a client to the address of a replaced pod, which the new pod
    now holds before its controller configured it: the request waits, it does not fail."""
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    replicas.kill("r2")
    replicas.extra_args = ()  # the default hold (10 s), not the fixture's short one
    replicas.start("r2")  # not configured yet
    outcome: list[object] = []
    reader = threading.Thread(
        target=lambda: outcome.append(
            git.run("ls-remote", replicas.url("r2"), "refs/heads/main", check=False)
        )
    )
    reader.start()
    waiting.until(
        "the new replica to hold the read",
        lambda: "holding a read request" in replicas.log("r2"),
        timeout=10,
    )
    replicas.configure("r2")
    reader.join(timeout=30)
    result = outcome[0]
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    assert result.stdout.split()[0] == git.out("rev-parse", "HEAD", cwd=work)  # type: ignore[attr-defined]


def _answer(url: str) -> tuple[int, str]:
    """The status and Connection header of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers.get("Connection", "")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Connection", "")


def test_follower_on_sigterm_accepts_connections_for_its_stop_delay_while_not_ready(
    git: Git, tmp_path: pathlib.Path, auth_file: pathlib.Path
) -> None:
    """Between a pod's SIGTERM and its endpoint leaving the Service's routing, connections
    still arrive: the replica answers them (saying it closes each), reports not ready, and
    closes its listener only after the stop delay."""
    group = Replicas(tmp_path / "delayed", auth_file, 3, extra_args=("--stop-delay", "4"))
    try:
        group.start_all()
        work = _work(git, tmp_path)
        git.run("push", "-q", group.url("r0"), "main", cwd=work)
        group.wait_in_sync()
        port = group.ports["r2"][0]
        stopping = group.processes.pop("r2")
        stopping.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        waiting.until(
            "the stopping follower to report not ready",
            lambda: _answer(f"http://127.0.0.1:{port}/readyz")[0] == 503,
            timeout=3,
            interval=0.05,
        )
        head = git.commit(work, "file", "through a stopping follower\n")
        git.run("push", "-q", group.url("r2"), "main", cwd=work)
        assert git.out("ls-remote", group.url("r2"), "refs/heads/main").split()[0] == head
        assert _answer(f"http://127.0.0.1:{port}/healthz") == (200, "close")
        assert time.monotonic() - signalled < 4, "the checks outlasted the stop delay"
        stopping.wait(timeout=30)
        assert time.monotonic() - signalled >= 4, "the listener closed before the stop delay"
    finally:
        group.stop_all()
