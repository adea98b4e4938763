"""A replica that fits on no node stays Pending (what a cluster autoscaler reacts to) while the
majority serves, and joins once a node it fits on appears."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import cluster
from tests import waiting
from tests.conftest import Kubectl
from tests.e2e.operator import nodes, repos

pytestmark = pytest.mark.e2e

POOL = "gitquorum.io/pool"
SPARE_WORKERS = 6
"""Beyond this many workers a free one is labelled instead of adding a node: the testbed is
kept between sessions, and every added node stays."""


@pytest.fixture
def labelled(kubectl: Kubectl) -> Iterator[list[str]]:
    """Nodes the test puts into its pool; the label is removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        kubectl("label", "node", name, f"{POOL}-", check=False)


def test_replica_pending_without_node_then_joins_when_node_added(
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    labelled: list[str],
    tmp_path: Path,
) -> None:
    pool = namespace  # unique to this test
    workers = nodes.ensure_workers(testbed, core, 2)
    for name in workers[:2]:
        labelled.append(name)
        kubectl("label", "node", name, f"{POOL}={pool}", "--overwrite")
    spec = {"replicas": 3, "placement": {"nodeSelector": {POOL: pool}}}
    repos.apply(kubectl, namespace, repos.manifest("pending", spec))
    repository = repos.Repository(api_client, namespace, "pending")

    def third_pending(status: repos.Status) -> bool:
        entries = status.get("replicaStatuses") or []
        return len(entries) == 3 and sum(e.get("state") == "Pending" for e in entries) == 1

    status = repository.wait(
        "Ready with 2 replicas and the third Pending",
        lambda status: (
            repository.condition("Ready", status).get("status") == "True" and third_pending(status)
        ),
    )
    pending = next(e for e in status["replicaStatuses"] if e["state"] == "Pending")
    pod = core.read_namespaced_pod(pending["name"], namespace)
    scheduled = next(c for c in pod.status.conditions or () if c.type == "PodScheduled")
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable"), scheduled
    assert pod.status.phase == "Pending", pod.status
    assert pending.get("message"), f"no scheduler message in {pending}"
    repository.wait_serving(core)
    url = repository.push_url(core)
    work = repos.Work(tmp_path / "work")
    pushed = {work.commit()}
    work.push(url)

    spare = [name for name in nodes.workers(core) if name not in labelled]
    if len(nodes.workers(core)) < SPARE_WORKERS or not spare:
        new = testbed.node_add(None).name
    else:
        new = spare[0]
    labelled.append(new)
    kubectl("label", "node", new, f"{POOL}={pool}", "--overwrite")
    after = repository.wait_in_sync(3, timeout=120)
    placed = {e["name"]: e["node"] for e in after["replicaStatuses"]}
    assert placed[pending["name"]] == new, f"{pending['name']} placed on {placed}"
    waiting.until(
        f"pod {pending['name']} scheduled",
        lambda: core.read_namespaced_pod(pending["name"], namespace).spec.node_name == new,
    )
    assert repos.commits(repos.clone(url, tmp_path / "clone")) == pushed
