"""Backups to the testbed's real object store (versitygw) and restores from them (issue 11).

Every test pushes with the real git CLI through the repository's Service, backs up with a
GitRepositoryBackup, and restores into a new GitRepository with ``spec.bootstrap.fromBackup``:
what matters is that the restored refs are exactly those of the backup, whatever happened
to the source since.
"""

from __future__ import annotations

import base64
import datetime
import functools
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from gitquorum.backup import layout, manifests
from gitquorum.replication import checksum
from gitquorum_testbed import cluster, objectstore
from tests import waiting
from tests.conftest import Kubectl
from tests.e2e.operator import repos

pytestmark = pytest.mark.e2e

BACKUPS = "gitrepositorybackups"
CREDENTIALS = "store-credentials"


def _store(testbed: cluster.Testbed) -> objectstore.Endpoint:
    return testbed.object_store()


def _credentials(
    core: client.CoreV1Api,
    namespace: str,
    store: objectstore.Endpoint,
    *,
    secret: str | None = None,
) -> None:
    data = {
        "AWS_ACCESS_KEY_ID": store.access_key,
        "AWS_SECRET_ACCESS_KEY": secret or store.secret_key,
    }
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=CREDENTIALS if secret is None else "wrong-credentials"),
        string_data=data,
    )
    core.create_namespaced_secret(namespace, body)


def _object_store(store: objectstore.Endpoint, **changes: str) -> dict[str, str]:
    return {
        "endpoint": store.endpoint,
        "bucket": store.bucket,
        "path": "e2e",
        "credentialsSecret": CREDENTIALS,
        **changes,
    }


def _source(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    backup: Mapping[str, Any],
    *,
    replicas: int = 3,
) -> repos.Repository:
    repos.apply(kubectl, namespace, repos.manifest(name, {"replicas": replicas, "backup": backup}))
    repository = repos.Repository(api_client, namespace, name)
    repository.wait_ready()
    repository.wait_in_sync(replicas)
    repository.wait_serving(core)
    return repository


def _back_up(
    api_client: client.ApiClient,
    namespace: str,
    repository: str,
    name: str,
    *,
    timeout: float = 120,
) -> dict[str, Any]:
    """Creates a GitRepositoryBackup and returns its status once it ended."""
    custom = client.CustomObjectsApi(api_client)
    body = {
        "apiVersion": f"{repos.GROUP}/{repos.VERSION}",
        "kind": "GitRepositoryBackup",
        "metadata": {"name": name},
        "spec": {"repository": repository},
    }
    custom.create_namespaced_custom_object(repos.GROUP, repos.VERSION, namespace, BACKUPS, body)
    return _ended(api_client, namespace, name, timeout=timeout)


def _ended(
    api_client: client.ApiClient, namespace: str, name: str, *, timeout: float = 120
) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api_client)

    def status() -> dict[str, Any]:
        found: dict[str, Any] = (
            custom.get_namespaced_custom_object(
                repos.GROUP, repos.VERSION, namespace, BACKUPS, name
            ).get("status")
            or {}
        )
        return found

    ended: dict[str, Any] = waiting.until(
        f"GitRepositoryBackup {namespace}/{name} to complete or fail",
        lambda: (lambda s: s if s.get("phase") in ("Completed", "Failed") else None)(status()),
        timeout=timeout,
        seen=status,
    )
    return ended


def _restore(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    source: Mapping[str, Any],
    *,
    replicas: int = 3,
) -> repos.Repository:
    spec = {"replicas": replicas, "bootstrap": {"fromBackup": dict(source)}}
    repos.apply(kubectl, namespace, repos.manifest(name, spec))
    repository = repos.Repository(api_client, namespace, name)
    repository.wait(
        "condition Restored True",
        lambda status: repository.condition("Restored", status).get("status") == "True",
        timeout=180,
    )
    repository.wait_ready()
    repository.wait_serving(core)
    return repository


def _reached(moment: datetime.datetime) -> bool:
    return datetime.datetime.now(datetime.UTC) >= moment


def _refs(repository: repos.Repository, core: client.CoreV1Api) -> dict[str, str]:
    """The refs as the repository advertises them, without HEAD and peeled tags."""
    refs = repos.remote_refs(repository.push_url(core))
    return {ref: oid for ref, oid in refs.items() if ref != "HEAD" and not ref.endswith("^{}")}


def _manifest(store: objectstore.Endpoint, key: str) -> manifests.Manifest:
    body = store.client().get_object(Bucket=store.bucket, Key=key)["Body"].read()
    return manifests.from_json(body)


def test_backup_restore_recovers_history_destroyed_by_force_push_and_branch_deletion(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    testbed: cluster.Testbed,
    namespace: str,
    tmp_path: Path,
) -> None:
    store = _store(testbed)
    _credentials(core, namespace, store)
    source = _source(
        kubectl, api_client, core, namespace, "source", {"objectStore": _object_store(store)}
    )
    url = source.push_url(core)
    work = repos.Work(tmp_path / "work")
    for _ in range(3):
        work.commit()
    work.push(url)
    repos.git("push", "-q", url, "main:refs/heads/feature", cwd=work.path)
    repos.git("tag", "-a", "v1", "-m", "release 1", cwd=work.path)
    repos.git("push", "-q", url, "v1", cwd=work.path)
    source.wait_in_sync(3)
    before = _refs(source, core)

    status = _back_up(api_client, namespace, "source", "before-the-mistake")
    assert status["phase"] == "Completed", status
    assert status["kind"] == "full" and status["refs"] == len(before), status
    leader = source.status()["leader"]
    assert status["replica"] != leader, f"taken from the leader {leader}: {status}"
    manifest = _manifest(store, status["manifest"])
    assert dict(manifest.refs) == before

    # The mistake: history replaced by an unrelated commit, a branch deleted.
    repos.git("checkout", "-q", "--orphan", "rewritten", cwd=work.path)
    work.commit("nothing of the past\n")
    repos.git("push", "-q", "--force", url, "rewritten:main", cwd=work.path)
    repos.git("push", "-q", url, ":refs/heads/feature", cwd=work.path)
    assert _refs(source, core) != before

    restored = _restore(
        kubectl, api_client, core, namespace, "restored", {"name": "before-the-mistake"}
    )
    restored.wait_in_sync(3)
    assert _refs(restored, core) == before
    copy = repos.clone(restored.push_url(core), tmp_path / "copy")
    repos.git("fsck", "--strict", cwd=copy)
    assert restored.status()["restore"]["backupId"] == manifest.id


def test_backup_incremental_chain_restores_and_before_picks_the_older(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    testbed: cluster.Testbed,
    namespace: str,
    tmp_path: Path,
) -> None:
    store = _store(testbed)
    _credentials(core, namespace, store)
    backup = {"objectStore": _object_store(store)}
    source = _source(kubectl, api_client, core, namespace, "chain", backup)
    url = source.push_url(core)
    work = repos.Work(tmp_path / "work")
    states, taken = [], []
    for index in range(3):
        for _ in range(5 if index == 0 else 2):
            # Incompressible content, so that the full backup is visibly larger.
            work.commit(base64.b64encode(os.urandom(100_000)).decode() if index == 0 else None)
        work.push(url)
        source.wait_in_sync(3)
        states.append(_refs(source, core))
        if taken:
            # A backup's time has whole seconds: the next one must not share the previous
            # one's second, or "before" could not tell them apart.
            next_second = layout.created_of(taken[-1]["backupId"]) + datetime.timedelta(seconds=1)
            waiting.until(
                "the clock past the previous backup's second",
                functools.partial(_reached, next_second),
                interval=0.05,
            )
        taken.append(_back_up(api_client, namespace, "chain", f"chain-{index}"))
    assert [s["phase"] for s in taken] == ["Completed"] * 3, taken
    assert [s["kind"] for s in taken] == ["full", "incremental", "incremental"], taken
    assert taken[1]["base"] == taken[0]["backupId"] and taken[2]["base"] == taken[1]["backupId"]
    assert taken[2]["size"] < taken[0]["size"] / 2, [s["size"] for s in taken]

    # The newest by name: its whole chain is fetched.
    newest = _restore(kubectl, api_client, core, namespace, "newest", {"name": "chain-2"})
    assert _refs(newest, core) == states[2]
    # From the object store alone, the newest at or before the second backup's time.
    older = _restore(
        kubectl,
        api_client,
        core,
        namespace,
        "older",
        {
            "objectStore": _object_store(store),
            "repository": "chain",
            "namespace": namespace,
            "before": layout.created_of(taken[1]["backupId"]).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        replicas=1,
    )
    assert _refs(older, core) == states[1]


def test_backup_during_concurrent_pushes_holds_one_committed_generation(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    testbed: cluster.Testbed,
    namespace: str,
    tmp_path: Path,
) -> None:
    store = _store(testbed)
    _credentials(core, namespace, store)
    source = _source(
        kubectl, api_client, core, namespace, "busy", {"objectStore": _object_store(store)}
    )
    url = source.push_url(core)
    work = repos.Work(tmp_path / "work")
    pushed: list[str] = []
    stop = threading.Event()

    def push_forever() -> None:
        while not stop.is_set() and len(pushed) < 200:
            sha = work.commit()
            work.push(url)
            pushed.append(sha)

    pusher = threading.Thread(target=push_forever)
    pusher.start()
    try:
        waiting.until("a few pushes before the backup", lambda: len(pushed) >= 3, timeout=60)
        status = _back_up(api_client, namespace, "busy", "while-busy")
    finally:
        stop.set()
        pusher.join(timeout=120)
    assert status["phase"] == "Completed", status
    manifest = _manifest(store, status["manifest"])
    # One client pushing one branch: push n is transaction n, so generation g holds the
    # g-th commit on main and nothing else.
    assert manifest.generation >= 3, manifest
    assert dict(manifest.refs) == {"refs/heads/main": pushed[manifest.generation - 1]}
    assert manifest.checksum == checksum.of(manifest.refs)
    assert len(pushed) > manifest.generation or stop.is_set()


def test_backup_with_wrong_credentials_or_unreachable_store_fails_clearly_and_changes_nothing(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    testbed: cluster.Testbed,
    namespace: str,
    tmp_path: Path,
) -> None:
    store = _store(testbed)
    _credentials(core, namespace, store, secret="not-the-secret")
    wrong = {"objectStore": _object_store(store, credentialsSecret="wrong-credentials")}
    source = _source(kubectl, api_client, core, namespace, "refused", wrong, replicas=1)
    work = repos.Work(tmp_path / "work")
    work.commit()
    work.push(source.push_url(core))
    prefix = f"e2e/{namespace}/refused/"

    def stored() -> list[str]:
        listed = store.client().list_objects_v2(Bucket=store.bucket, Prefix=prefix)
        return [item["Key"] for item in listed.get("Contents", [])]

    status = _back_up(api_client, namespace, "refused", "refused")
    assert status["phase"] == "Failed", status
    assert "refused the credentials" in status["error"], status
    assert store.secret_key not in status["error"]
    source.wait(
        "condition BackupsUpToDate False with reason BackupFailed",
        lambda s: source.condition("BackupsUpToDate", s).get("reason") == "BackupFailed",
    )
    # An endpoint nothing listens on (loopback inside the replica's own network namespace).
    kubectl(
        "patch",
        f"{repos.CRD}/refused",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"backup":{"objectStore":{"endpoint":"http://127.0.0.1:9"}}}}',
    )
    status = _back_up(api_client, namespace, "refused", "unreachable", timeout=180)
    assert status["phase"] == "Failed", status
    assert "cannot reach the object store" in status["error"], status
    assert stored() == []


def test_restore_from_corrupted_bundle_fails_and_repository_is_not_ready(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    testbed: cluster.Testbed,
    namespace: str,
    tmp_path: Path,
) -> None:
    store = _store(testbed)
    _credentials(core, namespace, store)
    source = _source(
        kubectl,
        api_client,
        core,
        namespace,
        "damaged",
        {"objectStore": _object_store(store)},
        replicas=1,
    )
    work = repos.Work(tmp_path / "work")
    work.commit("y" * 50_000)
    work.push(source.push_url(core))
    status = _back_up(api_client, namespace, "damaged", "to-corrupt")
    assert status["phase"] == "Completed", status
    manifest = _manifest(store, status["manifest"])
    assert manifest.bundle is not None
    s3 = store.client()
    data = bytearray(s3.get_object(Bucket=store.bucket, Key=manifest.bundle.key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=store.bucket, Key=manifest.bundle.key, Body=bytes(data))

    spec = {"replicas": 1, "bootstrap": {"fromBackup": {"name": "to-corrupt"}}}
    repos.apply(kubectl, namespace, repos.manifest("from-corrupt", spec))
    repository = repos.Repository(api_client, namespace, "from-corrupt")
    final = repository.wait(
        "condition Restored False with reason RestoreFailed",
        lambda s: repository.condition("Restored", s).get("reason") == "RestoreFailed",
        timeout=180,
    )
    assert "sha256" in final["restore"]["message"] or "corrupt" in final["restore"]["message"]
    assert repository.condition("Ready", final).get("status") == "False", final
    assert final["restore"]["phase"] == "Failed", final["restore"]
    assert _refs(repository, core) == {}


def test_scheduled_backups_run_and_retention_deletes_the_old_full_ones(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    testbed: cluster.Testbed,
    namespace: str,
    tmp_path: Path,
) -> None:
    store = _store(testbed)
    _credentials(core, namespace, store)
    backup = {
        "objectStore": _object_store(store),
        "schedule": "* * * * *",
        "maxIncrementals": 0,
        "retention": {"last": 1},
    }
    source = _source(kubectl, api_client, core, namespace, "scheduled", backup, replicas=1)
    work = repos.Work(tmp_path / "work")
    work.commit()
    work.push(source.push_url(core))
    custom = client.CustomObjectsApi(api_client)
    prefix = f"e2e/{namespace}/scheduled/"

    def completed() -> list[str]:
        items = custom.list_namespaced_custom_object(
            repos.GROUP, repos.VERSION, namespace, BACKUPS
        )["items"]
        return sorted(
            item["metadata"]["name"]
            for item in items
            if (item.get("status") or {}).get("phase") == "Completed"
        )

    def manifests_stored() -> list[str]:
        listed = store.client().list_objects_v2(Bucket=store.bucket, Prefix=prefix)
        return sorted(
            item["Key"] for item in listed.get("Contents", []) if item["Key"].endswith(".json")
        )

    first = waiting.until("a scheduled backup to complete", completed, timeout=150, seen=completed)
    waiting.until(
        "a second scheduled backup, and retention to delete the first",
        lambda: (lambda names: names if names and names != first else None)(completed()),
        timeout=150,
        seen=lambda: (completed(), manifests_stored()),
    )
    waiting.until(
        "one manifest left in the store (retention last: 1, every backup full)",
        lambda: len(manifests_stored()) == 1,
        timeout=60,
        seen=manifests_stored,
    )
    status = source.status()
    assert status["backup"]["lastSuccessfulBackup"] in completed(), status["backup"]
    assert source.condition("BackupsUpToDate", status).get("status") == "True", status
