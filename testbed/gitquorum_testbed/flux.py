"""Flux's source-controller on the testbed: a real GitOps client of gitquorum repositories.

The pinned binary and the CRDs of the same module version come from the build cache
(``hack/build-binaries.sh --flux``). The controller runs as a Deployment in ``flux-system``
whose command is that binary (the testbed ignores images), on the system node beside the
operator so that tests which stop worker nodes never stop it. Its RBAC is upstream's
``config/rbac/role.yaml``; leader election is off (one replica, and one Lease fewer to wait for)
and there is no events address: notification-controller is not available to build here.

The testbed has no cluster DNS, so a GitRepository points Flux at a Service's ClusterIP.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from gitquorum_testbed import binaries, cluster
from gitquorum_testbed import install as chart

NAMESPACE = "flux-system"
NAME = "source-controller"
GROUP = "source.toolkit.fluxcd.io"
# The artifact server (what --storage-adv-addr advertises), health and metrics ports: upstream's.
STORAGE_PORT = 9090
HEALTH_PORT = 9440
METRICS_PORT = 8080


def install(target: cluster.Testbed | Path, *, timeout: int = 180) -> None:
    """Apply Flux's source CRDs, RBAC and the source-controller Deployment; wait until it is
    available. Idempotent (server-side apply), so a kept testbed reuses the running one."""
    kubeconfig = target if isinstance(target, Path) else target.layout.kubeconfig
    if isinstance(target, cluster.Testbed):
        chart.system_node(target)
    directory = binaries.flux_source_controller()
    _kubectl(
        kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(directory / "crds")
    )
    _kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        f"crd/gitrepositories.{GROUP}",
        "--timeout=60s",
    )
    documents = {"apiVersion": "v1", "kind": "List", "items": manifests(directory)}
    _kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=gitquorum-testbed",
        "-f",
        "-",
        input=json.dumps(documents),
    )
    _kubectl(
        kubeconfig,
        "rollout",
        "status",
        f"deployment/{NAME}",
        "-n",
        NAMESPACE,
        f"--timeout={timeout}s",
    )


def manifests(directory: Path) -> list[dict[str, Any]]:
    """The namespace, RBAC, Service and Deployment that run ``directory``'s binary."""
    labels = {"app": NAME}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"flux-{NAME}"},
            "rules": _rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"flux-{NAME}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"flux-{NAME}",
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": STORAGE_PORT}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": _pod_spec(directory / "source-controller"),
                },
            },
        },
    ]


def _pod_spec(binary: Path) -> dict[str, Any]:
    return {
        "serviceAccountName": NAME,
        "terminationGracePeriodSeconds": 10,
        "nodeSelector": {chart.SYSTEM_LABEL: "true"},
        "tolerations": [
            {
                "key": chart.SYSTEM_LABEL,
                "operator": "Equal",
                "value": "true",
                "effect": "NoSchedule",
            }
        ],
        "containers": [
            {
                "name": "manager",
                "image": "ghcr.io/fluxcd/source-controller:v1.9.6",
                "command": [str(binary)],
                "args": [
                    "--watch-all-namespaces",
                    "--log-level=info",
                    "--log-encoding=json",
                    "--enable-leader-election=false",
                    "--events-addr=",
                    "--storage-path=/data",
                    f"--storage-addr=:{STORAGE_PORT}",
                    f"--storage-adv-addr={NAME}.{NAMESPACE}.svc",
                    f"--health-addr=:{HEALTH_PORT}",
                    f"--metrics-addr=:{METRICS_PORT}",
                ],
                "env": [{"name": "RUNTIME_NAMESPACE", "value": NAMESPACE}],
                "ports": [
                    {"name": "http", "containerPort": STORAGE_PORT},
                    {"name": "http-prom", "containerPort": METRICS_PORT},
                    {"name": "healthz", "containerPort": HEALTH_PORT},
                ],
                "readinessProbe": {"httpGet": {"path": "/", "port": STORAGE_PORT}},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }


def _rules() -> list[dict[str, Any]]:
    """Upstream's manager role (config/rbac/role.yaml of the same version)."""
    kinds = ["buckets", "gitrepositories", "helmcharts", "helmrepositories", "ocirepositories"]
    return [
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {
            "apiGroups": [""],
            "resources": ["secrets", "serviceaccounts"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
        {
            "apiGroups": [GROUP],
            "resources": kinds,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        },
        {
            "apiGroups": [GROUP],
            "resources": [f"{kind}/finalizers" for kind in kinds],
            "verbs": ["create", "delete", "get", "patch", "update"],
        },
        {
            "apiGroups": [GROUP],
            "resources": [f"{kind}/status" for kind in kinds],
            "verbs": ["get", "patch", "update"],
        },
    ]


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    result = subprocess.run(
        [str(binaries.kubectl()), *args],
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise cluster.TestbedError(
            f"kubectl {' '.join(args[:3])} ... failed:\n{result.stdout}{result.stderr}"
        )
    return result.stdout
