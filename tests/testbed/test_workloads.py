"""Pods on simulated nodes: Deployments behind Services, volumes, service-account RBAC."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import settings
from tests import waiting
from tests.testbed import kube

pytestmark = pytest.mark.testbed


def test_deployment_becomes_ready_and_answers_through_service(api_client, core, namespace):
    template = kube.http_server("web")
    apps = client.AppsV1Api(api_client)
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": template["metadata"], "spec": template["spec"]},
            },
        },
    )
    service = core.create_namespaced_service(namespace, kube.http_service("web"))
    waiting.until(
        "deployment web to have 2 ready replicas",
        lambda: apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 2,
        timeout=90,
    )

    def fetch() -> int:
        url = f"http://{service.spec.cluster_ip}/"
        with urllib.request.urlopen(url, timeout=3) as response:
            return int(response.status)

    assert waiting.until("the Service's ClusterIP to answer", fetch, timeout=30) == 200


def test_pvc_data_survives_pod_recreation_on_same_node(core, namespace):
    core.create_namespaced_persistent_volume_claim(namespace, kube.claim("data"))
    volume = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    mount = [{"name": "data", "mountPath": "/data"}]
    writer = kube.pod(
        "writer", ["sh", "-c", "echo kept > /data/marker && sync"], volumes=volume, mounts=mount
    )
    assert kube.run_to_completion(core, namespace, writer) == "Succeeded"
    first_node = core.read_namespaced_pod("writer", namespace).spec.node_name
    core.delete_namespaced_pod("writer", namespace)
    waiting.until(
        "pod writer to be gone",
        lambda: (
            not core.list_namespaced_pod(namespace, field_selector="metadata.name=writer").items
        ),
    )

    reader = kube.pod(
        "reader", ["sh", "-c", "grep -qx kept /data/marker"], volumes=volume, mounts=mount
    )
    assert kube.run_to_completion(core, namespace, reader) == "Succeeded", (
        "the file written by the first pod was not on the volume"
    )
    assert core.read_namespaced_pod("reader", namespace).spec.node_name == first_node


def test_pod_without_permission_gets_403_and_with_role_succeeds(api_client, core, namespace):
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(
        namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bare"}}
    )
    # In-cluster config reads the projected token and CA; exit 3 on 403, 0 on success.
    script = (
        "import sys\n"
        "from kubernetes import client, config\n"
        "config.load_incluster_config()\n"
        "try:\n"
        f"    client.CoreV1Api().list_namespaced_pod('{namespace}')\n"
        "except client.ApiException as e:\n"
        "    print(e.status); sys.exit(3 if e.status == 403 else 1)\n"
    )
    denied = kube.pod("denied", [kube.PYTHON, "-c", script], service_account="bare")
    assert kube.run_to_completion(core, namespace, denied) == "Failed"
    status = core.read_namespaced_pod("denied", namespace).status.container_statuses[0]
    assert status.state.terminated.exit_code == 3, "expected a 403 from the API server"

    rbac.create_namespaced_role(
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "list-pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "list-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "list-pods",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "bare", "namespace": namespace}],
        },
    )
    allowed = kube.pod("allowed", [kube.PYTHON, "-c", script], service_account="bare")
    assert kube.run_to_completion(core, namespace, allowed) == "Succeeded"


def test_service_endpoints_follow_readiness(core, namespace, tmp_path):
    # The readiness probe asks for /ready, a file the test creates and deletes on a hostPath.
    body = kube.http_server("flip")
    body["spec"]["volumes"] = [{"name": "srv", "hostPath": {"path": str(tmp_path)}}]
    body["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/ready", "port": "http"},
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    core.create_namespaced_pod(namespace, body)
    service = core.create_namespaced_service(namespace, kube.http_service("flip"))
    # "/" always answers 200 when routed, so a failure means the Service had no endpoint.
    url = f"http://{service.spec.cluster_ip}/"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    (tmp_path / "ready").write_text("yes")
    waiting.until("the Service to answer once the pod is ready", answers, timeout=30)
    (tmp_path / "ready").unlink()
    waiting.until(
        "the Service to stop routing to the unready pod", lambda: not answers(), timeout=30
    )
    (tmp_path / "ready").write_text("yes")
    waiting.until("the Service to answer again", answers, timeout=30)


def test_bridge_keeps_its_address_as_pods_come_and_go(core, namespace):
    # Left to itself a bridge takes the lowest MAC among its ports: pods coming and going
    # would change the gateway's MAC under every other pod's neighbour cache.
    bridge = Path("/sys/class/net") / settings.BRIDGE_NAME

    def address() -> tuple[str, str]:
        return (bridge / "address").read_text().strip(), (bridge / "addr_assign_type").read_text()

    assert address() == (settings.BRIDGE_MAC, "3\n")  # 3: set by us, NET_ADDR_SET
    for index in range(3):
        body = kube.pod(f"passing-{index}", ["true"])
        assert kube.run_to_completion(core, namespace, body) == "Succeeded"
        core.delete_namespaced_pod(f"passing-{index}", namespace)
    waiting.until(
        "the pods and their network links to be gone",
        lambda: not core.list_namespaced_pod(namespace).items,
    )
    assert address() == (settings.BRIDGE_MAC, "3\n")


def test_reused_pod_address_answers_other_pods_at_once(testbed, core, namespace):
    # The client keeps a neighbour entry for the server's address; the next pod to get that
    # address must be reachable through it (the MAC follows the address), not 30 s later.
    client_script = (
        "import socket, sys, time\n"
        "while True:\n"
        "    try:\n"
        "        socket.create_connection((sys.argv[1], 8080), timeout=0.5).close()\n"
        "        print(time.time(), 'ok', flush=True)\n"
        "    except OSError as error:\n"
        "        print(time.time(), 'fail', error, flush=True)\n"
        "    time.sleep(0.2)\n"
    )
    first = kube.http_server("server", node="node-1")
    core.create_namespaced_pod(namespace, first)
    address = kube.wait_ready(core, namespace, "server").status.pod_ip
    watcher = kube.pod(
        "client", [kube.PYTHON, "-c", client_script, address], node="node-2", restart="Always"
    )
    core.create_namespaced_pod(namespace, watcher)
    kube.wait_phase(core, namespace, "client", {"Running"})
    log = testbed.log_path(namespace, "client", None)
    waiting.until("the client to reach the first server", lambda: " ok" in log.read_text())

    # The node hands out its lowest free address; the first server's may take a sync or two
    # to be free again, so servers come and go until one gets it.
    for _ in range(5):
        core.delete_namespaced_pod("server", namespace)
        waiting.until(
            "the previous server to be gone",
            lambda: (
                not [
                    p
                    for p in core.list_namespaced_pod(namespace).items
                    if p.metadata.name == "server"
                ]
            ),
        )
        core.create_namespaced_pod(namespace, kube.http_server("server", node="node-1"))
        if kube.wait_ready(core, namespace, "server").status.pod_ip == address:
            break
    else:
        raise AssertionError(f"node-1 never handed {address} out again")
    ready_at = time.time()

    def reached_after_ready() -> float | None:
        for line in log.read_text().splitlines():
            stamp, outcome = line.split()[:2]
            if float(stamp) > ready_at and outcome == "ok":
                return float(stamp) - ready_at
        return None

    delay = waiting.until("the client to reach the second server", reached_after_ready, timeout=60)
    assert delay < 3.0, f"the reused address answered the client only after {delay:.1f} s"
