"""The GitRepository CRD on a real API server: validation messages, defaults, the short name,
the scale and status subresources, and the immutable storage class.

No operator is needed: everything here is the API server's own work. The CRD is applied
(server-side) and left installed for the other end-to-end tests.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import waiting
from tests.conftest import Kubectl

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "gitrepositories.gitquorum.io.yaml"
CRD = "gitrepositories.gitquorum.io"
API_VERSION = "gitquorum.io/v1alpha1"
SIZE_MESSAGE = "storage.size must be a quantity such as 1Gi or 500Mi"
IMMUTABLE_MESSAGE = "storage.storageClassName is immutable"


@pytest.fixture(scope="module")
def crd(kubectl: Kubectl) -> None:
    """The CRD from crds/, established and serving its current schema."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))

    def condition() -> str:
        return kubectl(
            "get",
            "crd",
            CRD,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Established")].status}',
            check=False,
        ).stdout.strip()

    waiting.until(f"CRD {CRD} to be Established", lambda: condition() == "True", seen=condition)
    # An updated CRD is Established before its new schema is in force: a server-side dry run
    # of an invalid object shows when the current rules are.
    probe = _manifest("probe", {"storage": {"size": "lots"}})

    def refusal() -> str:
        result = kubectl(
            "create", "--dry-run=server", "-n", "default", "-f", "-", input=probe, check=False
        )
        return result.stderr.strip() or result.stdout.strip()

    waiting.until(
        "the CRD's current validation rules to be served",
        lambda: SIZE_MESSAGE in refusal(),
        seen=refusal,
    )


class Repositories:
    """GitRepositories of one test's namespace, created through kubectl."""

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl = kubectl
        self.namespace = namespace

    def create(
        self, name: str, spec: dict[str, Any] | None, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl(
            "create", "-n", self.namespace, "-f", "-", input=_manifest(name, spec), check=check
        )

    def refused(self, name: str, spec: dict[str, Any]) -> str:
        """Creates a GitRepository that must be refused; the API server's message."""
        result = self.create(name, spec, check=False)
        assert result.returncode != 0, f"a GitRepository with spec {spec} was accepted"
        assert self.get(name, check=False) is None, f"{name} exists although refused"
        return result.stderr

    def get(self, name: str, *, check: bool = True) -> dict[str, Any] | None:
        result = self.kubectl("get", CRD, name, "-n", self.namespace, "-o", "json", check=check)
        if result.returncode != 0:
            return None
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def spec(self, name: str) -> dict[str, Any]:
        document = self.get(name)
        assert document is not None
        spec: dict[str, Any] = document["spec"]
        return spec

    def patch(
        self, name: str, patch: dict[str, Any], *, check: bool = True, status: bool = False
    ) -> subprocess.CompletedProcess[str]:
        subresource = ["--subresource=status"] if status else []
        return self.kubectl(
            "patch",
            CRD,
            name,
            "-n",
            self.namespace,
            "--type=merge",
            "-p",
            json.dumps(patch),
            *subresource,
            "-o",
            "json",
            check=check,
        )


def _manifest(name: str, spec: dict[str, Any] | None) -> str:
    document: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "GitRepository",
        "metadata": {"name": name},
    }
    if spec is not None:
        document["spec"] = spec
    return json.dumps(document)


@pytest.fixture
def repositories(crd: None, kubectl: Kubectl, namespace: str) -> Iterator[Repositories]:
    yield Repositories(kubectl, namespace)
    # An operator running on the shared testbed may have added its finalizer: do not wait.
    kubectl("delete", CRD, "--all", "-n", namespace, "--wait=false")


def test_gitrepository_more_than_seven_replicas_refused(repositories: Repositories) -> None:
    message = repositories.refused("nine", {"replicas": 9})
    assert "spec.replicas" in message and "7" in message, message


def test_gitrepository_zero_replicas_refused(repositories: Repositories) -> None:
    message = repositories.refused("none", {"replicas": 0})
    assert "spec.replicas" in message and "1" in message, message


def test_gitrepository_storage_size_not_a_quantity_refused(repositories: Repositories) -> None:
    message = repositories.refused("lots", {"storage": {"size": "lots"}})
    assert "spec.storage.size" in message and SIZE_MESSAGE in message, message


def test_gitrepository_storage_size_zero_refused(repositories: Repositories) -> None:
    message = repositories.refused("empty", {"storage": {"size": "0"}})
    assert "storage.size must be greater than zero" in message, message


def test_gitrepository_unknown_reclaim_policy_refused(repositories: Repositories) -> None:
    message = repositories.refused("sometimes", {"reclaimPolicy": "Sometimes"})
    assert "spec.reclaimPolicy" in message, message
    assert '"Retain"' in message and '"Delete"' in message, message


def test_gitrepository_unknown_field_refused(repositories: Repositories) -> None:
    message = repositories.refused("typo", {"replica": 3})
    assert 'unknown field "spec.replica"' in message, message


def test_gitrepository_bad_resources_and_tolerations_refused(repositories: Repositories) -> None:
    message = repositories.refused("bad", {"resources": {"requests": {"cpu": "lots"}}})
    assert "resources.requests values must be quantities" in message, message
    message = repositories.refused(
        "bad", {"placement": {"tolerations": [{"key": "k", "tolerationSeconds": 5}]}}
    )
    assert "tolerationSeconds needs effect NoExecute" in message, message


@pytest.mark.parametrize("spec", [{}, None], ids=["empty-spec", "no-spec"])
def test_gitrepository_minimal_gets_defaults(
    repositories: Repositories, spec: dict[str, Any] | None
) -> None:
    repositories.create("minimal", spec)
    assert repositories.spec("minimal") == {
        "replicas": 3,
        "storage": {"size": "1Gi"},
        "placement": {"zoneSpread": "Preferred"},
        "auth": {},
        "anonymousRead": False,
        "reclaimPolicy": "Retain",
    }


def test_gitrepository_short_name_and_category_list_it(
    repositories: Repositories, kubectl: Kubectl, namespace: str
) -> None:
    repositories.create("listed", {})

    def listing(name: str) -> list[str]:
        return kubectl("get", name, "-n", namespace, "-o", "name").stdout.split()

    for name in ("gqrepo", "gitquorum", CRD):
        # kubectl refreshes its discovery cache when a name is new to it.
        listed = waiting.until(
            f"kubectl get {name} to list the GitRepository",
            functools.partial(listing, name),
            timeout=30,
        )
        assert listed == ["gitrepository.gitquorum.io/listed"], name


def test_gitrepository_scale_changes_spec_replicas(
    repositories: Repositories, kubectl: Kubectl, namespace: str
) -> None:
    repositories.create("scaled", {"replicas": 3})
    kubectl("scale", f"{CRD}/scaled", "-n", namespace, "--replicas=5")
    assert repositories.spec("scaled")["replicas"] == 5
    refused = kubectl("scale", f"{CRD}/scaled", "-n", namespace, "--replicas=9", check=False)
    assert refused.returncode != 0 and "spec.replicas" in refused.stderr, refused.stderr
    assert repositories.spec("scaled")["replicas"] == 5


def test_gitrepository_storage_class_immutable(repositories: Repositories) -> None:
    repositories.create("classy", {"storage": {"storageClassName": "local"}})
    changed = repositories.patch(
        "classy", {"spec": {"storage": {"storageClassName": "other"}}}, check=False
    )
    assert changed.returncode != 0, "storageClassName changed after creation"
    assert IMMUTABLE_MESSAGE in changed.stderr, changed.stderr
    assert "spec.storage.storageClassName" in changed.stderr, changed.stderr
    removed = repositories.patch(
        "classy", {"spec": {"storage": {"storageClassName": None}}}, check=False
    )
    assert removed.returncode != 0 and IMMUTABLE_MESSAGE in removed.stderr, removed.stderr
    assert repositories.spec("classy")["storage"]["storageClassName"] == "local"

    # Setting a class later would not move the volumes either.
    repositories.create("classless", {})
    added = repositories.patch(
        "classless", {"spec": {"storage": {"storageClassName": "local"}}}, check=False
    )
    assert added.returncode != 0 and IMMUTABLE_MESSAGE in added.stderr, added.stderr
    # The rest of storage stays mutable.
    repositories.patch("classy", {"spec": {"storage": {"size": "2Gi"}}})
    assert repositories.spec("classy")["storage"] == {"size": "2Gi", "storageClassName": "local"}


def test_gitrepository_status_takes_what_the_operator_writes(
    repositories: Repositories, kubectl: Kubectl, namespace: str
) -> None:
    repositories.create("reported", {})
    status = {
        "observedGeneration": 1,
        "replicas": 3,
        "readyReplicas": 2,
        "selector": "app.kubernetes.io/instance=reported",
        "url": f"http://reported.{namespace}.svc/reported.git",
        "credentialsSecret": "reported-credentials",
        "leader": "reported-0",
        "term": 4,
        "generation": 12,
        "checksum": "ab" * 32,
        "members": [{"name": f"reported-{i}", "voter": True} for i in range(3)],
        "replicaStatuses": [
            {
                "name": "reported-0",
                "pod": "reported-0",
                "node": "node-1",
                "pvc": "reported-0",
                "role": "leader",
                "state": "InSync",
                "voter": True,
                "generation": 12,
                "checksum": "ab" * 32,
            },
            {"name": "reported-2", "state": "Pending", "voter": True, "message": "no node"},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "QuorumInSync",
                "message": "2 of 3 replicas in sync",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    scale_path = (
        f"/apis/gitquorum.io/v1alpha1/namespaces/{namespace}/gitrepositories/reported/scale"
    )
    seen: list[object] = []

    def written_and_shown() -> bool:
        # An operator on the shared testbed may rewrite the status at any time: write it again
        # until a read right after the write shows it.
        patched = repositories.patch("reported", {"status": status}, status=True)
        stored = json.loads(patched.stdout)["status"]
        kept = {key: stored.get(key) for key in status}
        assert kept == status, f"the API server dropped or changed status fields: {kept}"
        row = kubectl("get", CRD, "reported", "-n", namespace, "-o", "wide", "--no-headers")
        scale = json.loads(kubectl("get", "--raw", scale_path).stdout)["status"]
        seen[:] = [row.stdout.split()[:6], scale]
        return seen == [
            ["reported", "3", "2", "reported-0", "True", "4"],
            {"replicas": 3, "selector": "app.kubernetes.io/instance=reported"},
        ]

    waiting.until(
        "the printer columns and the scale subresource to show the status written",
        written_and_shown,
        timeout=30,
        seen=lambda: seen,
    )

    refused = repositories.patch(
        "reported",
        {"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}},
        status=True,
        check=False,
    )
    assert refused.returncode != 0 and "status.conditions[0].status" in refused.stderr, (
        refused.stderr
    )
