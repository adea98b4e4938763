"""A node stops (power loss: its processes die, its volumes become unreachable): a lost
follower is replaced by a new replica elsewhere, a lost leader by an election, and no
acknowledged push is lost. Every test starts the node it stopped again."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import cluster
from tests.conftest import Kubectl
from tests.e2e.operator import nodes, repos

pytestmark = pytest.mark.e2e

PUSH_ATTEMPT_SECONDS = 15
"""One push during a failover: a connection to the lost leader must not hold the loop."""


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
    repository.wait_in_sync(3)
    return repository


def test_follower_node_stopped_replaced_by_new_replica_elsewhere(
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    stopped: list[str],
    tmp_path: Path,
) -> None:
    nodes.ensure_workers(testbed, core, 4)
    repository = _serving(kubectl, api_client, core, namespace, "follower")
    url = repository.push_url(core)
    work = repos.Work(tmp_path / "work")
    pushed = set()
    for _ in range(3):
        pushed.add(work.commit())
        work.push(url)
    before = repository.wait_in_sync(3)
    lost = next(e for e in before["replicaStatuses"] if e["name"] != before["leader"])
    original = {entry["name"] for entry in before["replicaStatuses"]}

    stopped.append(lost["node"])
    testbed.node_stop(lost["node"])
    started = time.monotonic()

    def replaced(status: repos.Status) -> bool:
        members = {member["name"] for member in status.get("members") or []}
        newcomers = [e for e in status.get("replicaStatuses") or [] if e["name"] not in original]
        return (
            lost["name"] not in members
            and any(e["node"] != lost["node"] for e in newcomers)
            and repos.in_sync(status, 3)
        )

    after = repository.wait(
        f"{lost['name']} (on stopped {lost['node']}) replaced by a new replica in sync elsewhere",
        replaced,
        timeout=150,
    )
    print(
        f"follower {lost['name']} on {lost['node']} replaced after "
        f"{time.monotonic() - started:.1f}s: {repos.summary(after)}"
    )
    assert after["leader"] == before["leader"], repos.summary(after)
    assert repos.commits(repos.clone(url, tmp_path / "clone")) == pushed


def test_leader_node_stopped_new_leader_takes_pushes_without_losing_any(
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    stopped: list[str],
    tmp_path: Path,
) -> None:
    repository = _serving(kubectl, api_client, core, namespace, "failover")
    url = repository.push_url(core)
    work = repos.Work(tmp_path / "work")
    acknowledged = [work.commit()]
    work.push(url)
    before = repository.wait_in_sync(3)
    leader = nodes.stop_leader(testbed, before, stopped)
    started = time.monotonic()
    deadline = started + 120
    failures: list[str] = []
    while True:
        sha = work.commit()
        attempt = work.push(url, check=False, timeout=PUSH_ATTEMPT_SECONDS)
        if attempt.returncode == 0:
            acknowledged.append(sha)
            break
        failures.append(attempt.stderr.strip().splitlines()[-1] if attempt.stderr else "?")
        assert time.monotonic() < deadline, (
            f"no push succeeded within 120s of stopping leader {leader['name']} on "
            f"{leader['node']}; failures: {failures}; {repository.describe()}"
        )
    gap = time.monotonic() - started
    refusals = ", ".join(f"{count}x {text!r}" for text, count in Counter(failures).items())
    print(
        f"leader {leader['name']} on {leader['node']} stopped: pushes resumed after {gap:.1f}s "
        f"({len(failures)} failed attempt(s): {refusals or 'none'})"
    )

    after = repository.wait(
        f"a new leader in a term after {before['term']}",
        lambda status: (
            status.get("leader") not in (None, "", leader["name"])
            and status.get("term", 0) > before["term"]
        ),
        timeout=30,
    )
    assert after["leader"] != leader["name"], repos.summary(after)
    for _ in range(2):
        acknowledged.append(work.commit())
        work.push(url)
    copy = repos.clone(url, tmp_path / "clone")
    missing = [sha for sha in acknowledged if sha not in repos.commits(copy)]
    assert not missing, f"acknowledged pushes lost: {missing}"
    head = repos.git("rev-parse", "HEAD", cwd=copy).stdout.strip()
    assert head == acknowledged[-1], (
        f"main is {head}, the last acknowledged push {acknowledged[-1]}"
    )
