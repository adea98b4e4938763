"""Scheduled backups: when one is due, the GitRepositoryBackup that takes it, and whether the
schedule is kept up.

Times are UTC. A schedule missed while the operator was away is caught up by one backup, not
one per missed time: the newest due time is what a backup would hold anyway.
"""

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

from gitquorum.backup import schedule
from gitquorum.kube import api, backingup, backupspecs, names

# Catching up stops here; a schedule of every minute missed for a week has 10,080 times.
MAX_MISSED = 100_000
# A backup is overdue when the last success is older than this many schedule intervals.
OVERDUE_INTERVALS = 2


def due(
    expression: str,
    *,
    last: datetime.datetime | None,
    since: datetime.datetime,
    now: datetime.datetime,
) -> datetime.datetime | None:
    """The newest time of the schedule after ``last`` (or ``since``) and not after ``now``;
    None when none has come yet."""
    moment = schedule.next_after(expression, last or since)
    if moment > now:
        return None
    for _ in range(MAX_MISSED):
        following = schedule.next_after(expression, moment)
        if following > now:
            break
        moment = following
    return moment


def interval(expression: str, *, around: datetime.datetime) -> datetime.timedelta:
    first = schedule.next_after(expression, around)
    return schedule.next_after(expression, first) - first


def backup_name(repository: str, moment: datetime.datetime) -> str:
    # A name is at most 253 characters; the time takes 15.
    return f"{repository[:230]}-{moment.strftime('%Y%m%d%H%M%S')}"


def backup_manifest(repository: Mapping[str, Any], moment: datetime.datetime) -> dict[str, Any]:
    """The GitRepositoryBackup a scheduled time creates, owned by its repository (deleting
    the repository deletes these objects, never the backups in the store)."""
    metadata = repository["metadata"]
    return {
        "apiVersion": f"{names.GROUP}/{names.VERSION}",
        "kind": names.BACKUP_KIND,
        "metadata": {
            "name": backup_name(metadata["name"], moment),
            "namespace": metadata["namespace"],
            "labels": {names.REPOSITORY_LABEL: metadata["name"], backingup.SCHEDULED_LABEL: "true"},
            "ownerReferences": [
                {
                    "apiVersion": f"{names.GROUP}/{names.VERSION}",
                    "kind": names.KIND,
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                }
            ],
        },
        "spec": {"repository": metadata["name"]},
    }


def condition(
    spec: backupspecs.BackupSpec,
    summary: Mapping[str, Any],
    *,
    created: datetime.datetime,
    now: datetime.datetime,
) -> tuple[str, bool, str, str] | None:
    """The BackupsUpToDate condition: False when the newest backup failed or, with a
    schedule, when no backup succeeded for two of its intervals."""
    success = backupspecs.parse_time(summary.get("lastSuccessTime"))
    if summary.get("lastFailedBackup"):
        return (
            "BackupsUpToDate",
            False,
            "BackupFailed",
            f"backup {summary['lastFailedBackup']} failed: {summary.get('lastFailure', '')}",
        )
    if spec.schedule is not None and spec.schedule_problem() is None:
        limit = OVERDUE_INTERVALS * interval(spec.schedule, around=now)
        reference = success or created
        if now - reference > limit + datetime.timedelta(minutes=5):
            since = f"since {backupspecs.rfc3339(success)}" if success else "yet"
            return (
                "BackupsUpToDate",
                False,
                "BackupOverdue",
                f"no backup succeeded {since}: the schedule {spec.schedule!r} asks for one "
                f"every {interval(spec.schedule, around=now)}",
            )
    if success is None:
        return None
    return (
        "BackupsUpToDate",
        True,
        "BackupSucceeded",
        f"backup {summary.get('lastSuccessfulBackup')} completed at {backupspecs.rfc3339(success)}",
    )


async def tick(kube: api.Api, repository: Mapping[str, Any]) -> str | None:
    """Creates the GitRepositoryBackup of a schedule time that has come; its name, or None."""
    spec = backupspecs.BackupSpec.from_spec(repository.get("spec") or {})
    if spec is None or spec.schedule is None or spec.schedule_problem() is not None:
        return None
    metadata = repository["metadata"]
    summary = (repository.get("status") or {}).get("backup") or {}
    now = datetime.datetime.now(datetime.UTC)
    created = backupspecs.parse_time(metadata.get("creationTimestamp")) or now
    moment = due(
        spec.schedule,
        last=backupspecs.parse_time(summary.get("lastScheduleTime")),
        since=created,
        now=now,
    )
    if moment is None:
        return None
    manifest = backup_manifest(repository, moment)
    await asyncio.to_thread(kube.create_backup, metadata["namespace"], manifest)
    # Recorded after the object exists: a crash in between creates the same name again,
    # which exists, rather than skipping a backup.
    await asyncio.to_thread(
        kube.patch_status,
        metadata["namespace"],
        metadata["name"],
        {
            "backup": {
                "lastScheduleTime": backupspecs.rfc3339(moment),
                "lastBackup": manifest["metadata"]["name"],
                "nextScheduleTime": backupspecs.rfc3339(schedule.next_after(spec.schedule, now)),
            }
        },
        plural=names.PLURAL,
    )
    return str(manifest["metadata"]["name"])
