"""What a simulated node does for a pod spec: env sources, volumes, security context, probes,
restarts and graceful termination."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import waiting
from tests.testbed import kube

pytestmark = pytest.mark.testbed


def test_env_sources_and_volumes_resolve(core, namespace):
    core.create_namespaced_secret(namespace, kube.secret("s", token="s3cret"))
    core.create_namespaced_config_map(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c"},
            "data": {"mode": "fast"},
        },
    )
    checks = " && ".join(
        [
            'test "$NAME" = envpod',
            'test "$NS" = "$EXPECT_NS"',
            'test -n "$IP"',
            'test "$NODE" = node-2',
            'test "$TOKEN" = s3cret',
            'test "$MODE" = fast',
            'test "$COMPOSED" = envpod-fast',
            'test "$(cat /secret/token)" = s3cret',
            'test "$(cat /config/mode)" = fast',
            'test "$(cat /info/name)" = envpod',
            'ip -o addr show dev eth0 | grep -q "$IP"',
        ]
    )
    body = kube.pod(
        "envpod",
        ["sh", "-c", checks],
        node="node-2",
        volumes=[
            {"name": "sec", "secret": {"secretName": "s"}},
            {"name": "cfg", "configMap": {"name": "c"}},
            {
                "name": "info",
                "downwardAPI": {
                    "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
                },
            },
        ],
        mounts=[
            {"name": "sec", "mountPath": "/secret"},
            {"name": "cfg", "mountPath": "/config"},
            {"name": "info", "mountPath": "/info"},
        ],
    )
    body["spec"]["containers"][0]["env"] = [
        {"name": "EXPECT_NS", "value": namespace},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "mode"}}},
        {"name": "COMPOSED", "value": "$(NAME)-$(MODE)"},
    ]
    assert kube.run_to_completion(core, namespace, body) == "Succeeded"


def test_security_context_runs_non_root_on_read_only_root(core, namespace):
    script = (
        'test "$(id -u)" = 65532 && test "$(id -g)" = 65532 && '
        "! touch /should-not-exist 2>/dev/null && touch /scratch/ok && "
        # The project's interpreter and package must be reachable as a non-root user.
        "python -c 'import gitquorum, gitquorum_testbed'"
    )
    body = kube.pod(
        "secure",
        ["sh", "-c", script],
        volumes=[{"name": "scratch", "emptyDir": {}}],
        mounts=[{"name": "scratch", "mountPath": "/scratch"}],
    )
    body["spec"]["securityContext"] = {
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "runAsNonRoot": True,
        "fsGroup": 65532,
    }
    body["spec"]["containers"][0]["securityContext"] = {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
    }
    assert kube.run_to_completion(core, namespace, body) == "Succeeded"


def test_failing_liveness_probe_restarts_container(core, namespace):
    body = kube.pod(
        "flaky",
        ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 600"],
        restart="Always",
        volumes=[{"name": "tmp", "emptyDir": {}}],
        mounts=[{"name": "tmp", "mountPath": "/tmp"}],
    )
    body["spec"]["containers"][0]["livenessProbe"] = {
        "exec": {"command": ["test", "-f", "/tmp/alive"]},
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    core.create_namespaced_pod(namespace, body)

    def restarted() -> int:
        statuses = core.read_namespaced_pod("flaky", namespace).status.container_statuses
        return int(statuses[0].restart_count) if statuses else 0

    assert (
        waiting.until("the container to be restarted by its liveness probe", restarted, timeout=30)
        >= 1
    )


def test_deleted_pod_gets_sigterm_and_its_grace_period(core, namespace, tmp_path: Path):
    tmp_path.chmod(0o777)
    script = f"trap 'echo graceful > {tmp_path}/out/bye; exit 0' TERM; sleep 600 & wait"
    body = kube.pod(
        "polite",
        ["sh", "-c", script],
        restart="Always",
        volumes=[{"name": "out", "hostPath": {"path": str(tmp_path)}}],
        mounts=[{"name": "out", "mountPath": str(tmp_path / "out")}],
    )
    core.create_namespaced_pod(namespace, body)
    kube.wait_phase(core, namespace, "polite", {"Running"})
    core.delete_namespaced_pod("polite", namespace, grace_period_seconds=5)
    waiting.until(
        "the pod object to be removed after termination",
        lambda: (
            not core.list_namespaced_pod(namespace, field_selector="metadata.name=polite").items
        ),
        timeout=30,
    )
    assert (tmp_path / "bye").read_text().strip() == "graceful"


def test_updated_secret_reaches_running_pod(core, namespace):
    core.create_namespaced_secret(namespace, kube.secret("rotating", token="v1"))
    # The pod itself waits (bounded by the test's deadline) for the new value to appear.
    body = kube.pod(
        "watcher",
        ["sh", "-c", 'until [ "$(cat /s/token)" = v2 ]; do sleep 0.2; done'],
        volumes=[{"name": "s", "secret": {"secretName": "rotating"}}],
        mounts=[{"name": "s", "mountPath": "/s"}],
    )
    core.create_namespaced_pod(namespace, body)
    kube.wait_phase(core, namespace, "watcher", {"Running"})
    core.patch_namespaced_secret("rotating", namespace, {"stringData": {"token": "v2"}})
    done = kube.wait_phase(core, namespace, "watcher", {"Succeeded", "Failed"}, timeout=45)
    assert done.status.phase == "Succeeded"


def test_logs_command_shows_container_output(testbed, core, namespace):
    body = kube.pod("talker", ["sh", "-c", "echo hello from the pod"])
    assert kube.run_to_completion(core, namespace, body) == "Succeeded"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "gitquorum-testbed"),
            "--root",
            str(testbed.layout.root),
            "logs",
            "talker",
            "-n",
            namespace,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from the pod\n"


def test_init_container_runs_to_completion_before_main(core, namespace):
    body = kube.pod(
        "staged",
        ["sh", "-c", "grep -qx prepared /work/state"],
        volumes=[{"name": "work", "emptyDir": {}}],
        mounts=[{"name": "work", "mountPath": "/work"}],
    )
    body["spec"]["initContainers"] = [
        {
            "name": "prepare",
            "image": "testbed/python",
            "command": ["sh", "-c", "echo prepared > /work/state"],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}],
        }
    ]
    assert kube.run_to_completion(core, namespace, body) == "Succeeded"
    status = core.read_namespaced_pod("staged", namespace).status
    assert status.init_container_statuses[0].state.terminated.exit_code == 0


def test_failed_init_container_fails_pod_under_restart_never(core, namespace):
    body = kube.pod("doomed", ["true"])
    body["spec"]["initContainers"] = [
        {"name": "prepare", "image": "testbed/python", "command": ["false"]}
    ]
    assert kube.run_to_completion(core, namespace, body) == "Failed"
    main = core.read_namespaced_pod("doomed", namespace).status.container_statuses[0]
    assert main.state.running is None and main.state.terminated is None, (
        "the main container must never have started"
    )
