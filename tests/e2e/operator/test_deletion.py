"""Deleting a GitRepository: reclaimPolicy Delete takes the volumes with it, Retain (the
default) keeps them for a GitRepository of the same name, which adopts them with their data."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests import waiting
from tests.conftest import Kubectl
from tests.e2e.operator import repos

pytestmark = pytest.mark.e2e


def _objects(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, list[str]]:
    selector = f"gitquorum.io/repository={name}"
    return {
        "pods": sorted(
            p.metadata.name
            for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        ),
        "claims": sorted(
            c.metadata.name
            for c in core.list_namespaced_persistent_volume_claim(
                namespace, label_selector=selector
            ).items
        ),
    }


def _serving_with_commit(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    spec: Mapping[str, Any],
    tmp_path: Path,
) -> tuple[repos.Repository, str]:
    repos.apply(kubectl, namespace, repos.manifest("deleted", spec))
    repository = repos.Repository(api_client, namespace, "deleted")
    repository.wait_ready()
    repository.wait_serving(core)
    work = repos.Work(tmp_path / "work")
    sha = work.commit()
    work.push(repository.push_url(core))
    repository.wait_in_sync(3)
    return repository, sha


def _delete(kubectl: Kubectl, namespace: str) -> None:
    kubectl("delete", f"{repos.CRD}/deleted", "-n", namespace, "--wait=true", "--timeout=60s")


def test_delete_reclaim_delete_removes_pods_and_volumes(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    _serving_with_commit(
        kubectl, api_client, core, namespace, {"replicas": 3, "reclaimPolicy": "Delete"}, tmp_path
    )
    before = _objects(core, namespace, "deleted")
    assert len(before["claims"]) == 3, before
    _delete(kubectl, namespace)
    waiting.until(
        "the pods and volumes of deleted GitRepository to be gone",
        lambda: _objects(core, namespace, "deleted") == {"pods": [], "claims": []},
        seen=lambda: _objects(core, namespace, "deleted"),
    )


def test_delete_reclaim_retain_keeps_volumes_and_same_name_adopts_them(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    spec = {"replicas": 3}  # reclaimPolicy Retain is the default
    repository, sha = _serving_with_commit(kubectl, api_client, core, namespace, spec, tmp_path)
    claims = _objects(core, namespace, "deleted")["claims"]
    assert len(claims) == 3, claims
    _delete(kubectl, namespace)
    waiting.until(
        "the pods of the deleted GitRepository to be gone",
        lambda: not _objects(core, namespace, "deleted")["pods"],
        seen=lambda: _objects(core, namespace, "deleted"),
    )
    assert _objects(core, namespace, "deleted")["claims"] == claims

    repos.apply(kubectl, namespace, repos.manifest("deleted", spec))
    status = repository.wait_in_sync(3, timeout=120)
    assert sorted(m["name"] for m in status["members"]) == claims, repos.summary(status)
    repository.wait_serving(core)
    copy = repos.clone(repository.push_url(core), tmp_path / "clone")
    assert repos.commits(copy) == {sha}
