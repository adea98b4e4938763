"""kubectl scale on a GitRepository: up to 5 replicas and back to 3, and a scale that
outlives the operator pod that started it."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import cluster
from tests import waiting
from tests.conftest import Kubectl
from tests.e2e.operator import nodes, repos
from tests.e2e.operator.conftest import Operator

pytestmark = pytest.mark.e2e


def _serving(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    name: str,
) -> repos.Repository:
    repos.apply(kubectl, namespace, repos.manifest(name, {"replicas": 3}))
    repository = repos.Repository(api_client, namespace, name)
    repository.wait_ready()
    repository.wait_serving(core)
    return repository


def _scale(kubectl: Kubectl, repository: repos.Repository, replicas: int) -> None:
    kubectl(
        "scale",
        f"{repos.CRD}/{repository.name}",
        "-n",
        repository.namespace,
        f"--replicas={replicas}",
    )


def _replica_objects(core: client.CoreV1Api, repository: repos.Repository) -> dict[str, set[str]]:
    selector = f"gitquorum.io/repository={repository.name}"
    namespace = repository.namespace
    return {
        "pods": {
            pod.metadata.name
            for pod in core.list_namespaced_pod(namespace, label_selector=selector).items
        },
        "claims": {
            claim.metadata.name
            for claim in core.list_namespaced_persistent_volume_claim(
                namespace, label_selector=selector
            ).items
        },
    }


def test_scale_up_to_five_then_down_to_three_keeps_data_and_leader(
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    nodes.ensure_workers(testbed, core, 5)
    repository = _serving(kubectl, api_client, core, namespace, "scaled")
    url = repository.push_url(core)
    work = repos.Work(tmp_path / "work")
    pushed = {work.commit()}
    work.push(url)

    _scale(kubectl, repository, 5)
    five = repository.wait_in_sync(5, timeout=180)
    assert five["readyReplicas"] == 5, repos.summary(five)
    assert len({entry["node"] for entry in five["replicaStatuses"]}) == 5, repos.summary(five)
    assert repos.commits(repos.clone(url, tmp_path / "five")) == pushed
    pushed.add(work.commit())
    work.push(url)

    leader = repository.status()["leader"]
    _scale(kubectl, repository, 3)
    three = repository.wait_in_sync(3, timeout=180)
    assert three["leader"] == leader, repos.summary(three)
    kept = {member["name"] for member in three["members"]}
    removed = {entry["name"] for entry in five["replicaStatuses"]} - kept
    assert len(removed) == 2, f"removed {removed}, kept {kept}"

    def leftovers() -> dict[str, set[str]]:
        return {kind: names & removed for kind, names in _replica_objects(core, repository).items()}

    waiting.until(
        f"the pods and volumes of removed replicas {sorted(removed)} to be deleted",
        lambda: not any(leftovers().values()),
        seen=leftovers,
    )
    assert repos.commits(repos.clone(url, tmp_path / "three")) == pushed


def test_scale_operator_killed_midway_completes_under_new_operator(
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    nodes.ensure_workers(testbed, core, 5)
    repository = _serving(kubectl, api_client, core, namespace, "interrupted")
    url = repository.push_url(core)
    work = repos.Work(tmp_path / "work")
    pushed = {work.commit()}
    work.push(url)

    def operator_pods() -> set[str]:
        pods = core.list_namespaced_pod(operator.namespace, label_selector=operator.selector)
        return {pod.metadata.name for pod in pods.items if not pod.metadata.deletion_timestamp}

    before = operator_pods()
    _scale(kubectl, repository, 5)
    # Killed between two of the scale's steps: the first one is written, the rest are not.
    repository.wait(
        "the scale's first step in status.members",
        lambda status: len(status.get("members") or []) > 3,
        timeout=30,
    )
    kubectl(
        "delete",
        "pod",
        "-n",
        operator.namespace,
        "-l",
        operator.selector,
        "--grace-period=0",
        "--force",
    )
    waiting.until(
        f"a new operator pod in {operator.namespace} (the killed ones: {sorted(before)})",
        lambda: operator_pods() - before,
        seen=operator_pods,
    )
    status = repository.wait_in_sync(5, timeout=180)
    assert not operator_pods() & before, f"the killed operator pods are back: {operator_pods()}"
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease(
        operator.lease, operator.namespace
    )
    assert lease.spec.holder_identity in operator_pods() - before, lease.spec
    assert status["readyReplicas"] == 5, repos.summary(status)
    assert repos.commits(repos.clone(url, tmp_path / "clone")) == pushed
