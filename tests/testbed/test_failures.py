"""Failure injection: power loss and network partitions of simulated nodes.

These tests change node state; each restores it before it ends so that later tests see a
healthy three-node cluster.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import cluster, controlplane
from tests import waiting
from tests.testbed import kube

pytestmark = pytest.mark.testbed

NODE = "node-3"


def _ready(core: client.CoreV1Api, node: str) -> str:
    conditions = core.read_node(node).status.conditions or []
    return next((c.status for c in conditions if c.type == "Ready"), "missing")


def test_node_stop_marks_not_ready_evicts_and_start_restores_disk(
    testbed: cluster.Testbed, core, namespace
):
    core.create_namespaced_persistent_volume_claim(namespace, kube.claim("disk"))
    victim = kube.pod(
        "victim",
        ["sh", "-c", "echo survived > /data/marker; exec sleep 3600"],
        node=NODE,
        restart="Always",
        volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "disk"}}],
        mounts=[{"name": "d", "mountPath": "/data"}],
    )
    core.create_namespaced_pod(namespace, victim)
    kube.wait_phase(core, namespace, "victim", {"Running"})
    pv = core.read_persistent_volume(
        core.read_namespaced_persistent_volume_claim("disk", namespace).spec.volume_name
    )
    marker = f"{pv.spec.local.path}/marker"
    waiting.until(
        "the pod to write its marker on the node's disk",
        lambda: os.path.exists(marker) and Path(marker).read_text().strip() == "survived",
    )

    stopped_at = time.monotonic()
    testbed.node_stop(NODE)
    try:
        waiting.until(
            f"{NODE} to be marked NotReady by the node-lifecycle controller",
            lambda: _ready(core, NODE) != "True",
            timeout=20,
        )
        not_ready_after = time.monotonic() - stopped_at
        waiting.until(
            "pod victim to be evicted (deletionTimestamp set)",
            lambda: core.read_namespaced_pod("victim", namespace).metadata.deletion_timestamp,
            timeout=60,
        )
    finally:
        testbed.node_start(NODE)
    assert not_ready_after <= 20
    assert _ready(core, NODE) == "True"
    waiting.until(
        "the evicted pod to be removed once its node is back",
        lambda: (
            not core.list_namespaced_pod(namespace, field_selector="metadata.name=victim").items
        ),
        timeout=30,
    )
    with open(marker) as f:
        assert f.read().strip() == "survived", "the node's disk lost data across stop/start"


def test_node_partition_isolates_its_pods_and_heal_restores(
    testbed: cluster.Testbed, core, namespace
):
    server = kube.http_server("target", node=NODE)
    core.create_namespaced_pod(namespace, server)
    address = kube.wait_ready(core, namespace, "target").status.pod_ip
    probe = [
        kube.PYTHON,
        "-c",
        f"import urllib.request; urllib.request.urlopen('http://{address}:8080/', timeout=3)",
    ]

    def reach(name: str) -> str:
        return kube.run_to_completion(core, namespace, kube.pod(name, probe, node="node-1"))

    assert reach("before") == "Succeeded"
    testbed.node_partition(NODE)
    try:
        assert reach("during") == "Failed", "a partitioned node's pod was still reachable"
        with pytest.raises(OSError):
            socket.create_connection((address, 8080), timeout=2).close()
    finally:
        testbed.node_heal(NODE)
    assert reach("after") == "Succeeded"
    # Cut off for long enough, the node-lifecycle controller marks its pods not ready; the
    # healed node's agent must report them ready again.
    kube.wait_ready(core, namespace, "target", timeout=30)


def test_node_add_joins_ready_and_takes_pods_then_remove(testbed: cluster.Testbed, core, namespace):
    node = testbed.node_add(None)
    try:
        assert _ready(core, node.name) == "True"
        labels = core.read_node(node.name).metadata.labels
        assert labels["topology.kubernetes.io/zone"] == node.zone
        body = kube.pod("newcomer", ["true"], node=node.name)
        assert kube.run_to_completion(core, namespace, body) == "Succeeded"
    finally:
        testbed.node_remove(node.name)
    waiting.until(
        f"node {node.name} to be gone from the API",
        lambda: node.name not in {n.metadata.name for n in core.list_node().items},
    )


def _answers(address: str) -> bool:
    try:
        socket.create_connection((address, 8080), timeout=1).close()
    except OSError:
        return False
    return True


def test_node_stop_start_shorter_than_eviction_reports_the_new_sandbox(
    testbed: cluster.Testbed, core, namespace
):
    """A node back before its pods are evicted runs them again, as a rebooted kubelet does:
    the pod's status must say so (the restart counted, a new start time, an address that
    answers, Ready again), never keep describing the processes that died with the node."""
    core.create_namespaced_pod(namespace, kube.http_server("survivor", node=NODE))
    before = kube.wait_ready(core, namespace, "survivor")
    started = before.status.container_statuses[0].state.running.started_at
    testbed.node_stop(NODE)
    try:
        waiting.until(
            f"the pod's address to stop answering while {NODE} is off",
            lambda: not _answers(before.status.pod_ip),
            timeout=10,
        )
    finally:
        testbed.node_start(NODE)

    def restarted() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("survivor", namespace)
        statuses = pod.status.container_statuses or []
        if not statuses or not statuses[0].state.running or not statuses[0].ready:
            return None
        if statuses[0].restart_count < 1 or statuses[0].state.running.started_at <= started:
            return None
        return pod if pod.status.pod_ip and _answers(pod.status.pod_ip) else None

    after = waiting.until(
        "the pod's status to describe the restarted container, at an address that answers",
        restarted,
        timeout=40,
        seen=lambda: core.read_namespaced_pod("survivor", namespace).status,
    )
    assert after.metadata.deletion_timestamp is None


def _ready_since(conditions: list | None) -> object:
    return next((c.last_transition_time for c in conditions or [] if c.type == "Ready"), None)


def test_apiserver_restart_leaves_running_pods_alone(testbed: cluster.Testbed, core, namespace):
    """A kubelet keeps its pods running while the control plane is away: no restart, no new
    address, Ready again once it can report (volume refreshes and status reports wait). The
    restart is shorter than the node-monitor grace, as with real defaults: no node or pod is
    marked NotReady by the node-lifecycle controller when it is back."""
    core.create_namespaced_pod(namespace, kube.http_server("steady", node=NODE))
    before = kube.wait_ready(core, namespace, "steady")
    nodes_before = {
        n.metadata.name: _ready_since(n.status.conditions) for n in core.list_node().items
    }
    testbed.apiserver_restart()

    def marked() -> list[str]:
        changed = [
            f"node {n.metadata.name}"
            for n in core.list_node().items
            if _ready_since(n.status.conditions) != nodes_before.get(n.metadata.name)
        ]
        pod = core.read_namespaced_pod("steady", namespace)
        if _ready_since(pod.status.conditions) != _ready_since(before.status.conditions):
            changed.append("pod steady")
        return changed

    # The controller would mark a node within its grace of the last heartbeat it saw: watch
    # that whole window, since what is asserted is that nothing happens in it.
    waiting.never(
        "a Ready condition changed after a short API server restart",
        marked,
        window=controlplane.NODE_MONITOR_GRACE_SECONDS + 3,
    )
    after = kube.wait_ready(core, namespace, "steady", timeout=60)
    status = after.status.container_statuses[0]
    assert status.restart_count == before.status.container_statuses[0].restart_count
    assert (
        status.state.running.started_at
        == before.status.container_statuses[0].state.running.started_at
    )
    assert after.status.pod_ip == before.status.pod_ip and _answers(after.status.pod_ip)
