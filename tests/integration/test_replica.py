"""``gitquorum replica`` with real git clients: replicated pushes, forwarding, copies, refusals.

Three replicas on loopback with a fixed configuration (r0 leads); the tests start, stop and
wipe replicas themselves. The fault scenarios with a controller are in tests/faults.
"""

import base64
import json
import pathlib
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from gitquorum.protocol import pktline
from gitquorum.replication import tracing
from tests import waiting
from tests.integration import helpers
from tests.integration.helpers import Git
from tests.integration.replicas import Replicas, http_error

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(tmp_path: pathlib.Path, auth_file: pathlib.Path) -> Iterator[Replicas]:
    group = Replicas(tmp_path / "replicas", auth_file, 3)
    try:
        group.start_all()
        yield group
    finally:
        group.stop_all()


def _work(git: Git, tmp_path: pathlib.Path) -> pathlib.Path:
    work = tmp_path / "work"
    git.run("init", "-q", str(work))
    git.commit(work, "README", "hello\n")
    return work


def test_replica_push_to_follower_is_on_every_replica(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r1"), "main", cwd=work)
    head = git.out("rev-parse", "HEAD", cwd=work)
    replicas.wait_in_sync()
    for replica in replicas.ids:
        repository = replicas.data(replica) / "repositories" / "repository.git"
        assert git.refs(repository) == {"refs/heads/main": head}, replica
        assert replicas.status(replica)["generation"] == 1


def test_replica_clone_from_any_replica_sees_acknowledged_pushes(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    for index in range(5):
        head = git.commit(work, "file", f"{index}\n")
        git.run("push", "-q", replicas.url(replicas.ids[index % 3]), "main", cwd=work)
        for replica in replicas.ids:  # no waiting: acknowledged means readable everywhere
            remote = git.out("ls-remote", replicas.url(replica), "refs/heads/main")
            assert remote.split()[0] == head, f"{replica} serves {remote} after push {index}"
    clone = tmp_path / "clone"
    git.run("clone", "-q", replicas.url("r2"), str(clone))
    assert git.out("rev-parse", "HEAD", cwd=clone) == head


def test_replica_leader_traces_every_acknowledged_push(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    for index in range(3):
        git.commit(work, "file", f"{index}\n")
        git.run("push", "-q", replicas.url(replicas.ids[index % 3]), "main", cwd=work)
    traces = [tracing.parse(line) for line in replicas.log("r0").splitlines()]
    found = [trace for trace in traces if trace is not None]
    assert len(found) == 3, f"r0 (the leader) logged {len(found)} push traces for 3 pushes"
    for trace in found:
        assert set(tracing.STEPS) <= set(trace), trace
        steps = sum(trace[step] for step in tracing.STEPS)
        # Each field is rounded to 0.1 ms on its own.
        assert abs(steps - trace["total"]) <= 0.1 * len(tracing.STEPS), trace
        assert "record" in trace and any(name.startswith("prepare r") for name in trace), trace
    for follower in ("r1", "r2"):
        assert tracing.PREFIX not in replicas.log(follower), f"{follower} traced a push"


def test_replica_push_without_quorum_is_refused_and_changes_nothing(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    before = replicas.status("r0")
    replicas.kill("r1")
    replicas.kill("r2")
    git.commit(work, "file", "lonely\n")
    result = git.run("push", replicas.url("r0"), "main", cwd=work, check=False)
    assert result.returncode != 0
    assert "no quorum" in result.stderr, result.stderr
    after = replicas.status("r0")
    assert (after["generation"], after["checksum"]) == (before["generation"], before["checksum"])
    assert after["prepared"] is None


def test_replica_rebuilds_from_empty_with_data_intact(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    for index in range(3):
        git.commit(work, f"file{index}", f"{index}\n" * 1000)
        git.run("push", "-q", replicas.url("r0"), "main", f"main:refs/heads/b{index}", cwd=work)
    git.run("tag", "v1", cwd=work)
    git.run("push", "-q", replicas.url("r1"), "v1", cwd=work)
    checksum = replicas.wait_in_sync()
    replicas.kill("r2")
    shutil.rmtree(replicas.data("r2"))
    replicas.start("r2")
    replicas.configure("r2")
    assert replicas.wait_in_sync() == checksum
    repository = replicas.data("r2") / "repositories" / "repository.git"
    assert git.refs(repository) == git.refs(replicas.data("r0") / "repositories" / "repository.git")
    git.run("fsck", "--strict", "--no-dangling", cwd=repository)
    assert "copied generation" in replicas.log("r2")


def test_replica_behind_catches_up_after_restart(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    replicas.kill("r2")
    for index in range(3):
        git.commit(work, "file", f"{index}\n")
        git.run("push", "-q", replicas.url("r1"), "main", cwd=work)
    replicas.start("r2")
    replicas.configure("r2")
    replicas.wait_in_sync()
    assert replicas.status("r2")["generation"] == 4


def test_replica_peer_api_refuses_wrong_token(replicas: Replicas) -> None:
    for path in ("/admin/status", "/replication/snapshot"):
        error = http_error(lambda p=path: replicas.call("r1", "GET", p, token="wrong-token"))
        assert error.code == 401, path
    heartbeat = {
        "term": 9,
        "leader": "r2",
        "generation": 0,
        "transaction": "",
        "checksum": "0" * 64,
        "settled": False,
    }
    error = http_error(
        lambda: replicas.call(
            "r1", "POST", "/replication/heartbeat", heartbeat, token="wrong-token"
        )
    )
    assert error.code == 401
    assert replicas.status("r1")["term"] == 1


def test_replica_refuses_messages_of_an_older_term(replicas: Replicas) -> None:
    replicas.term = 2
    for replica in replicas.ids:
        replicas.configure(replica)
    answer = replicas.call(
        "r1",
        "POST",
        "/replication/heartbeat",
        {
            "term": 1,
            "leader": "r0",
            "generation": 0,
            "transaction": "",
            "checksum": "0" * 64,
            "settled": False,
        },
    )
    assert answer["ok"] is False and "stale" in answer["reason"]
    replicas.term = 1
    error = http_error(lambda: replicas.configure("r1"))
    assert error.code == 409
    assert replicas.status("r1")["term"] == 2


def _prepare(replicas: Replicas, replica: str, transaction: dict[str, object]) -> int:
    header = json.dumps({"term": 1, "leader": "r0", "transaction": transaction}).encode()
    body = len(header).to_bytes(4, "big") + header + b"PACK-not-really"
    request = urllib.request.Request(
        f"http://127.0.0.1:{replicas.ports[replica][1]}/replication/prepare",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {replicas.token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize(
    "field,value",
    [
        ("files", [["../../HEAD", 15]]),
        ("files", [["pack-" + "a" * 40 + ".pack", 15]]),  # not a pack: checksum fails
        ("changes", [["HEAD", "0" * 40, "1" * 40]]),
        ("changes", [["refs/heads/a..b", "0" * 40, "1" * 40]]),
        ("id", "not-an-id"),
    ],
)
def test_replica_rejects_malformed_prepare_and_changes_nothing(
    replicas: Replicas, field: str, value: object
) -> None:
    transaction: dict[str, object] = {
        "id": "a" * 32,
        "term": 1,
        "generation": 1,
        "seq": 1,
        "changes": [["refs/heads/main", "0" * 40, "1" * 40]],
        "head": None,
        "files": [],
    }
    transaction[field] = value
    assert _prepare(replicas, "r1", transaction) == 400
    status = replicas.status("r1")
    assert status["prepared"] is None and status["generation"] == 0
    assert not (replicas.base / "HEAD").exists()


def test_replica_follower_without_lease_forwards_reads(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    replicas.kill("r0")
    waiting.until(
        "r1 to lose its read lease once the leader is gone",
        lambda: not replicas.status("r1")["readable"],
        timeout=10,
        interval=0.05,
    )
    result = git.run("ls-remote", replicas.url("r1"), check=False)
    assert result.returncode != 0
    assert "503" in result.stderr or "leader cannot be reached" in result.stderr, result.stderr


def test_replica_behind_rejoins_while_pushes_continue(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    """A follower that fell behind votes again within 10 s under 4 clients pushing without
    pause (issue 14): its copies must not keep it one generation behind for ever."""
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    replicas.kill("r2")
    for index in range(3):
        git.commit(work, "file", f"behind {index}\n")
        git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    stop = threading.Event()
    pushed: list[str] = []

    def push_without_pause(client: int) -> None:
        clone = tmp_path / f"client-{client}"
        git.run("clone", "-q", replicas.url("r0"), str(clone))
        while not stop.is_set():
            git.commit(clone, f"file-{client}", f"push {len(pushed)}\n")
            git.run("push", "-q", replicas.url("r0"), f"HEAD:refs/heads/c{client}", cwd=clone)
            pushed.append(f"c{client}")

    pushers = [threading.Thread(target=push_without_pause, args=(n,)) for n in range(4)]
    for pusher in pushers:
        pusher.start()
    try:
        waiting.until("pushes under way", lambda: len(pushed) >= 8, timeout=30)
        replicas.start("r2")
        replicas.configure("r2")
        started = len(pushed)
        waiting.until(
            "r2 in sync and serving reads while 4 clients push",
            lambda: (lambda s: s["state"] == "InSync" and s["readable"])(replicas.status("r2")),
            timeout=10,
            interval=0.1,
            seen=lambda: (replicas.status("r2"), replicas.status("r0")["generation"]),
        )
        assert all(pusher.is_alive() for pusher in pushers), "a client stopped pushing"
        assert len(pushed) > started, "no push went on while r2 caught up"
    finally:
        stop.set()
        for pusher in pushers:
            pusher.join(timeout=60)


def _statuses(report: bytes) -> dict[str, str]:
    """ref -> ok or ng, from a report-status without side-band."""
    found = {}
    for packet in pktline.decode(report):
        if packet.kind is not pktline.Kind.DATA:
            continue
        line = packet.payload.decode().rstrip("\n")
        if line.startswith(("ok ", "ng ")):
            found[line.split(" ")[1]] = line[:2]
    return found


def _git_would_report(git: Git, repository: pathlib.Path, body: bytes, copy: pathlib.Path) -> bytes:
    """What plain git receive-pack answers to ``body`` on a copy of ``repository``."""
    shutil.copytree(repository, copy)
    hooks = copy / "hooks"
    shutil.rmtree(hooks, ignore_errors=True)
    return subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", "receive-pack", "--stateless-rpc", str(copy)],
        input=body,
        capture_output=True,
        env=git.env,
        check=True,
    ).stdout


@pytest.mark.parametrize("atomic", [False, True], ids=["plain", "atomic"])
def test_replica_push_with_one_stale_ref_reports_it_as_git_does(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path, atomic: bool
) -> None:
    """A push of two refs where one moved since the client read it: without --atomic the
    other is updated and only the stale one reported ng, as git receive-pack does; with
    --atomic, nothing changes (issue 14)."""
    work = _work(git, tmp_path)
    first = git.out("rev-parse", "HEAD", cwd=work)
    git.run("push", "-q", replicas.url("r0"), "main", "main:refs/heads/side", cwd=work)
    moved = git.commit(work, "side", "someone else\n")
    git.run("push", "-q", replicas.url("r0"), "HEAD:refs/heads/side", cwd=work)
    git.run("reset", "-q", "--hard", first, cwd=work)
    new = git.commit(work, "mine", "mine\n")
    replicas.wait_in_sync()
    leader = replicas.data("r0") / "repositories" / "repository.git"
    capabilities = "report-status" + (" atomic" if atomic else "")
    commands, pack = helpers.push_body(
        git, work, ref="refs/heads/main", old=first, new=new, capabilities=capabilities
    )
    stale = pktline.encode(f"{first} {new} refs/heads/side".encode())
    body = commands[: -len(pktline.FLUSH)] + stale + pktline.FLUSH + pack
    expected = _statuses(_git_would_report(git, leader, body, tmp_path / "plain.git"))

    url = replicas.url("r0").replace(f"{helpers.ALICE[0]}:{helpers.ALICE[1]}@", "")
    request = urllib.request.Request(
        f"{url}/git-receive-pack",
        data=body,
        headers={
            "Content-Type": "application/x-git-receive-pack-request",
            "Authorization": "Basic " + base64.b64encode(":".join(helpers.ALICE).encode()).decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        report = response.read()

    assert _statuses(report) == expected, (report, expected)
    wanted_main = first if atomic else new
    assert expected == {
        "refs/heads/main": "ng" if atomic else "ok",
        "refs/heads/side": "ng",
    }, expected
    checksum = replicas.wait_in_sync()
    for replica in replicas.ids:
        refs = git.refs(replicas.data(replica) / "repositories" / "repository.git")
        assert refs == {"refs/heads/main": wanted_main, "refs/heads/side": moved}, replica
    assert checksum
