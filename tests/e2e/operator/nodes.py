"""Worker nodes of the shared testbed: the ones replicas may use, and more of them on demand.

A worker is a Ready node without a NoSchedule or NoExecute taint: the operator's own node
and any other reserved node are tainted, so replicas never land there.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from gitquorum_testbed import cluster

BLOCKING_EFFECTS = {"NoSchedule", "NoExecute"}


def _ready(node: client.V1Node) -> bool:
    return any(
        condition.type == "Ready" and condition.status == "True"
        for condition in node.status.conditions or ()
    )


def workers(core: client.CoreV1Api) -> list[str]:
    """Ready, schedulable, untainted nodes, by name."""
    return sorted(
        node.metadata.name
        for node in core.list_node().items
        if _ready(node)
        and not node.spec.unschedulable
        and not any(taint.effect in BLOCKING_EFFECTS for taint in node.spec.taints or ())
    )


def ensure_workers(testbed: cluster.Testbed, core: client.CoreV1Api, count: int) -> list[str]:
    """At least ``count`` workers, adding testbed nodes (which stay for the session) as needed."""
    names = workers(core)
    for _ in range(count):
        if len(names) >= count:
            return names
        testbed.node_add(None)
        names = workers(core)
    assert len(names) >= count, f"wanted {count} worker nodes; have {names}"
    return names


def zone(core: client.CoreV1Api, node: str) -> str:
    labels = core.read_node(node).metadata.labels or {}
    return str(labels.get("topology.kubernetes.io/zone", ""))


def stop_leader(
    testbed: cluster.Testbed, status: dict[str, Any], stopped: list[str]
) -> dict[str, Any]:
    """Stops the node of the leader ``status`` names (noted in ``stopped``, the fixture that
    starts it again); returns the leader's entry of ``status.replicaStatuses``."""
    leader: dict[str, Any] = next(
        entry for entry in status["replicaStatuses"] if entry["name"] == status["leader"]
    )
    stopped.append(leader["node"])
    testbed.node_stop(leader["node"])
    return leader
