"""Planned change without a failed push: a spec change rolls every replica (followers first,
the leader last after a switchover), OnDelete only reports, a switchover asked by annotation,
a drain of the leader's node and of a follower's node, and an operator killed mid-roll.

Each test runs a client that pushes and fetches through the Service in a loop without
retrying (``traffic``) and asserts that nothing failed and nothing acknowledged was lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import cluster
from tests import waiting
from tests.conftest import Kubectl
from tests.e2e.operator import nodes, repos, traffic
from tests.e2e.operator.conftest import CHART, Operator, helm

pytestmark = pytest.mark.e2e

ROLL_SECONDS = 240


def _serving(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    spec: dict[str, object] | None = None,
) -> repos.Repository:
    repos.apply(kubectl, namespace, repos.manifest(name, {"replicas": 3, **(spec or {})}))
    repository = repos.Repository(api_client, namespace, name)
    repository.wait_ready()
    repository.wait_serving(core)
    repository.wait_in_sync(3)
    return repository


def _pods(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    """replica pod name -> uid."""
    selector = f"gitquorum.io/repository={name}"
    return {
        pod.metadata.name: pod.metadata.uid
        for pod in core.list_namespaced_pod(namespace, label_selector=selector).items
    }


def _patch(kubectl: Kubectl, namespace: str, name: str, patch: dict[str, object]) -> None:
    kubectl("patch", repos.CRD, name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def _rolled(status: repos.Status, revision: str) -> bool:
    updating = next((c for c in status.get("conditions") or [] if c.get("type") == "Updating"), {})
    return (
        status.get("updateRevision") == revision
        and status.get("updatedReplicas") == 3
        and updating.get("status") == "False"
        and repos.in_sync(status, 3)
    )


def _check(results: traffic.Results, url: str, tmp_path: Path) -> None:
    print(results.summary())
    assert not results.failures, results.summary()
    copy = repos.clone(url, tmp_path / "check")
    missing = [sha for sha in results.acknowledged if sha not in repos.commits(copy)]
    assert not missing, f"acknowledged pushes lost: {missing}"


def _rebuilt_away(status: repos.Status, gone: dict[str, str]) -> bool:
    """``gone`` (a replica's status entry) left the members, no replica runs on its node any
    more, and the three replicas are in sync."""
    return (
        gone["name"] not in {m["name"] for m in status.get("members") or []}
        and all(e["node"] != gone["node"] for e in status.get("replicaStatuses") or [])
        and repos.in_sync(status, 3)
    )


def _events(core: client.CoreV1Api, namespace: str, reason: str) -> list[str]:
    return [
        event.message
        for event in core.list_namespaced_event(namespace).items
        if event.reason == reason and event.involved_object.kind == "GitRepository"
    ]


def test_resources_change_rolls_replicas_one_at_a_time_without_a_failed_push(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    repository = _serving(kubectl, api_client, core, namespace, "rolling")
    before = repository.status()
    original = _pods(core, namespace, "rolling")
    url = repository.push_url(core)
    with traffic.Traffic(url, tmp_path) as load:
        load.wait_rounds(3)
        _patch(
            kubectl,
            namespace,
            "rolling",
            {"spec": {"resources": {"requests": {"cpu": "150m", "memory": "160Mi"}}}},
        )
        changed = repository.wait(
            "a new updateRevision",
            lambda s: s.get("updateRevision") not in (None, before.get("updateRevision")),
            timeout=30,
        )
        # The operator killed once the roll has begun: the next operator pod finishes it.
        repository.wait(
            "the first replica replaced",
            lambda s: bool(_events(core, namespace, "ReplicaUpdated")),
            timeout=60,
        )
        kubectl("delete", "pod", "-n", operator.namespace, "-l", operator.selector, "--wait=false")
        after = repository.wait(
            f"every replica at revision {changed['updateRevision']}, in sync",
            lambda s: _rolled(s, changed["updateRevision"]),
            timeout=ROLL_SECONDS,
        )
        load.wait_rounds(3)
        results = load.stop()
    now = _pods(core, namespace, "rolling")
    assert set(now) == set(original), "replicas keep their names (and volumes)"
    assert all(now[name] != uid for name, uid in original.items()), "every pod was replaced"
    assert after["term"] == before["term"] + 1, f"the leader changed once: {repos.summary(after)}"
    assert after["leader"] != before["leader"]
    assert len(_events(core, namespace, "Switchover")) == 1
    _check(results, url, tmp_path)


def test_on_delete_strategy_only_reports_outdated_replicas(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    repository = _serving(
        kubectl, api_client, core, namespace, "ondelete", {"updateStrategy": {"type": "OnDelete"}}
    )
    original = _pods(core, namespace, "ondelete")
    _patch(kubectl, namespace, "ondelete", {"spec": {"resources": {"limits": {"memory": "1Gi"}}}})
    status = repository.wait(
        "the Updating condition saying OnDelete",
        lambda s: repository.condition("Updating").get("reason") == "OnDelete",
        timeout=30,
    )
    assert status["updatedReplicas"] == 0, repos.summary(status)
    assert _pods(core, namespace, "ondelete") == original, "OnDelete replaced a pod"
    # Deleting a pod is how a user updates it: it comes back at the new revision.
    victim = next(e["name"] for e in status["replicaStatuses"] if e["name"] != status["leader"])
    kubectl("delete", "pod", victim, "-n", namespace)
    repository.wait(
        f"{victim} recreated at the new revision",
        lambda s: s.get("updatedReplicas") == 1 and repos.in_sync(s, 3),
        timeout=120,
    )


def test_switchover_annotation_moves_the_leader_without_a_failed_push(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = _serving(kubectl, api_client, core, namespace, "switch")
    before = repository.status()
    target = next(e["name"] for e in before["replicaStatuses"] if e["name"] != before["leader"])
    url = repository.push_url(core)
    with traffic.Traffic(url, tmp_path) as load:
        load.wait_rounds(3)
        kubectl(
            "annotate", repos.CRD, "switch", "-n", namespace, f"gitquorum.io/switchover={target}"
        )
        after = repository.wait(
            f"{target} leading a later term",
            lambda s: s.get("leader") == target and s.get("term", 0) > before["term"],
            timeout=60,
        )
        waiting.until(
            "the switchover annotation removed",
            lambda: (
                "gitquorum.io/switchover"
                not in (repository.body()["metadata"].get("annotations") or {})
            ),
            timeout=30,
        )
        load.wait_rounds(5)
        results = load.stop()
    assert after["term"] == before["term"] + 1
    _check(results, url, tmp_path)


@pytest.fixture
def cordoned(kubectl: Kubectl) -> Iterator[list[str]]:
    """Nodes a test drains; uncordoned afterwards whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        kubectl("uncordon", name, check=False)


def _drain(kubectl: Kubectl, node: str) -> None:
    # Replica pods keep /tmp in an emptyDir: drain must be told that deleting it is fine.
    kubectl("drain", node, "--delete-emptydir-data", "--ignore-daemonsets", "--timeout=100s")


def test_drain_of_the_leader_node_fails_no_push_and_follower_is_rebuilt_elsewhere(
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    cordoned: list[str],
    tmp_path: Path,
) -> None:
    nodes.ensure_workers(testbed, core, 4)
    repository = _serving(
        kubectl,
        api_client,
        core,
        namespace,
        "drain",
        {"maintenance": {"cordonedNodeGraceSeconds": 5}},
    )
    before = repository.status()
    leader = next(e for e in before["replicaStatuses"] if e["name"] == before["leader"])
    url = repository.push_url(core)
    with traffic.Traffic(url, tmp_path) as load:
        load.wait_rounds(3)
        cordoned.append(leader["node"])
        _drain(kubectl, leader["node"])
        after = repository.wait(
            f"{leader['name']} (from drained {leader['node']}) rebuilt on another node, in sync",
            lambda s: _rebuilt_away(s, leader),
            timeout=180,
        )
        load.wait_rounds(3)
        results = load.stop()
    assert after["leader"] != leader["name"]
    assert _events(core, namespace, "Switchover"), "the leader left by a switchover"
    _check(results, url, tmp_path)


def test_helm_upgrade_to_a_new_image_rolls_every_repository_without_a_failed_push(
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    names = ("upgrade-a", "upgrade-b")
    repositories = [_serving(kubectl, api_client, core, namespace, name) for name in names]
    before = {r.name: r.status() for r in repositories}
    urls = {r.name: r.push_url(core) for r in repositories}
    loads = [traffic.Traffic(urls[name], tmp_path / name) for name in names]
    kubeconfig = testbed.layout.kubeconfig
    try:
        for load in loads:
            load.__enter__()
        for load in loads:
            load.wait_rounds(3)
        # The testbed runs every image alike: a new tag changes what the operator renders.
        helm(
            "upgrade",
            operator.release,
            str(CHART),
            "-n",
            operator.namespace,
            "--reuse-values",
            "--set",
            "image.tag=0.1.1",
            "--wait",
            "--timeout",
            "3m",
            kubeconfig=kubeconfig,
        )
        after = {
            r.name: r.wait(
                "every replica at the new image's revision, in sync",
                lambda s, r=r: (
                    s.get("updateRevision") != before[r.name].get("updateRevision")
                    and _rolled(s, s.get("updateRevision", ""))
                ),
                timeout=ROLL_SECONDS,
            )
            for r in repositories
        }
        for load in loads:
            load.wait_rounds(3)
        results = [load.stop() for load in loads]
    finally:
        for load in loads:
            load.stop()
        helm(
            "upgrade",
            operator.release,
            str(CHART),
            "-n",
            operator.namespace,
            "--reuse-values",
            "--set",
            "image.tag=",
            "--wait",
            "--timeout",
            "3m",
            kubeconfig=kubeconfig,
        )
    for name, result in zip(names, results, strict=True):
        assert after[name]["term"] == before[name]["term"] + 1, repos.summary(after[name])
        _check(result, urls[name], tmp_path / name)


def test_drained_follower_waits_for_its_node_says_so_then_is_rebuilt_elsewhere(
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    cordoned: list[str],
    tmp_path: Path,
) -> None:
    nodes.ensure_workers(testbed, core, 4)
    repository = _serving(kubectl, api_client, core, namespace, "waits")
    before = repository.status()
    follower = next(e for e in before["replicaStatuses"] if e["name"] != before["leader"])
    url = repository.push_url(core)
    with traffic.Traffic(url, tmp_path) as load:
        load.wait_rounds(3)
        cordoned.append(follower["node"])
        _drain(kubectl, follower["node"])

        def waiting_message(status: repos.Status) -> str:
            entry = next(
                (e for e in status.get("replicaStatuses") or [] if e["name"] == follower["name"]),
                {},
            )
            return str(entry.get("message", ""))

        status = repository.wait(
            f"{follower['name']}'s status naming cordoned {follower['node']}",
            lambda s: f"cordoned node {follower['node']}" in waiting_message(s),
            timeout=60,
        )
        assert "rebuilt on another node from" in waiting_message(status)
        assert any(follower["node"] in m for m in _events(core, namespace, "WaitingForNode"))
        # The default grace (300 s) is what it waits by default; a user may shorten it.
        _patch(
            kubectl, namespace, "waits", {"spec": {"maintenance": {"cordonedNodeGraceSeconds": 0}}}
        )
        repository.wait(
            f"{follower['name']} rebuilt away from {follower['node']}, in sync",
            lambda s: _rebuilt_away(s, follower),
            timeout=120,
        )
        load.wait_rounds(3)
        results = load.stop()
    _check(results, url, tmp_path)
