"""Hollow nodes: Ready and binding volumes like any node, but never running a pod.

The operator benchmark places hundreds of replicas on them; what it relies on is checked
here: the scheduler binds pods there (with the toleration), WaitForFirstConsumer claims get
a volume on the node, the pod's command never runs, and deletion completes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import agent, cluster, settings
from tests import waiting
from tests.testbed import kube

pytestmark = pytest.mark.testbed

# A normal node starts a bound pod's command within one agent sync (0.5 s); ten syncs
# without it is a hollow node doing its job.
NEVER_SECONDS = 5.0
TOLERATION = {"key": agent.HOLLOW_KEY, "operator": "Exists", "effect": "NoSchedule"}


def test_hollow_node_binds_the_claim_but_never_starts_the_command(
    testbed: cluster.Testbed, core: client.CoreV1Api, namespace: str
) -> None:
    node = testbed.node_add(None, hollow=True)
    try:
        registered = core.read_node(node.name)
        assert registered.metadata.labels[agent.HOLLOW_KEY] == "true"
        assert registered.status.allocatable["pods"] == str(settings.HOLLOW_MAX_PODS)
        assert agent.HOLLOW_KEY in {t.key for t in registered.spec.taints or []}

        core.create_namespaced_persistent_volume_claim(namespace, kube.claim("disk"))
        body = kube.pod(
            "hollow",
            ["sh", "-c", "touch /data/ran; exec sleep 3600"],
            node=node.name,
            volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "disk"}}],
            mounts=[{"name": "d", "mountPath": "/data"}],
        )
        body["spec"]["tolerations"] = [TOLERATION]
        core.create_namespaced_pod(namespace, body)

        claim = waiting.until(
            "the claim to be bound to a volume the hollow node provisioned",
            lambda: _bound(core, namespace, "disk"),
        )
        volume = core.read_persistent_volume(claim.spec.volume_name)
        term = volume.spec.node_affinity.required.node_selector_terms[0]
        assert term.match_expressions[0].values == [node.name]
        waiting.until(
            f"pod hollow to be bound to {node.name}",
            lambda: core.read_namespaced_pod("hollow", namespace).spec.node_name == node.name,
        )

        ran = Path(volume.spec.local.path) / "ran"
        deadline = time.monotonic() + NEVER_SECONDS
        while time.monotonic() < deadline:
            pod = core.read_namespaced_pod("hollow", namespace)
            assert not ran.exists(), "the hollow node ran the pod's command"
            assert pod.status.phase == "Pending", f"phase {pod.status.phase}"
            assert not pod.status.container_statuses and not pod.status.pod_ip
            time.sleep(0.5)

        core.delete_namespaced_pod("hollow", namespace)
        waiting.until(
            "the hollow node to complete the pod's deletion",
            lambda: not core.list_namespaced_pod(namespace).items,
            timeout=30,
        )
        core.delete_namespaced_persistent_volume_claim("disk", namespace)
        waiting.until(
            "the hollow node to delete the released volume",
            lambda: (
                volume.metadata.name
                not in {v.metadata.name for v in core.list_persistent_volume().items}
            ),
            timeout=30,
        )
    finally:
        testbed.node_remove(node.name)
    waiting.until(
        f"node {node.name} to be gone from the API",
        lambda: node.name not in {n.metadata.name for n in core.list_node().items},
    )


def test_hollow_node_takes_no_pod_without_the_toleration(
    testbed: cluster.Testbed, core: client.CoreV1Api, namespace: str
) -> None:
    node = testbed.node_add(None, hollow=True)
    try:
        core.create_namespaced_pod(namespace, kube.pod("intolerant", ["true"], node=node.name))

        def unschedulable() -> bool:
            status = core.read_namespaced_pod("intolerant", namespace).status
            scheduled = next((c for c in status.conditions or [] if c.type == "PodScheduled"), None)
            return scheduled is not None and scheduled.reason == "Unschedulable"

        waiting.until("the scheduler to refuse the hollow node (untolerated taint)", unschedulable)
    finally:
        testbed.node_remove(node.name)


def _bound(
    core: client.CoreV1Api, namespace: str, name: str
) -> client.V1PersistentVolumeClaim | None:
    claim = core.read_namespaced_persistent_volume_claim(name, namespace)
    return claim if claim.status.phase == "Bound" else None
