"""Fixtures shared by every tier: the testbed cluster and clients for it.

The cluster is started once per session and only when a test asks for it; a testbed that
was already up (``make demo``) is reused and left running. ``GITQUORUM_KEEP_TESTBED=1`` keeps
the one the session started, for looking around after a failure.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from gitquorum_testbed import binaries, cluster
from gitquorum_testbed.external import ExternalCluster
from tests import waiting

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def testbed() -> Iterator[cluster.Testbed]:
    """A running testbed with three Ready nodes; brought down at the end if we brought it up.

    With ``GITQUORUM_KUBECONFIG`` set, the cluster it names instead (kind, say: see
    ``hack/kind-e2e.sh``), for the end-to-end tests (``-m e2e``).
    """
    external = os.environ.get("GITQUORUM_KUBECONFIG")
    if external:
        yield ExternalCluster(Path(external))  # type: ignore[misc]
        return
    root = Path(os.environ.get("GITQUORUM_TESTBED_ROOT", REPO / ".testbed"))
    bed = cluster.Testbed(root)
    was_up = bed.layout.kubeconfig.exists() and _healthy(bed)
    bed.up(nodes=3, zones=3)
    # A cluster reused from `make demo` may have a node stopped or cut off by hand.
    for node in bed.node_configs():
        flags = bed.layout.node_dir(node.name)
        if (flags / "stopped").exists():
            bed.node_start(node.name)
        if (flags / "partitioned").exists():
            bed.node_heal(node.name)
    yield bed
    if not was_up and not os.environ.get("GITQUORUM_KEEP_TESTBED"):
        bed.down(keep_state=False)
        # `down` promises no stray processes, links or routes: hold it to that.
        assert bed.leftovers() == [], f"left behind by down: {bed.leftovers()}"


def _healthy(bed: cluster.Testbed) -> bool:
    try:
        bed.core_api().list_node(_request_timeout=3)
    except Exception:  # anything means "not up"
        return False
    return True


@pytest.fixture(scope="session")
def kubeconfig(testbed: cluster.Testbed) -> Path:
    return testbed.layout.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods are refused until the service-account controller has made the default account.
    waiting.until(
        f"the default ServiceAccount of namespace {name}",
        lambda: core.read_namespaced_service_account("default", name),
    )
    yield name
    core.delete_namespace(name)


class Kubectl:
    """The pinned kubectl, pointed at the test cluster."""

    def __init__(self, kubeconfig: Path) -> None:
        self.binary = str(binaries.kubectl())
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    return Kubectl(kubeconfig)
