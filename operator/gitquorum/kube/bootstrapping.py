"""A new repository restored from a backup (``spec.bootstrap.fromBackup``), in a pass.

Once the new repository has a leader that takes writes, the leader is asked to restore
(``POST /admin/restore``, ``replication/archiving.py``): it downloads the chain of bundles,
checks it and writes it through the quorum as the repository's first transaction. That can
take minutes, so it runs beside the passes; ``status.restore`` records each phase:

- Restoring: the leader works on it;
- Verifying: the leader wrote it; waiting until every replica holds that generation;
- Completed: every replica holds it (Ready from then on);
- Failed: why, in ``message``. An unreachable store is tried again after a minute; a
  backup that is missing or corrupt is not (the repository stays not Ready; delete it).
"""

import asyncio
import datetime
import json
import logging
from collections.abc import Mapping
from typing import Any

from gitquorum import errors
from gitquorum.backup import manifests
from gitquorum.backup.location import Location
from gitquorum.kube import backupspecs, context, names, planning
from gitquorum.replication import peerclient

log = logging.getLogger("gitquorum.kube.reconciler")

RESTORING, VERIFYING, COMPLETED, FAILED = "Restoring", "Verifying", "Completed", "Failed"
# A restore downloads and checks every bundle of a chain before it answers.
RESTORE_TIMEOUT = 3600.0
RETRY_AFTER = datetime.timedelta(seconds=60)
# The restore is the first transaction of an empty repository.
RESTORED_GENERATION = 1


class Bootstrapping(context.Context):
    """Restores a new repository from its backup and says when every replica holds it."""

    async def _bootstrap(
        self,
        body: context.Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        memory: context.Memory,
    ) -> None:
        source = backupspecs.RestoreSpec.from_spec(body.get("spec") or {})
        if source is None:
            return
        restore = (body.get("status") or {}).get("restore") or {}
        phase = restore.get("phase")
        if phase == COMPLETED or (memory.restoring is not None and not memory.restoring.done()):
            return
        if phase == VERIFYING:
            await self._verify(body, durable, observed, restore, memory)
            return
        if phase == FAILED and not _retry_due(restore):
            return
        leader = observed.get(durable.leader or "")
        if leader is None or leader.ip is None or leader.report is None:
            return
        if not leader.report.writable:
            return
        memory.restoring = asyncio.ensure_future(
            self._restore(body, source, f"http://{leader.ip}:{names.PEER_PORT}", memory)
        )

    async def _restore(
        self,
        body: context.Body,
        source: backupspecs.RestoreSpec,
        leader: str,
        memory: context.Memory,
    ) -> None:
        metadata = body["metadata"]
        where = f"{metadata['namespace']}/{metadata['name']}"
        try:
            message = await asyncio.to_thread(self._request, body, source)
        except (errors.ConfigError, errors.BackupError) as error:
            await self._record(body, {"phase": FAILED, "message": str(error)}, memory)
            return
        await self._record(
            body, {"phase": RESTORING, "message": "the leader restores the backup"}, memory
        )
        log.info(
            "%s: restoring from the backups of %s/%s",
            where,
            message["namespace"],
            message["repository"],
        )
        peers = peerclient.Peers(token=memory.admin_token, timeout=RESTORE_TIMEOUT)
        try:
            answer = await peers.call(leader, "/admin/restore", message)
        except peerclient.PeerError as error:
            await self._record(
                body,
                {
                    "phase": FAILED,
                    "message": f"the leader did not restore: {error}",
                    "retryAt": _later(),
                },
                memory,
            )
            return
        finally:
            await peers.close()
        if not answer.get("ok"):
            failure = {"phase": FAILED, "message": str(answer.get("reason", ""))}
            if answer.get("error") == "ObjectStoreError":
                failure["retryAt"] = _later()
            await self._record(body, failure, memory)
            return
        manifest = manifests.from_json(json.dumps(answer["manifest"]).encode())
        await self._record(
            body,
            {
                "phase": VERIFYING,
                "backupId": manifest.id,
                "refs": len(manifest.refs),
                "checksum": manifest.checksum,
                "message": f"backup {manifest.id} written; waiting for every replica to hold it",
            },
            memory,
        )

    def _request(self, body: context.Body, source: backupspecs.RestoreSpec) -> dict[str, Any]:
        """The restore message: where the backups are, with credentials, and which one."""
        namespace = body["metadata"]["namespace"]
        backup_id = source.backup_id
        if source.name is not None:
            backup = self.kube.read_backup(namespace, source.name)
            if backup is None:
                raise errors.ConfigError(
                    f"GitRepositoryBackup {namespace}/{source.name} does not exist"
                )
            status = backup.get("status") or {}
            if status.get("phase") != "Completed":
                raise errors.ConfigError(
                    f"GitRepositoryBackup {namespace}/{source.name} is not Completed "
                    f"(phase {status.get('phase') or 'Pending'})"
                )
            store = backupspecs.ObjectStoreSpec.from_body(status.get("objectStore") or {})
            origin, repository = namespace, str(backup["spec"]["repository"])
            backup_id = str(status["backupId"])
        else:
            assert source.object_store is not None and source.repository is not None
            store = source.object_store
            origin, repository = source.namespace or namespace, source.repository
        location: Location = store.location(
            self.kube.read_secret,
            namespace=namespace,
            repository_namespace=origin,
            repository=repository,
        )
        return {
            "location": location.to_json(),
            "namespace": origin,
            "repository": repository,
            "backup": backup_id,
            "before": backupspecs.rfc3339(source.before) if source.before else None,
        }

    async def _verify(
        self,
        body: context.Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        restore: Mapping[str, Any],
        memory: context.Memory,
    ) -> None:
        holding = [
            member.name
            for member in durable.members
            if (item := observed.get(member.name)) is not None
            and item.report is not None
            and item.report.generation >= RESTORED_GENERATION
            and item.in_sync
        ]
        if len(holding) < len(durable.members):
            return
        await self._record(
            body,
            {
                "phase": COMPLETED,
                "message": f"every replica holds backup {restore.get('backupId')} "
                f"({restore.get('refs')} refs)",
            },
            memory,
        )

    async def _record(
        self, body: context.Body, restore: dict[str, Any], memory: context.Memory
    ) -> None:
        metadata = body["metadata"]
        restore.setdefault("retryAt", None)
        await asyncio.to_thread(
            self.kube.patch_status,
            metadata["namespace"],
            metadata["name"],
            {"restore": restore},
            plural=names.PLURAL,
        )
        kind = "Warning" if restore["phase"] == FAILED else "Normal"
        reason = {
            RESTORING: "Restoring",
            VERIFYING: "RestoreWritten",
            COMPLETED: "Restored",
            FAILED: "RestoreFailed",
        }[restore["phase"]]
        self._event(body, memory, kind, reason, restore["message"], always=True)


def _later() -> str:
    return backupspecs.rfc3339(datetime.datetime.now(datetime.UTC) + RETRY_AFTER)


def _retry_due(restore: Mapping[str, Any]) -> bool:
    moment = backupspecs.parse_time(restore.get("retryAt"))
    return moment is not None and moment <= datetime.datetime.now(datetime.UTC)
