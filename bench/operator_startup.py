"""apply -> Ready: a 3-replica GitRepository against a StatefulSet of the standalone server.

The time from ``kubectl apply`` of a GitRepository to its Ready condition True (the API polled
every 0.2 s), alternating with the reference: a 3-replica StatefulSet of the standalone server
(the pod of examples/standalone-server.yaml, its volume as a claim template) until its 3 pods
are Ready. The StatefulSet gets what makes it comparable and as fast as Kubernetes itself can
be: the replicas' required anti-affinity on hostname, ``podManagementPolicy: Parallel`` (the
operator creates its three pods at once too) and a replica's 1 s readiness period.
"""

import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench import kube
from gitquorum_testbed import binaries

TARGET = 30.0
"""Seconds from apply to Ready."""
STANDALONE = binaries.repo_root() / "examples" / "standalone-server.yaml"
Body = dict[str, Any]


def measure(api: kube.Kube, rounds: int) -> dict[str, list[float]]:
    print(f"   ready: {rounds} rounds of a GitRepository against a StatefulSet", flush=True)
    times: dict[str, list[float]] = {"operator": [], "statefulset": []}
    users = _auth_file()
    for index in range(rounds):
        with api.namespace("ready") as namespace:
            times["operator"].append(api.create_ready(namespace))
        with api.namespace("sts") as namespace:
            times["statefulset"].append(_statefulset_to_ready(api, namespace, users))
        print(
            f"     round {index + 1}/{rounds}: GitRepository Ready in "
            f"{times['operator'][-1]:.1f} s, StatefulSet 3/3 Ready in "
            f"{times['statefulset'][-1]:.1f} s",
            flush=True,
        )
    return times


def _statefulset_to_ready(api: kube.Kube, namespace: str, users: str) -> float:
    secret = {"metadata": {"name": "git-users"}, "stringData": {"users": users}}
    api.core.create_namespaced_secret(namespace, secret)
    manifest = _statefulset()
    selector = ",".join(f"{k}={v}" for k, v in manifest["spec"]["selector"]["matchLabels"].items())
    started = time.monotonic()
    api.apply(namespace, manifest)
    kube.wait(
        f"3 Ready pods of StatefulSet {namespace}/git",
        lambda: _ready_pods(api, namespace, selector) >= 3,
        timeout=kube.READY_TIMEOUT,
    )
    return time.monotonic() - started


def _statefulset() -> Body:
    """The standalone server's Deployment of examples/, as a 3-replica StatefulSet."""
    documents = [d for d in yaml.safe_load_all(STANDALONE.read_text()) if d]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    claim = next(d for d in documents if d["kind"] == "PersistentVolumeClaim")
    template = copy.deepcopy(deployment["spec"]["template"])
    spec = template["spec"]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "data"]
    spec["containers"][0]["readinessProbe"]["periodSeconds"] = 1
    spec["affinity"] = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": template["metadata"]["labels"]},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "git"},
        "spec": {
            "replicas": 3,
            "serviceName": "git",
            "podManagementPolicy": "Parallel",
            "selector": deployment["spec"]["selector"],
            "template": template,
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim["spec"]}],
        },
    }


def _ready_pods(api: kube.Kube, namespace: str, selector: str) -> int:
    pods = api.core.list_namespaced_pod(namespace, label_selector=selector).items
    return sum(
        1
        for pod in pods
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    )


def _auth_file() -> str:
    """An auth file for the standalone server, made with ``gitquorum passwd``."""
    gitquorum = Path(sys.executable).parent / "gitquorum"
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "users"
        subprocess.run(
            [str(gitquorum), "passwd", "--auth-file", str(path), "bench"],
            input="bench-token\n",
            text=True,
            check=True,
            capture_output=True,
        )
        return path.read_text()
