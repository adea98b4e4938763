"""The wire format of protocol version 1, pinned: a change to what replicas and the operator
exchange shows here in review, and must come with a new version (``replication.versions``)
when an older replica could not read it. Each golden file holds one message as sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitquorum.replication import decisions, membership, reports, versions

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"


def _golden(name: str) -> object:
    return json.loads((GOLDEN / f"v{versions.CURRENT}-{name}.json").read_text())


def _status() -> reports.ReplicaStatus:
    return reports.ReplicaStatus(
        replica="repo-2",
        role="Follower",
        term=3,
        leader="repo-1",
        configured_term=3,
        configuration=_configuration().to_json(),
        generation=12,
        checksum="ab" * 32,
        transaction="c" * 32,
        position=decisions.Position(3, 12, 4),
        eligible=True,
        readable=True,
        writable=False,
        state="InSync",
        lag=0,
        in_transition=False,
        prepared=None,
        copy={"active": False},
        refs=2,
        protocol=reports.Protocol(speaks=1, oldest=1, newest=1),
    )


def _configuration() -> membership.Configuration:
    return membership.Configuration(
        term=3,
        leader="repo-1",
        members=(
            membership.Member("repo-1", "http://10.244.1.2:8080", "http://10.244.1.2:8081"),
            membership.Member("repo-2", "http://10.244.2.2:8080", "http://10.244.2.2:8081"),
            membership.Member("repo-3", "http://10.244.3.2:8080", "http://10.244.3.2:8081", False),
        ),
        stopped=frozenset({"repo-3"}),
    )


def test_golden_status_is_what_a_replica_reports() -> None:
    assert _status().to_json() == _golden("status")


def test_golden_status_reads_back_to_the_same_value() -> None:
    golden = _golden("status")
    assert isinstance(golden, dict)
    assert reports.ReplicaStatus.from_json(golden) == _status()


def test_golden_configuration_is_what_a_controller_sends() -> None:
    assert _configuration().to_json() == _golden("configuration")
    golden = _golden("configuration")
    assert isinstance(golden, dict)
    assert membership.Configuration.from_json(golden) == _configuration()


def test_golden_status_of_a_release_before_versions_is_read() -> None:
    older = dict(_golden("status"))  # type: ignore[arg-type]
    for key in ("protocol", "inTransition"):
        older.pop(key)
    status = reports.ReplicaStatus.from_json(older)
    assert status.protocol is None and status.understands(1) and not status.understands(2)


@pytest.mark.parametrize(
    ("key", "value"),
    [("term", -1), ("term", "3"), ("position", [1, 2]), ("role", "Boss"), ("readable", 1)],
)
def test_rejects_status_with_malformed_field(key: str, value: object) -> None:
    answer = dict(_golden("status"))  # type: ignore[arg-type]
    answer[key] = value
    with pytest.raises(ValueError, match=key):
        reports.ReplicaStatus.from_json(answer)
