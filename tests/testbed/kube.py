"""Small builders and waits for the testbed's own tests."""

from __future__ import annotations

import sys
from typing import Any

from kubernetes import client

from tests import waiting

PYTHON = sys.executable


def pod(
    name: str,
    command: list[str],
    *,
    node: str | None = None,
    restart: str = "Never",
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    service_account: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 2,
        "containers": [
            {
                "name": "main",
                "image": "testbed/python",
                "command": command,
                "volumeMounts": mounts or [],
            }
        ],
        "volumes": volumes or [],
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": spec,
    }


def http_server(name: str, *, node: str | None = None, port: int = 8080) -> dict[str, Any]:
    """A pod serving HTTP on ``port`` with a readiness probe, as a Deployment's template."""
    body = pod(
        name,
        [PYTHON, "-m", "http.server", str(port), "--directory", "/srv"],
        node=node,
        restart="Always",
        volumes=[{"name": "srv", "emptyDir": {}}],
        mounts=[{"name": "srv", "mountPath": "/srv"}],
    )
    container = body["spec"]["containers"][0]
    container["ports"] = [{"name": "http", "containerPort": port}]
    container["readinessProbe"] = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    # Ready only after the startup probe (a TCP connect) has passed.
    container["startupProbe"] = {
        "tcpSocket": {"port": port},
        "periodSeconds": 1,
        "failureThreshold": 30,
    }
    return body


def http_service(app: str) -> dict[str, Any]:
    """A Service named ``app`` on port 80 for the pods of ``http_server(app)``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


def claim(name: str) -> dict[str, Any]:
    """A 1 GiB claim on the default (local) StorageClass."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def wait_phase(
    core: client.CoreV1Api, namespace: str, name: str, phases: set[str], *, timeout: float = 60
) -> client.V1Pod:
    def probe() -> client.V1Pod | None:
        p = core.read_namespaced_pod(name, namespace)
        return p if p.status and p.status.phase in phases else None

    return waiting.until(
        f"pod {namespace}/{name} to reach {sorted(phases)}", probe, timeout=timeout
    )


def wait_ready(
    core: client.CoreV1Api, namespace: str, name: str, *, timeout: float = 60
) -> client.V1Pod:
    def probe() -> client.V1Pod | None:
        p = core.read_namespaced_pod(name, namespace)
        conditions = {c.type: c.status for c in (p.status.conditions or [])} if p.status else {}
        return p if conditions.get("Ready") == "True" else None

    return waiting.until(f"pod {namespace}/{name} to be Ready", probe, timeout=timeout)


def run_to_completion(
    core: client.CoreV1Api, namespace: str, body: dict[str, Any], *, timeout: float = 60
) -> str:
    """Create a restartPolicy=Never pod and return its final phase."""
    core.create_namespaced_pod(namespace, body)
    done = wait_phase(
        core, namespace, body["metadata"]["name"], {"Succeeded", "Failed"}, timeout=timeout
    )
    return str(done.status.phase)
