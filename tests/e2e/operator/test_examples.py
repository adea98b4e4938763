"""Every GitRepository example under examples/, applied as its comment says: Ready, then a
push with its account and a clone that returns the commit, through the repository's Service.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from tests.conftest import Kubectl
from tests.e2e.operator import nodes, repos

pytestmark = pytest.mark.e2e


def _served(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    example: str,
    name: str,
) -> repos.Repository:
    repos.apply(kubectl, namespace, repos.EXAMPLES / example)
    repository = repos.Repository(api_client, namespace, name)
    repository.wait_ready()
    repository.wait_serving(core)
    return repository


def _push_then_clone(repository: repos.Repository, core: client.CoreV1Api, tmp_path: Path) -> None:
    work = repos.Work(tmp_path / "work")
    sha = work.commit()
    work.push(repository.push_url(core))
    copy = repos.clone(repository.push_url(core), tmp_path / "clone")
    assert repos.commits(copy) == {sha}


def test_example_minimal_push_then_clone_returns_commit(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = _served(kubectl, api_client, core, namespace, "minimal.yaml", "minimal")
    _push_then_clone(repository, core, tmp_path)


def test_example_zones_one_replica_per_zone_and_serves(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = _served(kubectl, api_client, core, namespace, "zones.yaml", "zones")
    _push_then_clone(repository, core, tmp_path)
    status = repository.wait_in_sync(3)
    placed = [entry["node"] for entry in status["replicaStatuses"]]
    zones = {node: nodes.zone(core, node) for node in placed}
    assert len(set(zones.values())) == 3, f"replicas share a zone: {zones}"


def test_example_own_credentials_push_and_wrong_password_refused(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = _served(
        kubectl, api_client, core, namespace, "own-credentials.yaml", "own-credentials"
    )
    assert repository.status()["credentialsSecret"] == "own-credentials-account"
    assert repository.credentials(core) == ("alice", "change-me-please")
    generated = f"{repository.name}-credentials"
    assert generated not in {s.metadata.name for s in core.list_namespaced_secret(namespace).items}
    url = repository.url(core, user="alice", password="change-me-please")
    work = repos.Work(tmp_path / "work")
    first = work.commit()
    work.push(url)
    assert repos.commits(repos.clone(url, tmp_path / "clone")) == {first}

    work.commit()
    wrong = repository.url(core, user="alice", password="not-the-password")
    refused = work.push(wrong, check=False)
    assert refused.returncode != 0, "a push with a wrong password was accepted"
    assert repos.remote_refs(url)["refs/heads/main"] == first, "the refused push changed main"


def test_example_anonymous_read_clones_without_credentials_and_refuses_anonymous_push(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    repository = _served(
        kubectl, api_client, core, namespace, "anonymous-read.yaml", "anonymous-read"
    )
    work = repos.Work(tmp_path / "work")
    first = work.commit()
    work.push(repository.push_url(core))
    anonymous = repository.url(core)
    assert repos.commits(repos.clone(anonymous, tmp_path / "clone")) == {first}

    work.commit()
    refused = work.push(anonymous, check=False)
    assert refused.returncode != 0, "an anonymous push was accepted"
    user, _ = repository.credentials(core)
    wrong = work.push(repository.url(core, user=user, password="wrong"), check=False)
    assert wrong.returncode != 0, "a push with a wrong password was accepted"
    assert repos.remote_refs(anonymous)["refs/heads/main"] == first
