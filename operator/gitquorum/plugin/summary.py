"""A repository's state as one typed value: what ``kubectl gitquorum status`` shows.

Built from a :class:`gathering.Snapshot` without I/O. Replicas come from the operator's
``status.replicaStatuses`` and from the replica pods, so that a replica whose pod exists but
that the operator has not reported yet still shows. A replica's lag is the leader's
generation (``status.generation``) minus its own: how many pushes it has yet to apply.
"""

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

from gitquorum.kube import names
from gitquorum.plugin import gathering

NO_NODE_STATES = ("Pending", "Lost")
"""States in which a replica's generation says nothing about how far behind it is."""


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    since: datetime.datetime | None


@dataclasses.dataclass(frozen=True)
class Replica:
    name: str
    role: str
    """leader, follower, or "" when the operator has not reported the replica."""
    state: str
    """The operator's (InSync, Behind, Rebuilding, Pending, Lost, ...), or the pod's phase."""
    voter: bool | None
    node: str | None
    zone: str | None
    generation: int | None
    lag: int | None
    """Pushes behind the leader; None when unknown."""
    revision: str | None
    updated: bool | None
    """Whether its pod is of the repository's updateRevision; None when either is unknown."""
    pod: str | None
    pod_status: str
    """Running, Running (not ready), Pending, Terminating, ... or "none"."""
    message: str


@dataclasses.dataclass(frozen=True)
class Event:
    time: datetime.datetime | None
    type: str
    reason: str
    message: str
    count: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """A repository at a glance."""

    namespace: str
    name: str
    desired_replicas: int | None
    """spec.replicas."""
    ready_replicas: int
    leader: str
    term: int | None
    generation: int | None
    url: str
    update_revision: str
    current_revision: str
    updated_replicas: int | None
    conditions: tuple[Condition, ...]
    replicas: tuple[Replica, ...]
    events: tuple[Event, ...]
    """The newest ``limit`` events, oldest first."""

    @property
    def ready(self) -> Condition | None:
        return next((c for c in self.conditions if c.type == "Ready"), None)

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data, camelCase as Kubernetes writes it."""
        data: dict[str, Any] = _camel(dataclasses.asdict(self))
        return data


def summarize(snapshot: gathering.Snapshot, *, events: int) -> Summary:
    """The summary of what was read, with the newest ``events`` events."""
    repository = snapshot.repository
    status: Mapping[str, Any] = repository.get("status") or {}
    metadata = repository["metadata"]
    return Summary(
        namespace=metadata.get("namespace", ""),
        name=metadata["name"],
        desired_replicas=(repository.get("spec") or {}).get("replicas"),
        ready_replicas=status.get("readyReplicas") or 0,
        leader=status.get("leader") or "",
        term=status.get("term"),
        generation=status.get("generation"),
        url=status.get("url") or "",
        update_revision=status.get("updateRevision") or "",
        current_revision=status.get("currentRevision") or "",
        updated_replicas=status.get("updatedReplicas"),
        conditions=tuple(_condition(c) for c in status.get("conditions") or []),
        replicas=_replicas(snapshot, status),
        events=_events(snapshot.events, limit=events),
    )


def _condition(condition: Mapping[str, Any]) -> Condition:
    return Condition(
        type=condition.get("type", ""),
        status=condition.get("status", "Unknown"),
        reason=condition.get("reason", ""),
        message=condition.get("message", ""),
        since=_time(condition.get("lastTransitionTime")),
    )


def _replicas(snapshot: gathering.Snapshot, status: Mapping[str, Any]) -> tuple[Replica, ...]:
    reported = {entry["name"]: entry for entry in status.get("replicaStatuses") or []}
    pods = {
        pod["metadata"].get("labels", {}).get(names.REPLICA_LABEL, pod["metadata"]["name"]): pod
        for pod in snapshot.pods
    }
    return tuple(
        _replica(
            name, entry=reported.get(name, {}), pod=pods.get(name), snapshot=snapshot, status=status
        )
        for name in sorted(reported.keys() | pods.keys(), key=_natural)
    )


def _replica(
    name: str,
    *,
    entry: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    snapshot: gathering.Snapshot,
    status: Mapping[str, Any],
) -> Replica:
    node = entry.get("node") or (pod or {}).get("spec", {}).get("nodeName")
    revision = entry.get("revision") or _annotation(pod, names.REVISION)
    update = status.get("updateRevision")
    state = entry.get("state") or _pod_status(pod)
    return Replica(
        name=name,
        role=(entry.get("role") or "").lower(),
        state=state,
        voter=entry.get("voter"),
        node=node,
        zone=snapshot.zones.get(node) if node else None,
        generation=entry.get("generation"),
        lag=_lag(status.get("generation"), entry.get("generation"), state=state),
        revision=revision,
        updated=(revision == update) if revision and update else None,
        pod=(pod or {}).get("metadata", {}).get("name") or entry.get("pod"),
        pod_status=_pod_status(pod),
        message=entry.get("message") or "",
    )


def _lag(leader: Any, own: Any, *, state: str) -> int | None:
    if not isinstance(leader, int) or not isinstance(own, int) or state in NO_NODE_STATES:
        return None
    return max(0, leader - own)


def _pod_status(pod: Mapping[str, Any] | None) -> str:
    if pod is None:
        return "none"
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    pod_status = pod.get("status") or {}
    phase: str = pod_status.get("phase") or "Unknown"
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod_status.get("conditions") or []
    )
    return f"{phase} (not ready)" if phase == "Running" and not ready else phase


def _annotation(pod: Mapping[str, Any] | None, key: str) -> str | None:
    if pod is None:
        return None
    value: str | None = (pod["metadata"].get("annotations") or {}).get(key)
    return value


def _events(events: Sequence[Mapping[str, Any]], *, limit: int) -> tuple[Event, ...]:
    parsed = [
        Event(
            time=_time(e.get("lastTimestamp") or e.get("eventTime"))
            or _time(e["metadata"].get("creationTimestamp")),
            type=e.get("type", ""),
            reason=e.get("reason", ""),
            message=(e.get("message") or "").strip(),
            count=e.get("count") or 1,
        )
        for e in events
    ]
    oldest = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    parsed.sort(key=lambda event: event.time or oldest)
    return tuple(parsed[-limit:]) if limit > 0 else ()


def _time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _natural(name: str) -> tuple[str, int]:
    """repo-2 before repo-10, as a person counts replicas."""
    match = re.fullmatch(r"(.*?)(\d+)", name)
    return (match.group(1), int(match.group(2))) if match else (name, -1)


def _camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel_key(key): _camel(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_camel(item) for item in value]
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)
