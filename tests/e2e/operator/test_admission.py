"""What the cluster refuses: an invalid GitRepository at kubectl apply, and the operator's
ServiceAccount anything its least-privilege role does not grant."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.conftest import Kubectl
from tests.e2e.operator import repos
from tests.e2e.operator.conftest import Operator

pytestmark = pytest.mark.e2e


def test_apply_nine_replicas_refused_and_nothing_created(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str
) -> None:
    refused = kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=repos.manifest("nine", {"replicas": 9}),
        check=False,
    )
    assert refused.returncode != 0, f"accepted: {refused.stdout}"
    assert "spec.replicas" in refused.stderr, refused.stderr
    listed = kubectl("get", repos.CRD, "-n", namespace, "-o", "name").stdout.split()
    assert listed == [], listed
    assert core.list_namespaced_pod(namespace).items == []
    assert core.list_namespaced_service(namespace).items == []
    assert core.list_namespaced_persistent_volume_claim(namespace).items == []


def _can(kubectl: Kubectl, operator: Operator, *args: str) -> str:
    account = f"system:serviceaccount:{operator.namespace}:{operator.service_account}"
    result = kubectl("auth", "can-i", f"--as={account}", *args, check=False)
    return result.stdout.strip()


def test_operator_account_allowed_only_what_it_manages(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    refused = [
        ("delete", "nodes"),
        ("patch", "nodes"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("create", repos.CRD),
        ("delete", repos.CRD),
        ("create", "leases.coordination.k8s.io"),
    ]
    allowed = [
        ("create", "pods"),
        ("delete", "persistentvolumeclaims"),
        ("create", "secrets"),
        ("update", f"{repos.CRD}/status"),
        ("list", "nodes"),
    ]
    answers = {verb: _can(kubectl, operator, *verb, "-n", namespace) for verb in refused + allowed}
    wrong = {
        " ".join(verb): answer
        for verb, answer in answers.items()
        if answer != ("no" if verb in refused else "yes")
    }
    assert not wrong, f"kubectl auth can-i answered otherwise than the role says: {wrong}"
