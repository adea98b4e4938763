"""The testbed's local volume provisioner creates one volume per claim, however long the PV
controller takes to bind it (a fake API and fake mirrors; the testbed tests run the real one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gitquorum_testbed import agent, settings


class FakeMirror:
    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

    def items(self) -> list[dict[str, Any]]:
        return list(self.objects)


class FakeCore:
    def __init__(self) -> None:
        self.created: list[str] = []

    def create_persistent_volume(self, pv: Any) -> None:
        self.created.append(pv.metadata.name)


def _claim(uid: str, node: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"claim-{uid}",
            "namespace": "team",
            "uid": uid,
            "annotations": {agent.SELECTED_NODE: node},
        },
        "spec": {
            "storageClassName": agent.STORAGE_CLASS,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
        "status": {"phase": "Pending"},
    }


def _agent(tmp_path: Path, claims: list[dict[str, Any]]) -> tuple[agent.Agent, FakeCore]:
    node = agent.Agent.__new__(agent.Agent)  # the parts provisioning uses, without a cluster
    core = FakeCore()
    node.node = settings.NodeConfig(name="node-1", index=1, zone="zone-a")
    node.dir = tmp_path
    node.core = core  # type: ignore[assignment]
    node.claims = FakeMirror(claims)  # type: ignore[assignment]
    node.volumes = FakeMirror([])  # type: ignore[assignment]
    node.provisioned = {}
    return node, core


def test_provision_volumes_creates_one_volume_per_claim_while_binding_lags(tmp_path: Path):
    node, core = _agent(tmp_path, [_claim("a", "node-1"), _claim("b", "node-2")])

    for _ in range(5):  # syncs before the volume mirror or the PV controller catch up
        node.provision_volumes()

    assert core.created == ["pvc-a"]


def test_provision_volumes_forgets_a_volume_once_the_mirror_shows_it(tmp_path: Path):
    node, core = _agent(tmp_path, [_claim("a", "node-1")])
    node.provision_volumes()
    node.volumes.objects.append({"metadata": {"name": "pvc-a"}})  # type: ignore[attr-defined]

    node.provision_volumes()

    assert core.created == ["pvc-a"] and node.provisioned == {}
