"""The testbed's control plane and nodes, seen through the pinned kubectl."""

from __future__ import annotations

import json

import pytest

from gitquorum_testbed import cluster

pytestmark = pytest.mark.testbed


def test_nodes_all_ready_with_zone_labels(kubectl, testbed: cluster.Testbed) -> None:
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = {
        n["metadata"]["name"]: next(
            c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"
        )
        for n in nodes
    }
    assert len(nodes) >= 3, f"expected at least 3 nodes, saw {sorted(ready)}"
    assert all(v == "True" for v in ready.values()), f"not all nodes Ready: {ready}"
    zones = {n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes}
    assert len(zones) == 3, f"nodes should spread over 3 zones, saw {zones}"


def test_kubectl_version_reports_built_server(kubectl) -> None:
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    assert versions["serverVersion"]["gitVersion"] == "v1.36.3", versions["serverVersion"]


def test_status_lists_every_component_running(testbed: cluster.Testbed) -> None:
    lines = testbed.status()
    for component in (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "proxy",
    ):
        line = next(line for line in lines if line.startswith(component))
        assert "running" in line, line
