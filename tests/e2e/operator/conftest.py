"""The operator installed with its Helm chart, and namespaces it manages, for the tests here.

The chart is installed once per session with the real helm into ``gitquorum-system``, its
operator pinned to a node of its own (labelled and tainted ``gitquorum.io/system=true``) so
that tests which stop worker nodes never stop the operator with them. The release is kept
after the session: deleting a test's namespace deletes its GitRepositories, whose finalizer
only a running operator removes.

The operator watches only this session's namespaces (``watchNamespaces``), named in advance,
one per test: the testbed is shared, and another operator (a developer's, or another test
run's release) may be managing repositories in namespaces of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import binaries, cluster, install
from tests import waiting
from tests.conftest import Kubectl
from tests.e2e.operator import repos

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "gitquorum"
CRD_FILE = REPO / "crds" / "gitrepositories.gitquorum.io.yaml"
BACKUP_CRD_FILE = REPO / "crds" / "gitrepositorybackups.gitquorum.io.yaml"
RELEASE = "gitquorum"
SYSTEM_NAMESPACE = "gitquorum-system"
SYSTEM_KEY = "gitquorum.io/system"
NODE_LOSS_GRACE = 5
OPERATOR_SELECTOR = "app.kubernetes.io/name=gitquorum-operator"


class Operator:
    """The installed release: where its pods run and how to find them."""

    namespace = SYSTEM_NAMESPACE
    release = RELEASE
    selector = OPERATOR_SELECTOR
    # The chart's full name is the release name when that contains "gitquorum": it names the
    # ServiceAccount and the Lease that elects the acting operator pod.
    service_account = RELEASE
    lease = RELEASE

    def __init__(self, namespaces: list[str]) -> None:
        self.namespaces = namespaces
        self.handed_out = 0

    def next_namespace(self) -> str:
        if self.handed_out >= len(self.namespaces):
            raise AssertionError(
                f"all {len(self.namespaces)} namespaces the operator watches are used: "
                "a test asked for a namespace that was not counted at collection"
            )
        self.handed_out += 1
        return self.namespaces[self.handed_out - 1]


def helm(*args: str, kubeconfig: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    binary = binaries.directory(build=False) / "helm"
    result = subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _counted_tests(session: pytest.Session) -> int:
    here = Path(__file__).parent
    return sum(
        1
        for item in session.items
        if here in Path(str(item.path)).parents and "namespace" in getattr(item, "fixturenames", ())
    )


@pytest.fixture(scope="session")
def operator(
    request: pytest.FixtureRequest, testbed: cluster.Testbed, kubectl: Kubectl
) -> Operator:
    """The chart installed (or upgraded) and its helm test passed."""
    session = uuid.uuid4().hex[:6]
    count = max(_counted_tests(request.session), 1)
    namespaces = [f"gq-e2e-{session}-{index}" for index in range(1, count + 1)]
    # A node for the operator alone, labelled and tainted so that replicas stay off it (on
    # another cluster, the node already labelled for it).
    install.system_node(testbed)
    # helm installs the chart's CRD only when there is none; a cluster kept from an older
    # checkout may serve an older schema.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(BACKUP_CRD_FILE))
    kubectl("wait", "--for=condition=Established", f"crd/{repos.CRD}", "--timeout=60s")
    helm(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "-n",
        SYSTEM_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "3m",
        "--set",
        f"nodeLossGraceSeconds={NODE_LOSS_GRACE}",
        "--set-json",
        f"nodeSelector={json.dumps({SYSTEM_KEY: 'true'})}",
        "--set-json",
        "tolerations="
        + json.dumps(
            [{"key": SYSTEM_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
        ),
        "--set-json",
        f"watchNamespaces={json.dumps(namespaces)}",
        kubeconfig=testbed.layout.kubeconfig,
    )
    _helm_test(testbed.layout.kubeconfig)
    return Operator(namespaces)


def _helm_test(kubeconfig: Path) -> None:
    """``helm test``, tried twice: the testbed's node agents report a pod's status by name,
    so the runtime of the previous session's test pod (same name) may still overwrite the
    new pod's status for a few seconds after helm deleted it."""
    args = ("test", RELEASE, "-n", SYSTEM_NAMESPACE, "--timeout", "2m")
    try:
        helm(*args, kubeconfig=kubeconfig)
    except AssertionError as first:
        print(f"helm test failed once, trying again: {first}")
        helm(*args, kubeconfig=kubeconfig)


@pytest.fixture
def namespace(operator: Operator, core: client.CoreV1Api, kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace the operator watches; deleted with everything in it afterwards."""
    name = operator.next_namespace()
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    waiting.until(
        f"the default ServiceAccount of namespace {name}",
        lambda: core.read_namespaced_service_account("default", name),
    )
    yield name
    # GitRepositories first, and gone (the operator removes its finalizer), then the namespace:
    # an operator that watches a list of namespaces stops watching one as soon as it is being
    # deleted, and would leave the finalizers of whatever was still in it.
    kubectl("delete", repos.CRD, "--all", "-n", name, "--wait=true", "--timeout=60s", check=False)
    core.delete_namespace(name)


@pytest.fixture
def stopped(testbed: cluster.Testbed) -> Iterator[list[str]]:
    """Nodes a test stops; started again afterwards whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        testbed.node_start(name)
