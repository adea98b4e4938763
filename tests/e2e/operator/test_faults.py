"""Jepsen-style faults through the operator: concurrent git clients through a repository's
Service while nodes stop and start, partition and heal, the operator is killed, replica pods
are deleted and the API server restarts; then the replication checker (``tests/faults``)
proves that nothing acknowledged was lost, no ref went backwards, reads saw acknowledged
writes, and every replica converged with the status saying so.

One round per scenario here; ``make bench`` (``bench/faults.py``) runs twenty.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import cluster
from tests.conftest import Kubectl
from tests.e2e.operator import nodes, repos
from tests.e2e.operator.conftest import Operator
from tests.faults import operated

pytestmark = pytest.mark.e2e

ROUNDS = 1


@pytest.mark.parametrize("scenario", sorted(operated.SCENARIOS))
def test_invariants_hold_through_the_operator(
    scenario: str,
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    nodes.ensure_workers(testbed, core, 3)
    repos.apply(kubectl, namespace, repos.manifest("faults", {"replicas": 3}))
    repository = repos.Repository(api_client, namespace, "faults")
    repository.wait_ready()
    repository.wait_serving(core)
    repository.wait_in_sync(3)
    target = operated.OperatedCluster(
        testbed=testbed,
        api=api_client,
        namespace=namespace,
        name="faults",
        directory=tmp_path / "faults",
        operator_namespace=operator.namespace,
        operator_selector=operator.selector,
    )

    def progress(index: int, verdict: object, seconds: float) -> None:
        print(f"{scenario} round {index + 1}: {verdict.summary()}; {seconds:.1f}s")  # type: ignore[attr-defined]

    verdict = operated.run_scenario(
        target, operated.SCENARIOS[scenario], rounds=ROUNDS, progress=progress
    )
    verdict.assert_ok()
    assert verdict.acknowledged > 0
