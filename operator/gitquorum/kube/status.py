"""The GitRepository status a pass reports: derived from the durable part and what was seen.

Conditions follow the Kubernetes API conventions: each has a type, a status, a CamelCase
reason, a sentence for people, and keeps its lastTransitionTime while its status holds.
"""

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from gitquorum.kube import backupspecs, bootstrapping, names, planning, rolling, scheduling
from gitquorum.replication import decisions, reports


def derive(
    body: Mapping[str, Any],
    durable: planning.Durable,
    observed: Mapping[str, planning.Observed],
    *,
    replicas: int,
    credentials_secret: str,
    blocked: str | None,
    revision: str = "",
    update: rolling.Update | None = None,
) -> dict[str, Any]:
    """The whole status; ``blocked`` says why the last decision could not be carried out,
    ``revision`` is what replica pods are rendered at now, ``update`` the rolling update."""
    metadata = body["metadata"]
    repository, namespace = metadata["name"], metadata["namespace"]
    leader = observed.get(durable.leader or "")
    leader_report = leader.report if leader is not None else None
    members = []
    for member in durable.members:
        item = observed.get(member.name) or planning.Observed(member.name)
        entry: dict[str, Any] = {
            "name": member.name,
            "pod": member.name if item.pod else "",
            "node": item.node or "",
            "pvc": member.name if item.claim else "",
            "role": "" if item.report is None else item.report.role,
            "state": item.state,
            "voter": member.voter,
        }
        if item.report is not None:
            entry["generation"] = item.report.generation
            entry["checksum"] = item.report.checksum
        if item.pod:
            entry["revision"] = item.revision
        if item.cordoned:
            entry["message"] = item.cordoned
        elif item.unschedulable:
            entry["message"] = item.unschedulable
        members.append(entry)
    ready = sum(1 for member in durable.members if _ready(observed.get(member.name)))
    status: dict[str, Any] = {
        **durable.to_status(),
        "observedGeneration": metadata.get("generation", 0),
        "replicas": len(durable.members),
        "readyReplicas": ready,
        "selector": names.selector(repository),
        "url": names.clone_url(repository, namespace),
        "credentialsSecret": credentials_secret,
        "replicaStatuses": members,
        **revisions(durable, observed, revision),
    }
    if leader_report is not None:
        status["generation"] = leader_report.generation
        status["checksum"] = leader_report.checksum
    delivery = notifications(body, leader_report)
    if delivery is not None:
        status["notifications"] = delivery
    status["conditions"] = merge_conditions(
        (body.get("status") or {}).get("conditions") or [],
        [
            *restored(body, conditions(durable, observed, replicas=replicas, blocked=blocked)),
            updating(update or rolling.Update(rolling.Action.NONE, ""), revision),
            *backups(body),
            *delivered(delivery),
        ],
        generation=int(metadata.get("generation", 0)),
    )
    return status


def notifications(
    body: Mapping[str, Any], leader: reports.ReplicaStatus | None
) -> list[dict[str, Any]] | None:
    """Per webhook of ``spec.notifications``, what the leader delivered and what failed."""
    wanted = [
        item.get("name")
        for item in (body.get("spec") or {}).get("notifications", {}).get("webhooks") or ()
    ]
    if not wanted:
        return None
    seen = ((leader.notifications or {}).get("webhooks") or {}) if leader is not None else {}
    found = []
    for name in wanted:
        entry = seen.get(name) or {}
        found.append(
            {
                "name": name,
                "deliveredGeneration": int(entry.get("delivered") or 0),
                "pending": int(entry.get("pending") or 0),
                "failures": int(entry.get("failures") or 0),
                "consecutiveFailures": int(entry.get("consecutiveFailures") or 0),
                "lastError": str(entry.get("lastError") or ""),
            }
        )
    return found


def delivered(delivery: list[dict[str, Any]] | None) -> list[tuple[str, bool, str, str]]:
    """NotificationsDelivered: False while a webhook fails (it is retried with back-off)."""
    if delivery is None:
        return []
    failing = [item for item in delivery if item["consecutiveFailures"]]
    if failing:
        first = failing[0]
        return [
            (
                "NotificationsDelivered",
                False,
                "WebhookFailing",
                f"webhook {first['name']} failed {first['consecutiveFailures']} time(s) in a "
                f"row ({first['pending']} pending): {first['lastError']}",
            )
        ]
    return [("NotificationsDelivered", True, "Delivered", "every webhook is up to date")]


def restored(
    body: Mapping[str, Any], current: list[tuple[str, bool, str, str]]
) -> list[tuple[str, bool, str, str]]:
    """With ``spec.bootstrap.fromBackup``: the Restored condition, and Ready only once it
    holds (clients must not take a half-restored repository for the backup)."""
    if backupspecs.RestoreSpec.from_spec(body.get("spec") or {}) is None:
        return current
    restore = (body.get("status") or {}).get("restore") or {}
    phase = restore.get("phase") or "Pending"
    message = restore.get("message") or "waiting for a leader to restore the backup"
    if phase == bootstrapping.COMPLETED:
        return [*current, ("Restored", True, "Restored", message)]
    reason = "RestoreFailed" if phase == bootstrapping.FAILED else f"Restore{phase}"
    gated = [
        ("Ready", False, reason, f"not restored yet: {message}")
        if kind == "Ready"
        else (kind, value, why, text)
        for kind, value, why, text in current
    ]
    return [*gated, ("Restored", False, reason, message)]


def backups(body: Mapping[str, Any]) -> list[tuple[str, bool, str, str]]:
    """BackupsUpToDate, with ``spec.backup``: a warning when backups fail or fall behind."""
    spec = backupspecs.BackupSpec.from_spec(body.get("spec") or {})
    if spec is None:
        return []
    problem = spec.schedule_problem()
    if problem is not None:
        return [("BackupsUpToDate", False, "ScheduleInvalid", problem)]
    now = datetime.datetime.now(datetime.UTC)
    created = backupspecs.parse_time(body["metadata"].get("creationTimestamp")) or now
    summary = (body.get("status") or {}).get("backup") or {}
    found = scheduling.condition(spec, summary, created=created, now=now)
    return [] if found is None else [found]


def revisions(
    durable: planning.Durable, observed: Mapping[str, planning.Observed], revision: str
) -> dict[str, Any]:
    """updateRevision, currentRevision (what the outdated replicas run) and updatedReplicas."""
    running = [
        item.revision
        for member in durable.members
        if (item := observed.get(member.name)) is not None and item.pod and not item.deleting
    ]
    updated = sum(1 for value in running if value == revision)
    older = sorted(value for value in running if value != revision)
    current = max(older, key=older.count) if older else revision
    return {
        "updateRevision": revision,
        "currentRevision": current or "unknown",
        "updatedReplicas": updated,
    }


def updating(update: rolling.Update, revision: str) -> tuple[str, bool, str, str]:
    """The Updating condition: True while replicas are outdated, with what happens or waits."""
    if update.action is rolling.Action.NONE:
        return ("Updating", False, "UpToDate", f"every replica runs revision {revision}")
    reason = {
        rolling.Action.REPORT: "OnDelete",
        rolling.Action.WAIT: "UpdateWaiting",
        rolling.Action.REPLACE: "RollingUpdate",
        rolling.Action.SWITCHOVER: "Switchover",
    }[update.action]
    return ("Updating", True, reason, update.message)


def _ready(item: planning.Observed | None) -> bool:
    return item is not None and item.ready and item.in_sync


def conditions(
    durable: planning.Durable,
    observed: Mapping[str, planning.Observed],
    *,
    replicas: int,
    blocked: str | None,
) -> list[tuple[str, bool, str, str]]:
    """(type, status, reason, message) for Ready, Available, ReplicasInSync, Degraded."""
    in_sync = [m.name for m in durable.members if _ready(observed.get(m.name))]
    needed = decisions.quorum(replicas)
    leader = observed.get(durable.leader or "")
    writable = leader is not None and leader.report is not None and leader.report.writable
    if durable.term == 0 or leader is None:
        ready = (False, "NoLeader", blocked or "no leader has been chosen yet")
    elif not writable:
        ready = (
            False,
            "LeaderNotWritable",
            blocked or f"leader {durable.leader} takes no writes yet",
        )
    elif len(in_sync) < needed:
        ready = (
            False,
            "NoQuorum",
            f"{len(in_sync)} of {replicas} replicas in sync, {needed} needed",
        )
    else:
        ready = (
            True,
            "QuorumInSync",
            f"{durable.leader} leads term {durable.term}; "
            f"{len(in_sync)} of {replicas} replicas in sync",
        )
    out_of_sync = [
        f"{m.name} {(observed.get(m.name) or planning.Observed(m.name)).state}"
        for m in durable.members
        if m.name not in in_sync
    ]
    complete = not out_of_sync and len(durable.members) == replicas
    detail = ", ".join(out_of_sync) or f"{len(durable.members)} of {replicas} replicas exist"
    return [
        ("Ready", *ready),
        (
            "Available",
            bool(in_sync),
            "ReplicasServing" if in_sync else "NoReplicaServing",
            f"{len(in_sync)} replica(s) serve reads",
        ),
        (
            "ReplicasInSync",
            complete,
            "AllInSync" if complete else "ReplicasBehind",
            f"all {replicas} replicas in sync" if complete else detail,
        ),
        (
            "Degraded",
            not complete,
            "ReplicasBehind" if not complete else "AllInSync",
            detail if not complete else "nothing to heal",
        ),
    ]


def merge_conditions(
    previous: Sequence[Mapping[str, Any]],
    current: Sequence[tuple[str, bool, str, str]],
    *,
    generation: int,
    now: datetime.datetime | None = None,
) -> list[dict[str, Any]]:
    """Conditions with lastTransitionTime kept from ``previous`` while the status holds."""
    stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = {item.get("type"): item for item in previous}
    merged = []
    for kind, value, reason, message in current:
        text = "True" if value else "False"
        old = before.get(kind)
        changed = old is None or old.get("status") != text
        merged.append(
            {
                "type": kind,
                "status": text,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": stamp
                if changed or old is None
                else old.get("lastTransitionTime", stamp),
            }
        )
    return merged
