"""One GitRepositoryBackup, from Pending to Completed or Failed, and the retention after it.

The operator chooses where a backup is taken and records how it went; an in-sync follower
takes it (``replication/archiving.py``), so the leader's pushes never wait for a backup. The
backup id comes from the object's creation time and uid, so a handler retried after an
operator restart asks for the same backup, which the replica answers from the store if it is
already there, or joins while it still runs.

Failures the user must fix (no such repository, no ``spec.backup``, a Secret missing, the
store refusing the credentials or unreachable, a corrupt repository) fail the backup with
the sentence that says so; a repository without an in-sync follower for now is waited for.
"""

import asyncio
import dataclasses
import datetime
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from gitquorum import errors
from gitquorum.backup import layout, manifests, retention, stores
from gitquorum.kube import api, backupspecs, names
from gitquorum.kube.metrics import OperatorMetrics
from gitquorum.replication import peerclient

log = logging.getLogger(__name__)

PENDING, RUNNING, COMPLETED, FAILED = "Pending", "Running", "Completed", "Failed"
# A backup of a large repository takes minutes; the replica answers once it is complete.
BACKUP_TIMEOUT = 3600.0
# Transport failures (a replica restarting) are retried this many times before failing.
MAX_ATTEMPTS = 5
SCHEDULED_LABEL = "gitquorum.io/scheduled"


class Wait(Exception):
    """Nothing is wrong, but the backup cannot start yet; try again after ``delay``."""

    def __init__(self, reason: str, *, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


class Failed(Exception):
    """The backup failed for the reason given; it will not be retried."""


@dataclasses.dataclass(frozen=True)
class Source:
    """The replica asked to take the backup."""

    name: str
    peer_url: str
    leader: bool


Events = Callable[[Mapping[str, Any], str, str, str], None]
"""(object, type, reason, message): an event on a GitRepository or GitRepositoryBackup."""


class Backups:
    def __init__(self, kube: api.Api, *, events: Events, metrics: OperatorMetrics) -> None:
        self.kube = kube
        self._events = events
        self._metrics = metrics

    async def run(self, body: Mapping[str, Any]) -> None:
        """Takes the backup ``body`` asks for, unless it is done; raises Wait to be retried."""
        status = body.get("status") or {}
        if status.get("phase") in (COMPLETED, FAILED):
            return
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        try:
            manifest, source, store = await self._take(body, status)
        except Wait as wait:
            await self._patch(body, {"phase": PENDING, "message": str(wait)})
            raise
        except Failed as failure:
            await self._finish(body, {"phase": FAILED, "error": str(failure), "message": ""})
            self._metrics.backups.inc((namespace, body["spec"]["repository"], "failed"))
            self._events(body, "Warning", "BackupFailed", str(failure))
            log.warning("%s/%s: backup failed: %s", namespace, name, failure)
            return
        done = {
            "phase": COMPLETED,
            "backupId": manifest.id,
            "kind": manifest.kind,
            "base": manifest.base or "",
            "replica": source.name,
            "size": manifest.bundle.size if manifest.bundle else 0,
            "refs": len(manifest.refs),
            "generation": manifest.generation,
            "checksum": manifest.checksum,
            "objectStore": store.to_status(),
            "manifest": layout.manifest_key(
                layout.repository_prefix(store.path, namespace, body["spec"]["repository"]),
                manifest.id,
            ),
            "error": "",
            "message": "",
        }
        await self._finish(body, done)
        labels = (namespace, str(body["spec"]["repository"]))
        self._metrics.backups.inc((*labels, "completed"))
        self._metrics.backup_last_success.set(labels, _now().timestamp())
        self._metrics.backup_size.set(labels, float(manifest.bundle.size if manifest.bundle else 0))
        message = (
            f"{manifest.kind} backup {manifest.id} of generation {manifest.generation} "
            f"({len(manifest.refs)} refs, {done['size']} bytes) taken by {source.name}"
        )
        self._events(body, "Normal", "BackupCompleted", message)
        log.info("%s/%s: %s", namespace, name, message)

    async def _take(
        self, body: Mapping[str, Any], status: Mapping[str, Any]
    ) -> tuple[manifests.Manifest, Source, backupspecs.ObjectStoreSpec]:
        metadata = body["metadata"]
        namespace = metadata["namespace"]
        target = str((body.get("spec") or {}).get("repository", ""))
        repository = await asyncio.to_thread(self.kube.read_repository, namespace, target)
        if repository is None:
            raise Failed(f"GitRepository {namespace}/{target} does not exist")
        spec = backupspecs.BackupSpec.from_spec(repository.get("spec") or {})
        if spec is None:
            raise Failed(f"GitRepository {namespace}/{target} has no spec.backup.objectStore")
        try:
            location = spec.object_store.location(
                self.kube.read_secret,
                namespace=namespace,
                repository_namespace=namespace,
                repository=target,
            )
        except errors.ConfigError as error:
            raise Failed(str(error)) from error
        source = choose_source(repository)
        pod = (
            None
            if source is None
            else await asyncio.to_thread(self.kube.read_pod, namespace, source.name)
        )
        address = ((pod or {}).get("status") or {}).get("podIP")
        if source is None or not address:
            raise Wait(f"no in-sync follower of {target} to take the backup from", delay=10)
        source = dataclasses.replace(source, peer_url=f"http://{address}:{names.PEER_PORT}")
        attempts = int(status.get("attempts", 0)) + 1
        await self._patch(
            body,
            {
                "phase": RUNNING,
                "replica": source.name,
                "startedAt": status.get("startedAt") or backupspecs.rfc3339(_now()),
                "attempts": attempts,
                "message": f"replica {source.name} takes the backup",
                "objectStore": spec.object_store.to_status(),
            },
        )
        message = {
            "id": backup_id(body),
            "namespace": namespace,
            "repository": target,
            "location": location.to_json(),
            "full": (body.get("spec") or {}).get("method") == "Full",
            "maxChain": spec.max_incrementals,
            "allowLeader": source.leader,
        }
        answer = await self._ask(namespace, target, source, message, attempts=attempts)
        if not answer.get("ok"):
            raise Failed(str(answer.get("reason") or "the replica gave no reason"))
        try:
            manifest = manifests.from_json(json.dumps(answer["manifest"]).encode())
        except (KeyError, errors.BackupError) as error:
            raise Failed(f"the replica answered an unreadable manifest: {error}") from error
        return manifest, source, spec.object_store

    async def _ask(
        self,
        namespace: str,
        repository: str,
        source: Source,
        message: Mapping[str, Any],
        *,
        attempts: int,
    ) -> dict[str, Any]:
        secret = await asyncio.to_thread(
            self.kube.read_secret, namespace, names.replication_secret(repository)
        )
        token = (secret or {}).get("admin-token")
        if not token:
            raise Wait(f"the replication Secret of {repository} is not there yet", delay=10)
        peers = peerclient.Peers(token=token, timeout=BACKUP_TIMEOUT)
        try:
            return await peers.call(source.peer_url, "/admin/backup", message)
        except peerclient.PeerError as error:
            if attempts >= MAX_ATTEMPTS:
                raise Failed(
                    f"replica {source.name} did not take the backup in {attempts} attempts: {error}"
                ) from error
            raise Wait(
                f"replica {source.name} did not take the backup: {error}", delay=10
            ) from error
        finally:
            await peers.close()

    async def _finish(self, body: Mapping[str, Any], status: dict[str, Any]) -> None:
        status["completedAt"] = backupspecs.rfc3339(_now())
        await self._patch(body, status)
        await self._record_on_repository(body, status)

    async def _patch(self, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        await asyncio.to_thread(
            self.kube.patch_status,
            metadata["namespace"],
            metadata["name"],
            status,
            plural=names.BACKUP_PLURAL,
        )

    async def _record_on_repository(
        self, body: Mapping[str, Any], status: Mapping[str, Any]
    ) -> None:
        """The repository's ``status.backup`` says how its newest backup went."""
        metadata = body["metadata"]
        name = metadata["name"]
        if status["phase"] == COMPLETED:
            summary: dict[str, Any] = {
                "lastSuccessfulBackup": name,
                "lastSuccessTime": status["completedAt"],
                "lastFailedBackup": None,
                "lastFailure": None,
            }
        else:
            summary = {"lastFailedBackup": name, "lastFailure": status.get("error", "")}
        await asyncio.to_thread(
            self.kube.patch_status,
            metadata["namespace"],
            body["spec"]["repository"],
            {"backup": summary},
            plural=names.PLURAL,
        )

    async def prune(self, body: Mapping[str, Any]) -> None:
        """Applies the repository's retention after one of its scheduled backups completed."""
        metadata = body["metadata"]
        namespace, target = metadata["namespace"], body["spec"]["repository"]
        repository = await asyncio.to_thread(self.kube.read_repository, namespace, target)
        spec = backupspecs.BackupSpec.from_spec((repository or {}).get("spec") or {})
        if spec is None or spec.retention.keeps_everything:
            return
        location = spec.object_store.location(
            self.kube.read_secret,
            namespace=namespace,
            repository_namespace=namespace,
            repository=target,
        )
        store = stores.open_store(location)
        found = await asyncio.to_thread(store.list_manifests)
        doomed = retention.to_delete(found, spec.retention, now=_now())
        if not doomed:
            return
        for backup in sorted(doomed):
            await asyncio.to_thread(store.delete_backup, backup)
        for item in await asyncio.to_thread(self.kube.list_backups, namespace, target):
            if (item.get("status") or {}).get("backupId") in doomed:
                await asyncio.to_thread(
                    self.kube.delete_backup, namespace, item["metadata"]["name"]
                )
        message = (
            f"retention deleted {len(doomed)} of {len(found)} backups from the store: "
            f"{', '.join(sorted(doomed))}"
        )
        log.info("%s/%s: %s", namespace, target, message)
        if repository is not None:
            self._events(repository, "Normal", "BackupsPruned", message)


def choose_source(repository: Mapping[str, Any]) -> Source | None:
    """An in-sync follower; the leader only for a repository of one replica. The address is
    filled in from the replica's pod (``with_address``)."""
    status = repository.get("status") or {}
    candidates = [
        Source(entry["name"], "", leader=entry.get("name") == status.get("leader"))
        for entry in status.get("replicaStatuses") or ()
        if entry.get("state") == "InSync" and entry.get("name")
    ]
    followers = sorted((c for c in candidates if not c.leader), key=lambda c: c.name)
    if followers:
        return followers[0]
    leaders = [c for c in candidates if c.leader]
    if leaders and len(status.get("members") or ()) == 1:
        return leaders[0]
    return None


def backup_id(body: Mapping[str, Any]) -> str:
    """The id in the store: the object's creation time, and its uid for uniqueness."""
    metadata = body["metadata"]
    created = backupspecs.parse_time(metadata.get("creationTimestamp")) or _now()
    return layout.new_backup_id(created, metadata["uid"].replace("-", "")[:8])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
