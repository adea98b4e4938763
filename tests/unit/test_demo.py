"""``make demo`` names the replica that replaced the lost one only once the status shows it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gitquorum_testbed import demo

pytestmark = pytest.mark.unit

LOST = {"name": "minimal-2", "node": "node-2", "state": "InSync", "voter": True}
ORIGINAL = {"minimal-1", "minimal-2", "minimal-3"}


def _status(*entries: tuple[str, str, str], ready: int | None = None) -> dict[str, Any]:
    replicas = [
        {"name": n, "node": node, "state": state, "voter": True, "generation": 1, "checksum": "c"}
        for n, node, state in entries
    ]
    in_sync = sum(1 for _, _, state in entries if state == "InSync")
    return {
        "leader": "minimal-1",
        "members": [{"name": n, "voter": True} for n, _, _ in entries],
        "readyReplicas": in_sync if ready is None else ready,
        "replicaStatuses": replicas,
    }


def _replacement(status: dict[str, Any]) -> Any:
    return demo.replacement(status, lost=LOST, original=ORIGINAL, replicas=3)


def test_replacement_none_while_the_survivors_alone_are_in_sync():
    # What the demo once called "minimal-3 rebuilt": minimal-2 gone, minimal-4 not there yet.
    status = _status(("minimal-1", "node-1", "InSync"), ("minimal-3", "node-3", "InSync"))
    assert _replacement(status) is None


def test_replacement_none_while_the_lost_replica_is_a_member():
    status = _status(
        ("minimal-1", "node-1", "InSync"),
        ("minimal-2", "node-2", "Lost"),
        ("minimal-3", "node-3", "InSync"),
    )
    assert _replacement(status) is None


def test_replacement_none_while_the_newcomer_catches_up():
    status = _status(
        ("minimal-1", "node-1", "InSync"),
        ("minimal-3", "node-3", "InSync"),
        ("minimal-4", "node-4", "Rebuilding"),
    )
    assert _replacement(status) is None


def test_replacement_is_the_newcomer_once_in_sync():
    status = _status(
        ("minimal-1", "node-1", "InSync"),
        ("minimal-3", "node-3", "InSync"),
        ("minimal-4", "node-4", "InSync"),
    )
    found = _replacement(status)
    assert found is not None
    assert (found["name"], found["node"]) == ("minimal-4", "node-4")


def test_all_in_sync_false_at_two_generations():
    status = _status(
        ("minimal-1", "node-1", "InSync"),
        ("minimal-2", "node-2", "InSync"),
        ("minimal-3", "node-3", "InSync"),
    )
    assert demo.all_in_sync(status, replicas=3)
    status["replicaStatuses"][2]["generation"] = 0
    assert not demo.all_in_sync(status, replicas=3)


def test_describe_names_each_replica_state_and_node():
    status = _status(("minimal-1", "node-1", "InSync"), ("minimal-4", "", "Rebuilding"))
    assert demo.describe(status) == "minimal-1 InSync on node-1, minimal-4 Rebuilding on -"


class FakeKubectl:
    """Answers ``get gitrepositories.gitquorum.io NAME -o json`` with one status after another."""

    def __init__(self, *statuses: dict[str, Any]) -> None:
        self.statuses = list(statuses)

    def __call__(self, *args: str, show: bool = False) -> str:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return json.dumps({"spec": {"replicas": 3}, "status": status})


def test_wait_for_prints_each_change_up_to_the_replacement_in_sync(monkeypatch, capsys):
    monkeypatch.setattr(demo, "POLL_INTERVAL", 0)
    survivors = (("minimal-1", "node-1", "InSync"), ("minimal-3", "node-3", "InSync"))
    kubectl = FakeKubectl(
        _status(*survivors),
        _status(*survivors),
        _status(*survivors, ("minimal-4", "node-4", "Behind")),
        _status(*survivors, ("minimal-4", "node-4", "InSync")),
    )
    found = demo.wait_for(kubectl, "minimal", "the replacement", _replacement, timeout=5)
    assert found["name"] == "minimal-4"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "  waiting for the replacement (at most 5 s)"
    assert [line.split("  ", 2)[2] for line in lines[1:]] == [
        "minimal-1 InSync on node-1, minimal-3 InSync on node-3",
        "minimal-1 InSync on node-1, minimal-3 InSync on node-3, minimal-4 Behind on node-4",
        "minimal-1 InSync on node-1, minimal-3 InSync on node-3, minimal-4 InSync on node-4",
    ]


def test_wait_for_says_what_it_awaited_and_saw_at_the_deadline(monkeypatch):
    monkeypatch.setattr(demo, "POLL_INTERVAL", 0)
    kubectl = FakeKubectl(_status(("minimal-1", "node-1", "InSync")))
    with pytest.raises(SystemExit, match="waiting for the replacement; last seen: minimal-1 In"):
        demo.wait_for(kubectl, "minimal", "the replacement", _replacement, timeout=0)
