"""Flux's source-controller as a real GitOps client of a gitquorum repository (issue 12): it
fetches through the Service with a read-only deploy key over SSH, or a read-only token over
HTTP, and follows new commits when asked to reconcile (what ``flux reconcile source git``
does; notification-controller, the webhook path, cannot be built here), also while the
repository's leader is lost with its node.

The testbed has no cluster DNS, so Flux dials the Service's ClusterIP, and the known_hosts line
it checks names that address instead of the in-cluster name the status publishes.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gitquorum_testbed import cluster, flux
from tests import waiting
from tests.conftest import Kubectl
from tests.e2e.operator import nodes, repos

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(os.environ.get("GITQUORUM_KUBECONFIG")),
        reason="source-controller runs as a host binary, which only the testbed can do",
    ),
]

FLUX_VERSION = "v1"
FLUX_PLURAL = "gitrepositories"


@pytest.fixture(scope="module")
def source_controller(testbed: cluster.Testbed) -> None:
    flux.install(testbed)


class FluxSource:
    """A Flux GitRepository (source.toolkit.fluxcd.io/v1) and what its status says."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.name = name

    def create(self, *, url: str, secret: str) -> None:
        body = {
            "apiVersion": f"{flux.GROUP}/{FLUX_VERSION}",
            "kind": "GitRepository",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "url": url,
                "ref": {"branch": "main"},
                "secretRef": {"name": secret},
                "interval": "1h",
                "timeout": "60s",
            },
        }
        self.api.create_namespaced_custom_object(
            flux.GROUP, FLUX_VERSION, self.namespace, FLUX_PLURAL, body
        )

    def status(self) -> dict[str, Any]:
        body = self.api.get_namespaced_custom_object(
            flux.GROUP, FLUX_VERSION, self.namespace, FLUX_PLURAL, self.name
        )
        status: dict[str, Any] = body.get("status") or {}
        return status

    def wait_revision(self, sha: str, *, timeout: float = 120) -> dict[str, Any]:
        """Ready True with an artifact of ``main@sha1:<sha>``."""
        expected = f"main@sha1:{sha}"

        def fetched() -> dict[str, Any] | None:
            status = self.status()
            ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
            revision = (status.get("artifact") or {}).get("revision")
            if ready and ready[0].get("status") == "True" and revision == expected:
                return status
            return None

        return waiting.until(
            f"Flux GitRepository {self.namespace}/{self.name} Ready at {expected}",
            fetched,
            timeout=timeout,
            interval=1,
            seen=lambda: json.dumps(self.status(), indent=1),
        )

    def request_reconcile(self) -> None:
        """The annotation ``flux reconcile source git`` sets."""
        now = datetime.datetime.now(datetime.UTC).isoformat()
        patch = {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}}
        self.api.patch_namespaced_custom_object(
            flux.GROUP, FLUX_VERSION, self.namespace, FLUX_PLURAL, self.name, patch
        )


class Followed:
    """A 3-replica repository with one commit, and a Flux source at that commit over SSH."""

    def __init__(
        self,
        kubectl: Kubectl,
        api_client: client.ApiClient,
        core: client.CoreV1Api,
        namespace: str,
        tmp_path: Path,
    ) -> None:
        key, public = repos.ssh_key(tmp_path, "flux")
        spec = {"replicas": 3, "auth": {"deployKeys": [{"publicKey": public, "access": "read"}]}}
        self.repository = repos.serving(kubectl, api_client, core, namespace, "gitops", spec)
        self.work = repos.Work(tmp_path / "work")
        self.push_url = self.repository.push_url(core)
        self.first = self.work.commit()
        self.work.push(self.push_url)
        self.repository.wait_in_sync(3)
        status = self.repository.wait(
            "status.ssh published", lambda s: (s.get("ssh") or {}).get("knownHosts")
        )
        assert status["ssh"]["url"] == f"ssh://git@gitops.{namespace}.svc/gitops.git"
        # "<service name> <key type> <key>": the same key under the address Flux dials.
        _, key_type, host_key = status["ssh"]["knownHosts"].split()[:3]
        address = self.repository.address(core)
        repos.secret(
            core,
            namespace,
            "flux-ssh",
            {
                "identity": key.read_text(),
                "identity.pub": public + "\n",
                "known_hosts": f"{address} {key_type} {host_key}\n",
            },
        )
        self.source = FluxSource(api_client, namespace, "gitops")
        self.source.create(url=f"ssh://git@{address}:22/gitops.git", secret="flux-ssh")
        self.source.wait_revision(self.first)


def test_flux_follows_a_repository_over_ssh_with_a_read_only_deploy_key(
    source_controller: None,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    followed = Followed(kubectl, api_client, core, namespace, tmp_path)
    second = followed.work.commit()
    followed.work.push(followed.push_url)
    # Every replica has it, so whichever the Service picks serves the new commit.
    followed.repository.wait_in_sync(3)
    followed.source.request_reconcile()
    status = followed.source.wait_revision(second)
    assert status["artifact"]["revision"] == f"main@sha1:{second}"


def test_flux_follows_a_repository_through_the_loss_of_its_leaders_node(
    source_controller: None,
    testbed: cluster.Testbed,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    stopped: list[str],
    tmp_path: Path,
) -> None:
    followed = Followed(kubectl, api_client, core, namespace, tmp_path)
    before = followed.repository.wait_in_sync(3)
    leader = nodes.stop_leader(testbed, before, stopped)

    # The push that Flux must see is acknowledged by the replicas left, under a new leader.
    after_loss = followed.work.commit()
    waiting.until(
        f"a push acknowledged after stopping leader {leader['name']} on {leader['node']}",
        lambda: followed.work.push(followed.push_url, check=False, timeout=15).returncode == 0,
        timeout=120,
        interval=0.5,
        seen=followed.repository.describe,
    )
    status = followed.repository.wait(
        f"a new leader in a term after {before['term']}",
        lambda s: (
            s.get("leader") not in (None, "", leader["name"]) and s.get("term", 0) > before["term"]
        ),
        timeout=60,
    )
    followed.source.request_reconcile()
    flux_status = followed.source.wait_revision(after_loss, timeout=180)
    assert flux_status["artifact"]["revision"] == f"main@sha1:{after_loss}", repos.summary(status)


def test_flux_follows_a_repository_over_http_with_a_read_only_token(
    source_controller: None,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    token = {"username": "flux", "password": "a-read-only-token-for-flux"}
    repos.secret(core, namespace, "flux-token", token)
    spec = {"replicas": 3, "auth": {"tokens": [{"secret": "flux-token", "access": "read"}]}}
    repository = repos.serving(kubectl, api_client, core, namespace, "gitops", spec)
    work = repos.Work(tmp_path / "work")
    first = work.commit()
    work.push(repository.push_url(core))
    repository.wait_in_sync(3)

    # The token's own Secret has the keys Flux reads for basic auth.
    source = FluxSource(api_client, namespace, "gitops")
    source.create(url=repository.url(core), secret="flux-token")
    source.wait_revision(first)

    second = work.commit()
    work.push(repository.push_url(core))
    # Every replica has it, so whichever the Service picks serves the new commit.
    repository.wait_in_sync(3)
    source.request_reconcile()
    source.wait_revision(second)
