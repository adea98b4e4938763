"""Malformed and invalid messages on the replication and admin ports of running replicas.

Three ``gitquorum replica`` processes on loopback (r0 leads term 1), as in test_replica.py.
Every malformed message is answered 400 with a readable reason and changes nothing on the
replica that got it, not even its term; the leader that gets one goes on leading, and pushes
go on being acknowledged. Issue 15: one such commit once deposed a leader for good.
"""

import json
import pathlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.helpers import Git
from tests.integration.replicas import Replicas

pytestmark = pytest.mark.integration

ID = "a" * 32
CHECKSUM = "0" * 64
VIEW = ("term", "leader", "role", "configuredTerm", "generation", "checksum", "prepared")
"""What a malformed message must not change in a replica's status."""


@pytest.fixture
def replicas(tmp_path: pathlib.Path, auth_file: pathlib.Path) -> Iterator[Replicas]:
    group = Replicas(tmp_path / "replicas", auth_file, 3)
    try:
        group.start_all()
        yield group
    finally:
        group.stop_all()


def _send(replicas: Replicas, replica: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """One raw message, sent as given; the status and the JSON answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{replicas.ports[replica][1]}{path}",
        data=body,
        method="PUT" if path == "/admin/configuration" else "POST",
        headers={"Authorization": f"Bearer {replicas.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _view(replicas: Replicas, replica: str) -> dict[str, Any]:
    status = replicas.status(replica)
    return {key: status[key] for key in VIEW}


def _push(git: Git, replicas: Replicas, tmp_path: pathlib.Path, replica: str, name: str) -> str:
    work = tmp_path / "work"
    if not work.exists():
        git.run("init", "-q", str(work))
    head = git.commit(work, name, f"{name}\n")
    git.run("push", "-q", replicas.url(replica), "main", cwd=work)
    return head


def _framed(header: bytes) -> bytes:
    return len(header).to_bytes(4, "big") + header


def _nested(depth: int) -> bytes:
    return b'{"term": 50, "leader": "r2", "members": ' + b"[" * depth + b"]" * depth + b"}"


MALFORMED = [
    ("/replication/commit", b'{"term": 50, "transaction": {}}'),
    ("/replication/commit", json.dumps({"term": "50", "transaction": ID}).encode()),
    ("/replication/commit", b"[50]"),
    ("/replication/commit", b"not json"),
    ("/replication/abort", json.dumps({"term": 50, "transaction": "../x"}).encode()),
    ("/replication/heartbeat", json.dumps({"term": 50, "leader": "r2"}).encode()),
    ("/replication/heartbeat", _nested(100_000).replace(b"members", b"generation")),
    ("/replication/prepare", b"{}"),
    ("/replication/prepare", _framed(b"{}")),
    ("/replication/prepare", _framed(b'{"term": 50, "leader": "r2", "transaction": {}}')),
    ("/replication/prepare", (1000).to_bytes(4, "big") + b'{"term": 50}'),
    (
        "/replication/lease",
        json.dumps(
            {"term": 1, "replica": ["r1"], "generation": 0, "transaction": "", "checksum": CHECKSUM}
        ).encode(),
    ),
    ("/admin/configuration", _nested(100_000)),
    ("/admin/configuration", _nested(20)),
    ("/admin/configuration", json.dumps({"term": 50, "leader": "r0", "members": "r0"}).encode()),
    ("/admin/configuration", json.dumps({"term": True, "leader": "r0", "members": []}).encode()),
    ("/replication/git/git-upload-pack", b"zzzz"),
    ("/replication/git/git-upload-pack", b"0032want " + b"1" * 40 + b"\n"),
    ("/admin/handoff", _nested(100_000)),
    ("/admin/handoff", json.dumps({"term": True, "to": "r1", "timeout": 1}).encode()),
    ("/admin/handoff", json.dumps({"term": 1, "to": "r1", "timeout": True}).encode()),
]


def test_replica_leader_keeps_leading_after_malformed_commit_of_a_higher_term(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    _push(git, replicas, tmp_path, "r0", "before")
    replicas.wait_in_sync()
    before = _view(replicas, "r0")
    assert (before["term"], before["role"]) == (1, "Leader")

    code, answer = _send(replicas, "r0", "/replication/commit", b'{"term": 50, "transaction": {}}')

    assert code == 400, answer
    assert "transaction" in answer["reason"], answer
    assert _view(replicas, "r0") == before
    head = _push(git, replicas, tmp_path, "r1", "after")  # forwarded to the leader
    replicas.wait_in_sync()
    after = replicas.status("r0")
    assert (after["term"], after["role"], after["writable"]) == (1, "Leader", True)
    assert git.out("ls-remote", replicas.url("r2"), "refs/heads/main").split()[0] == head


def test_replica_refuses_malformed_messages_and_changes_nothing(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    before = {replica: _view(replicas, replica) for replica in replicas.ids}
    for replica in ("r0", "r1"):
        for path, body in MALFORMED:
            code, answer = _send(replicas, replica, path, body)
            assert code == 400, (replica, path, body[:80], answer)
            assert answer["reason"].startswith("malformed message: "), answer
            assert "Traceback" not in answer["reason"]
    assert {replica: _view(replicas, replica) for replica in replicas.ids} == before
    _push(git, replicas, tmp_path, "r2", "after")
    replicas.wait_in_sync()
    assert replicas.status("r0")["term"] == 1


def test_replica_refuses_a_second_leader_for_its_term(replicas: Replicas) -> None:
    heartbeat = {
        "term": 1,
        "leader": "r2",
        "generation": 0,
        "transaction": "",
        "checksum": CHECKSUM,
        "settled": False,
    }
    code, answer = _send(replicas, "r1", "/replication/heartbeat", json.dumps(heartbeat).encode())
    assert code == 200
    assert answer["ok"] is False and "led by r0" in answer["reason"], answer
    assert replicas.status("r1")["leader"] == "r0"
    heartbeat["leader"] = "r1"  # a leader's message naming the replica that gets it
    code, answer = _send(replicas, "r1", "/replication/heartbeat", json.dumps(heartbeat).encode())
    assert code == 400, answer
