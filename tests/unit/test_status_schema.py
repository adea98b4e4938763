"""The status a pass writes is what the API server stores: no null where the CRD's schema does
not allow one (the server drops it, and a pass comparing its status with the stored one would
write it again on every pass), and no field the schema does not declare (pruned the same way)."""

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from gitquorum.kube import status
from gitquorum.kube.planning import Durable, Member, Observed
from tests.unit import statuses

CRD = pathlib.Path(__file__).parents[2] / "crds" / "gitrepositories.gitquorum.io.yaml"
OWNER = {"metadata": {"name": "repo", "namespace": "ns", "uid": "u-1", "generation": 2}}
MEMBERS = (Member("repo-1", True), Member("repo-2", True), Member("repo-3", True))


def _status_schema() -> dict[str, Any]:
    version = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def _stored_differently(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    """Paths of ``value`` the API server would not store as they are."""
    if value is None:
        if not schema.get("nullable"):
            yield f"{path}: null, not nullable"
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        kept = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for key, item in value.items():
            if properties is not None and key in properties:
                yield from _stored_differently(item, properties[key], f"{path}.{key}")
            elif "additionalProperties" in schema:
                field = schema["additionalProperties"]
                yield from _stored_differently(item, field, f"{path}.{key}")
            elif not kept:
                yield f"{path}.{key}: not in the schema"
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from _stored_differently(item, schema.get("items", {}), f"{path}[{number}]")


def _running(name: str) -> Observed:
    report = statuses.status(state="InSync", writable=True, generation=3)
    return Observed(name, pod=True, phase="Running", ip="10.0.0.1", ready=True, report=report)


@pytest.mark.parametrize(
    ("durable", "observed"),
    [
        (Durable(), {}),
        (Durable(members=MEMBERS, next_serial=4), {}),
        (
            Durable(members=MEMBERS, next_serial=4),
            {"repo-1": Observed("repo-1", pod=True, phase="Pending", claim=True)},
        ),
        (
            Durable(2, "repo-1", MEMBERS, 4, handed_off="repo-2"),
            {name: _running(name) for name in ("repo-1", "repo-2", "repo-3")},
        ),
    ],
    ids=["nothing", "members-without-leader", "pending-pod", "leader-running"],
)
def test_status_derive_is_stored_as_written(
    durable: Durable, observed: dict[str, Observed]
) -> None:
    derived = status.derive(
        OWNER, durable, observed, replicas=3, credentials_secret="c", blocked=None
    )

    assert list(_stored_differently(derived, _status_schema(), "status")) == []
