"""Replica statuses for the operator's unit tests, built through the parser the operator uses
on real answers (``reports.ReplicaStatus.from_json``)."""

from __future__ import annotations

from typing import Any

from gitquorum.replication import reports, versions


def status(**fields: Any) -> reports.ReplicaStatus:
    """An in-sync replica of term 1; ``fields`` override keys of the JSON answer."""
    term = fields.get("term", 1)
    generation = fields.get("generation", 0)
    answer: dict[str, Any] = {
        "replica": "r",
        "role": "Follower",
        "term": term,
        "leader": None,
        "configuredTerm": 1,
        "configuration": None,
        "generation": generation,
        "checksum": "0" * 64,
        "transaction": "",
        "position": [term, generation, generation],
        "eligible": fields.get("state", "InSync") != "Rebuilding",
        "readable": True,
        "writable": True,
        "state": "InSync",
        "protocol": versions.describe(),
    }
    answer.update(fields)
    return reports.ReplicaStatus.from_json(answer)
