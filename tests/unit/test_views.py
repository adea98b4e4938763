"""The watch caches' slim views (kube.views): a pass reads the same from a view as from the
whole object, and the views are much smaller."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gitquorum.kube import names, reconciler, views
from gitquorum.kube.metrics import OperatorMetrics
from gitquorum.kube.spec import RepositorySpec

pytestmark = pytest.mark.unit


def _full_pod(*, phase: str, ip: str | None, deleting: bool, unschedulable: bool) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = [
        {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-29T10:00:00Z"},
        {"type": "Ready", "status": "True" if ip else "False", "lastProbeTime": None},
    ]
    if unschedulable:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 node(s) didn't match pod anti-affinity.",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "repo-2",
            "namespace": "ns",
            "uid": "u-2",
            "resourceVersion": "812",
            "labels": {names.REPOSITORY_LABEL: "repo", names.SERVING_LABEL: "true"},
            "annotations": {names.REVISION: "abc123", "kubectl.kubernetes.io/x": "y" * 2000},
            "ownerReferences": [{"kind": "GitRepository", "name": "repo", "uid": "u"}],
            "managedFields": [{"manager": "gitquorum", "fieldsV1": {"f:spec": {"x": {}}}}] * 20,
            **({"deletionTimestamp": "2026-11-29T10:05:00Z"} if deleting else {}),
        },
        "spec": {
            "nodeName": None if unschedulable else "node-2",
            "containers": [{"name": "replica", "image": "img", "args": ["--x"] * 30}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "repo-2"}}],
        },
        "status": {
            "phase": phase,
            **({"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {}),
            "conditions": conditions,
            "containerStatuses": [{"name": "replica", "ready": True, "restartCount": 0}],
        },
    }


def _full_claim(selected: str | None) -> dict[str, Any]:
    annotations = {"pv.kubernetes.io/bind-completed": "yes"}
    if selected:
        annotations[views.SELECTED_NODE] = selected
    return {
        "metadata": {"name": "repo-2", "namespace": "ns", "annotations": annotations},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}},
    }


def _full_node(*, ready: str, cordoned: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": "node-2", "labels": {"topology.kubernetes.io/zone": "z1"}},
        "spec": {"podCIDR": "10.244.2.0/24", **({"unschedulable": True} if cordoned else {})},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": "KubeletReady",
                    "lastTransitionTime": "2026-11-29T10:00:00Z",
                },
            ],
            "images": [{"names": [f"image-{i}"], "sizeBytes": i} for i in range(50)],
        },
    }


def _work() -> reconciler.Reconciler:
    return reconciler.Reconciler(
        None,  # type: ignore[arg-type]
        reconciler.Settings(image="img", node_loss_grace=0.0),
        events=lambda *args: None,
        metrics=OperatorMetrics(repositories=lambda: 0, leading=lambda: 1),
    )


def _observe(work: reconciler.Reconciler, pod: Any, claim: Any, node: Any) -> Any:
    item = work._object_view("repo-2", pod, claim, {"node-2": node})
    viewed = work._cordon_view(item, {"node-2": node}, reconciler.Memory(), RepositorySpec())
    doubt = None if pod is None else work._doubtful(pod, reconciler.Memory(), 1e9)
    return viewed, doubt


@pytest.mark.parametrize("phase", ["Pending", "Running", "Failed"])
@pytest.mark.parametrize("ip", [None, "10.244.2.7"])
@pytest.mark.parametrize("deleting", [False, True])
@pytest.mark.parametrize("unschedulable", [False, True])
@pytest.mark.parametrize("ready", ["True", "False", "Unknown"])
@pytest.mark.parametrize("cordoned", [False, True])
def test_views_pass_reads_the_same_as_from_whole_objects(
    phase: str, ip: str | None, deleting: bool, unschedulable: bool, ready: str, cordoned: bool
) -> None:
    work = _work()
    pod = _full_pod(phase=phase, ip=ip, deleting=deleting, unschedulable=unschedulable)
    claim = _full_claim("node-2" if unschedulable else None)
    node = _full_node(ready=ready, cordoned=cordoned)
    whole = _observe(work, pod, claim, node)
    slim = _observe(work, views.pod(pod), views.claim(claim), views.node(node))
    assert slim == whole
    unplaced = (
        _observe(work, None, claim, node),
        _observe(work, None, views.claim(claim), views.node(node)),
    )
    assert unplaced[0] == unplaced[1]


def test_views_keep_labels_names_and_revision() -> None:
    pod = views.pod(_full_pod(phase="Running", ip="10.0.0.1", deleting=False, unschedulable=False))
    assert pod["metadata"]["labels"][names.SERVING_LABEL] == "true"
    assert pod["metadata"]["annotations"] == {names.REVISION: "abc123"}
    assert (pod["metadata"]["name"], pod["metadata"]["resourceVersion"]) == ("repo-2", "812")
    assert views.claim(_full_claim(None))["metadata"]["name"] == "repo-2"


def test_views_are_a_small_part_of_the_objects() -> None:
    pod = _full_pod(phase="Running", ip="10.0.0.1", deleting=False, unschedulable=False)
    node = _full_node(ready="True", cordoned=False)
    assert len(json.dumps(views.pod(pod))) * 10 < len(json.dumps(pod))
    assert len(json.dumps(views.node(node))) * 10 < len(json.dumps(node))
