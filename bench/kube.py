"""The testbed as the operator benchmark uses it: API clients, namespaces, polls, a git remote.

Everything goes through the testbed's API server, and git traffic through a repository's
Service ClusterIP, as a user in the cluster would reach it; nothing here leaves the machine.
"""

import base64
import contextlib
import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from kubernetes import client, config

from gitquorum_testbed import binaries, cluster, install

GROUP, VERSION, PLURAL = "gitquorum.io", "v1alpha1", "gitrepositories"
READY_TIMEOUT = 180.0
METRICS_ATTEMPTS = 5
OPERATOR = "app.kubernetes.io/name=gitquorum-operator"
"""Label selector of the operator's pods, as the chart sets it."""
NAMESPACE_GONE_SECONDS = 600.0
"""Deleting a namespace of 300 repositories waits on the operator's finalizer for each."""
T = TypeVar("T")
Body = dict[str, Any]


class Kube:
    """Clients of the testbed's API server, sized for a few dozen threads."""

    def __init__(self, bed: cluster.Testbed) -> None:
        self.bed = bed
        configuration = client.Configuration()
        config.load_kube_config(str(bed.layout.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = 64
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.policy = client.PolicyV1Api(self.api_client)
        self.networking = client.NetworkingV1Api(self.api_client)
        self.kubectl = [str(binaries.kubectl()), "--kubeconfig", str(bed.layout.kubeconfig)]

    # -- namespaces --------------------------------------------------------------------------

    @contextlib.contextmanager
    def namespace(self, prefix: str) -> Iterator[str]:
        """A fresh namespace, deleted (and waited for) on the way out."""
        name = f"bench-{prefix}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": name}})
        # Pods are refused until the service-account controller has made the default account.
        wait(
            f"the default ServiceAccount of {name}",
            lambda: self.core.read_namespaced_service_account("default", name),
            timeout=60,
        )
        try:
            yield name
        finally:
            self.delete_namespace(name)

    def delete_namespace(self, name: str) -> None:
        """Deletes the GitRepositories first, then the namespace, and waits until it is gone.

        An operator restricted to some namespaces (kopf with a namespace list) stops watching
        a namespace as soon as its deletion starts, and so never finalizes GitRepositories
        deleted with it: the namespace would stay Terminating.
        """
        started = time.monotonic()
        self.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, name, PLURAL)
        wait(
            f"the GitRepositories of {name} to be finalized and gone",
            lambda: (
                not self.custom.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL)["items"]
            ),
            timeout=NAMESPACE_GONE_SECONDS,
        )
        with contextlib.suppress(client.ApiException):
            self.core.delete_namespace(name)
        wait(
            f"namespace {name} to be gone",
            lambda: not self._exists(name),
            timeout=NAMESPACE_GONE_SECONDS,
        )
        print(f"     namespace {name} deleted in {time.monotonic() - started:.1f} s", flush=True)

    def _exists(self, namespace: str) -> bool:
        try:
            self.core.read_namespace(namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- GitRepository objects ---------------------------------------------------------------

    def apply(self, namespace: str, manifest: Body | list[Body]) -> None:
        """``kubectl apply`` of one object or several, as a user would do it."""
        documents = manifest if isinstance(manifest, list) else [manifest]
        text = "\n---\n".join(json.dumps(document) for document in documents)
        result = subprocess.run(
            [*self.kubectl, "apply", "-n", namespace, "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl apply failed: {result.stderr}")

    def create_ready(self, namespace: str, name: str = "bench") -> float:
        """Seconds from ``kubectl apply`` of a 3-replica GitRepository to its Ready condition."""
        started = time.monotonic()
        self.apply(namespace, repository_manifest(name))
        wait(
            f"GitRepository {namespace}/{name} Ready",
            lambda: condition(self.repository(namespace, name), "Ready") == "True",
            timeout=READY_TIMEOUT,
        )
        return time.monotonic() - started

    def repository(self, namespace: str, name: str) -> Body:
        return dict(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        )

    def clone_url(self, namespace: str, name: str) -> str:
        """The repository's URL through its Service, with the generated credentials in it."""
        status = self.repository(namespace, name)["status"]
        secret = self.core.read_namespaced_secret(status["credentialsSecret"], namespace)
        user, password = (
            base64.b64decode(secret.data[k]).decode() for k in ("username", "password")
        )
        ip = self.core.read_namespaced_service(name, namespace).spec.cluster_ip
        return f"http://{user}:{password}@{ip}/{name}.git"

    # -- the operator ------------------------------------------------------------------------

    def restart_operator(self) -> None:
        """A fresh operator process, so that its peak memory is this run's; waits until it leads."""
        deployment = f"deployment/{install.RELEASE}"
        for action in (("restart",), ("status", "--timeout=180s")):
            result = subprocess.run(
                [*self.kubectl, "rollout", *action, deployment, "-n", install.NAMESPACE],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"kubectl rollout {action[0]} failed: {result.stderr}")
        # The old pod answers /metrics while it terminates: wait until it has gone.
        wait(
            "the old operator pod to be gone",
            lambda: len(self._operator_pods()) == 1,
            timeout=120,
            interval=1.0,
        )
        wait(
            "the restarted operator to hold its Lease",
            lambda: self.operator_metrics().get("gitquorum_operator_leading") == 1.0,
            timeout=60,
            interval=1.0,
        )

    def _operator_pods(self) -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(install.NAMESPACE, label_selector=OPERATOR).items)

    def operator_metrics(self) -> dict[str, float]:
        """The operator's /metrics, from its pod's address, retried a few times.

        The pod rather than the metrics Service: under load the pod may briefly fail its
        readiness probe, and the Service then has no endpoint to forward to.
        """
        return self.operator_get("/metrics", read_metrics)

    def operator_get(self, path: str, read: Callable[[str], T]) -> T:
        """``read`` of the operator's metrics port at ``path``, retried a few times."""
        for attempt in range(METRICS_ATTEMPTS):
            running = [
                p.status.pod_ip
                for p in self._operator_pods()
                if p.status.phase == "Running" and not p.metadata.deletion_timestamp
            ]
            try:
                return read(f"http://{running[0]}:8080{path}")
            except (OSError, IndexError) as error:
                if attempt == METRICS_ATTEMPTS - 1:
                    raise OSError(f"the operator's {path} did not answer: {error!r}") from error
                time.sleep(1.0)
        raise AssertionError("unreachable")


def repository_manifest(name: str, spec: Body | None = None) -> Body:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GitRepository",
        "metadata": {"name": name},
        "spec": {"replicas": 3, **(spec or {})},
    }


def condition(body: Body, kind: str) -> str:
    conditions = (body.get("status") or {}).get("conditions") or ()
    return next((str(c.get("status")) for c in conditions if c.get("type") == kind), "")


def read_metrics(url: str) -> dict[str, float]:
    # No proxy: the address is a ClusterIP of the testbed, reached directly from the host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            samples[name] = float(value)
    return samples


def wait(what: str, check: Callable[[], T | None], *, timeout: float, interval: float = 0.2) -> T:
    """``check()``'s first truthy result, polled every ``interval``; fails with the last seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
        except client.ApiException as exc:
            last = f"API {exc.status} {exc.reason}"
        except OSError as exc:  # a /metrics scrape or a git remote not answering yet
            last = repr(exc)
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise RuntimeError(f"no {what} within {timeout:.0f} s; last seen: {last!r}")
        time.sleep(interval)


def git_env(home: str) -> dict[str, str]:
    """git's environment for pushes to the testbed: no proxy, no prompt, a private HOME."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return {
        **env,
        "HOME": home,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "Bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
