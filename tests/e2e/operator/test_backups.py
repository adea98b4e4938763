"""Backups to the testbed's real object store (versitygw) and restores from them (issue 11).

Every test pushes with the real git CLI through the repository's Service, backs up with a
GitRepositoryBackup, and restores into a new GitRepository with ``spec.bootstrap.fromBackup``:
what matters is that the restored refs are exactly those of the backup, whatever happened
to the source since.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import functools
import os
import threading
from collections.abc import Iterator, Mapping
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
WRONG_CREDENTIALS = "wrong-credentials"


@dataclasses.dataclass(frozen=True)
class Site:
    """A test's namespace with the testbed's object store and a Secret of its credentials
    (and one with a wrong secret key), and what the tests do there."""

    kubectl: Kubectl
    api: client.ApiClient
    core: client.CoreV1Api
    namespace: str
    store: objectstore.Endpoint
    work: Path

    def object_store(self, **changes: str) -> dict[str, str]:
        """``spec.backup.objectStore`` naming the testbed's store."""
        return {
            "endpoint": self.store.endpoint,
            "bucket": self.store.bucket,
            "path": "e2e",
            "credentialsSecret": CREDENTIALS,
            **changes,
        }

    def source(
        self, name: str, backup: Mapping[str, Any] | None = None, *, replicas: int = 3
    ) -> repos.Repository:
        """A repository with ``spec.backup`` (the store alone by default), serving."""
        spec = {"replicas": replicas, "backup": backup or {"objectStore": self.object_store()}}
        repos.apply(self.kubectl, self.namespace, repos.manifest(name, spec))
        repository = repos.Repository(self.api, self.namespace, name)
        repository.wait_ready()
        repository.wait_in_sync(replicas)
        repository.wait_serving(self.core)
        return repository

    def pushed(self, repository: repos.Repository, *texts: str | None) -> repos.Work:
        """A clone that pushed one commit per text to the repository's main."""
        work = repos.Work(self.work / f"work-{repository.name}")
        for text in texts:
            work.commit(text)
        work.push(repository.push_url(self.core))
        return work

    def back_up(self, repository: str, name: str, *, timeout: float = 120) -> dict[str, Any]:
        """Creates a GitRepositoryBackup and returns its status once it ended."""
        body = {
            "apiVersion": f"{repos.GROUP}/{repos.VERSION}",
            "kind": "GitRepositoryBackup",
            "metadata": {"name": name},
            "spec": {"repository": repository},
        }
        self._custom().create_namespaced_custom_object(
            repos.GROUP, repos.VERSION, self.namespace, BACKUPS, body
        )
        ended: dict[str, Any] = waiting.until(
            f"GitRepositoryBackup {self.namespace}/{name} to complete or fail",
            lambda: (lambda s: s if s.get("phase") in ("Completed", "Failed") else None)(
                self.backup_status(name)
            ),
            timeout=timeout,
            seen=lambda: self.backup_status(name),
        )
        return ended

    def backup_status(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = (
            self._custom()
            .get_namespaced_custom_object(repos.GROUP, repos.VERSION, self.namespace, BACKUPS, name)
            .get("status")
            or {}
        )
        return found

    def completed_backups(self) -> list[str]:
        items = self._custom().list_namespaced_custom_object(
            repos.GROUP, repos.VERSION, self.namespace, BACKUPS
        )["items"]
        return sorted(
            item["metadata"]["name"]
            for item in items
            if (item.get("status") or {}).get("phase") == "Completed"
        )

    def created(self, name: str, source: Mapping[str, Any], *, replicas: int) -> repos.Repository:
        """A new repository bootstrapped from ``source`` (``fromBackup``), not awaited."""
        spec = {"replicas": replicas, "bootstrap": {"fromBackup": dict(source)}}
        repos.apply(self.kubectl, self.namespace, repos.manifest(name, spec))
        return repos.Repository(self.api, self.namespace, name)

    def restored(
        self, name: str, source: Mapping[str, Any], *, replicas: int = 3
    ) -> repos.Repository:
        """A new repository restored from ``source``, Ready and serving."""
        repository = self.created(name, source, replicas=replicas)
        repository.wait(
            "condition Restored True",
            lambda status: repository.condition("Restored", status).get("status") == "True",
            timeout=180,
        )
        repository.wait_ready()
        repository.wait_serving(self.core)
        return repository

    def refs(self, repository: repos.Repository) -> dict[str, str]:
        """The refs as the repository advertises them, without HEAD and peeled tags."""
        refs = repos.remote_refs(repository.push_url(self.core))
        return {ref: oid for ref, oid in refs.items() if ref != "HEAD" and not ref.endswith("^{}")}

    def manifest(self, key: str) -> manifests.Manifest:
        body = self.store.client().get_object(Bucket=self.store.bucket, Key=key)["Body"].read()
        return manifests.from_json(body)

    def stored(self, repository: str) -> list[str]:
        """The keys under a repository's prefix in the store."""
        prefix = f"e2e/{self.namespace}/{repository}/"
        listed = self.store.client().list_objects_v2(Bucket=self.store.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)


@pytest.fixture
def site(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    testbed: cluster.Testbed,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Site]:
    store = testbed.object_store()
    for name, secret in ((CREDENTIALS, store.secret_key), (WRONG_CREDENTIALS, "not-the-secret")):
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            string_data={"AWS_ACCESS_KEY_ID": store.access_key, "AWS_SECRET_ACCESS_KEY": secret},
        )
        core.create_namespaced_secret(namespace, body)
    yield Site(kubectl, api_client, core, namespace, store, tmp_path)


def _reached(moment: datetime.datetime) -> bool:
    return datetime.datetime.now(datetime.UTC) >= moment


def test_backup_restore_recovers_history_destroyed_by_force_push_and_branch_deletion(
    site: Site, tmp_path: Path
) -> None:
    source = site.source("source")
    url = source.push_url(site.core)
    work = site.pushed(source, None, None, None)
    repos.git("push", "-q", url, "main:refs/heads/feature", cwd=work.path)
    repos.git("tag", "-a", "v1", "-m", "release 1", cwd=work.path)
    repos.git("push", "-q", url, "v1", cwd=work.path)
    source.wait_in_sync(3)
    before = site.refs(source)

    status = site.back_up("source", "before-the-mistake")
    assert status["phase"] == "Completed", status
    assert status["kind"] == "full" and status["refs"] == len(before), status
    leader = source.status()["leader"]
    assert status["replica"] != leader, f"taken from the leader {leader}: {status}"
    manifest = site.manifest(status["manifest"])
    assert dict(manifest.refs) == before

    # The mistake: history replaced by an unrelated commit, a branch deleted.
    repos.git("checkout", "-q", "--orphan", "rewritten", cwd=work.path)
    work.commit("nothing of the past\n")
    repos.git("push", "-q", "--force", url, "rewritten:main", cwd=work.path)
    repos.git("push", "-q", url, ":refs/heads/feature", cwd=work.path)
    assert site.refs(source) != before

    restored = site.restored("restored", {"name": "before-the-mistake"})
    restored.wait_in_sync(3)
    assert site.refs(restored) == before
    copy = repos.clone(restored.push_url(site.core), tmp_path / "copy")
    repos.git("fsck", "--strict", cwd=copy)
    assert restored.status()["restore"]["backupId"] == manifest.id


def test_backup_incremental_chain_restores_and_before_picks_the_older(site: Site) -> None:
    source = site.source("chain")
    # Incompressible content, so that the full backup is visibly larger.
    work = site.pushed(source, *(base64.b64encode(os.urandom(100_000)).decode() for _ in range(5)))
    states, taken = [], []
    for index in range(3):
        if index:
            work.commit()
            work.commit()
            work.push(source.push_url(site.core))
            # A backup's time has whole seconds: the next one must not share the previous
            # one's second, or "before" could not tell them apart.
            next_second = layout.created_of(taken[-1]["backupId"]) + datetime.timedelta(seconds=1)
            waiting.until(
                "the clock past the previous backup's second",
                functools.partial(_reached, next_second),
                interval=0.05,
            )
        source.wait_in_sync(3)
        states.append(site.refs(source))
        taken.append(site.back_up("chain", f"chain-{index}"))
    assert [s["phase"] for s in taken] == ["Completed"] * 3, taken
    assert [s["kind"] for s in taken] == ["full", "incremental", "incremental"], taken
    assert taken[1]["base"] == taken[0]["backupId"] and taken[2]["base"] == taken[1]["backupId"]
    assert taken[2]["size"] < taken[0]["size"] / 2, [s["size"] for s in taken]

    # The newest by name: its whole chain is fetched.
    newest = site.restored("newest", {"name": "chain-2"})
    assert site.refs(newest) == states[2]
    # From the object store alone, the newest at or before the second backup's time.
    second = layout.created_of(taken[1]["backupId"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    older = site.restored(
        "older",
        {
            "objectStore": site.object_store(),
            "repository": "chain",
            "namespace": site.namespace,
            "before": second,
        },
        replicas=1,
    )
    assert site.refs(older) == states[1]


def test_backup_during_concurrent_pushes_holds_one_committed_generation(site: Site) -> None:
    source = site.source("busy")
    url = source.push_url(site.core)
    work = repos.Work(site.work / "busy")
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
        status = site.back_up("busy", "while-busy")
    finally:
        stop.set()
        pusher.join(timeout=120)
    assert status["phase"] == "Completed", status
    manifest = site.manifest(status["manifest"])
    # One client pushing one branch: push n is transaction n, so generation g holds the
    # g-th commit on main and nothing else.
    assert manifest.generation >= 3, manifest
    assert dict(manifest.refs) == {"refs/heads/main": pushed[manifest.generation - 1]}
    assert manifest.checksum == checksum.of(manifest.refs)
    assert len(pushed) > manifest.generation or stop.is_set()


def test_backup_with_wrong_credentials_or_unreachable_store_fails_clearly_and_changes_nothing(
    site: Site,
) -> None:
    wrong = {"objectStore": site.object_store(credentialsSecret=WRONG_CREDENTIALS)}
    source = site.source("refused", wrong, replicas=1)
    site.pushed(source, None)

    status = site.back_up("refused", "refused")
    assert status["phase"] == "Failed", status
    assert "refused the credentials" in status["error"], status
    assert site.store.secret_key not in status["error"]
    source.wait(
        "condition BackupsUpToDate False with reason BackupFailed",
        lambda s: source.condition("BackupsUpToDate", s).get("reason") == "BackupFailed",
    )
    # An endpoint nothing listens on (loopback inside the replica's own network namespace).
    site.kubectl(
        "patch",
        f"{repos.CRD}/refused",
        "-n",
        site.namespace,
        "--type=merge",
        "-p",
        '{"spec":{"backup":{"objectStore":{"endpoint":"http://127.0.0.1:9"}}}}',
    )
    status = site.back_up("refused", "unreachable", timeout=180)
    assert status["phase"] == "Failed", status
    assert "cannot reach the object store" in status["error"], status
    assert site.stored("refused") == []


def test_restore_from_corrupted_bundle_fails_and_repository_is_not_ready(site: Site) -> None:
    source = site.source("damaged", replicas=1)
    site.pushed(source, "y" * 50_000)
    status = site.back_up("damaged", "to-corrupt")
    assert status["phase"] == "Completed", status
    manifest = site.manifest(status["manifest"])
    assert manifest.bundle is not None
    s3, bucket = site.store.client(), site.store.bucket
    data = bytearray(s3.get_object(Bucket=bucket, Key=manifest.bundle.key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=manifest.bundle.key, Body=bytes(data))

    repository = site.created("from-corrupt", {"name": "to-corrupt"}, replicas=1)
    final = repository.wait(
        "condition Restored False with reason RestoreFailed",
        lambda s: repository.condition("Restored", s).get("reason") == "RestoreFailed",
        timeout=180,
    )
    assert "sha256" in final["restore"]["message"] or "corrupt" in final["restore"]["message"]
    assert repository.condition("Ready", final).get("status") == "False", final
    assert final["restore"]["phase"] == "Failed", final["restore"]
    # It still serves (an empty repository): nothing of the corrupt backup reached it.
    repository.wait_serving(site.core)
    assert site.refs(repository) == {}


def test_scheduled_backups_run_and_retention_deletes_the_old_full_ones(site: Site) -> None:
    backup = {
        "objectStore": site.object_store(),
        "schedule": "* * * * *",
        "maxIncrementals": 0,
        "retention": {"last": 1},
    }
    source = site.source("scheduled", backup, replicas=1)
    site.pushed(source, None)

    def manifests_stored() -> list[str]:
        return [key for key in site.stored("scheduled") if key.endswith(".json")]

    first = waiting.until(
        "a scheduled backup to complete",
        site.completed_backups,
        timeout=150,
        seen=site.completed_backups,
    )
    waiting.until(
        "a second scheduled backup, and retention to delete the first",
        lambda: (lambda names: names if names and names != first else None)(
            site.completed_backups()
        ),
        timeout=150,
        seen=lambda: (site.completed_backups(), manifests_stored()),
    )
    waiting.until(
        "one manifest left in the store (retention last: 1, every backup full)",
        lambda: len(manifests_stored()) == 1,
        timeout=60,
        seen=manifests_stored,
    )
    status = source.status()
    assert status["backup"]["lastSuccessfulBackup"] in site.completed_backups(), status["backup"]
    assert source.condition("BackupsUpToDate", status).get("status") == "True", status
