"""A :class:`summary.Summary` as text: a few header lines, then one table per part.

Tables look like kubectl's: upper-case headers, columns two spaces apart, ages such as
``45s``, ``12m``, ``3h``, ``5d``, and ``-`` for what is not known. A replica whose pod is not of
the updateRevision has its revision starred. Nothing here reads the clock: ages are relative
to the ``now`` the caller gives.
"""

import datetime
import json
from collections.abc import Sequence

from gitquorum.plugin import summary

MISSING = "-"
OUTDATED = "*"

HEADERS = {
    "Conditions": ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
    "Replicas": [
        "NAME",
        "ROLE",
        "STATE",
        "VOTER",
        "NODE",
        "ZONE",
        "GENERATION",
        "LAG",
        "REVISION",
        "POD",
        "MESSAGE",
    ],
    "Events": ["AGE", "TYPE", "REASON", "MESSAGE"],
}


def as_json(status: summary.Summary) -> str:
    return json.dumps(status.to_json(), indent=2) + "\n"


def as_text(status: summary.Summary, *, now: datetime.datetime) -> str:
    """The summary as tables a person reads at a glance."""
    parts = [
        _header(status),
        _section("Conditions", _conditions(status, now)),
        _section("Replicas", _replicas(status)),
        _section(f"Events (last {len(status.events)})", _events(status, now)),
    ]
    outdated = any(replica.updated is False for replica in status.replicas)
    if outdated:
        parts.append(f"{OUTDATED} not of the updateRevision: replaced by the rolling update\n")
    return "\n".join(part for part in parts if part)


def _header(status: summary.Summary) -> str:
    ready = status.ready
    readiness = "Ready" if ready and ready.status == "True" else "Not ready"
    reason = f" ({ready.reason})" if ready and ready.reason else ""
    leader = status.leader or "none"
    rows = [
        ("GitRepository", f"{status.namespace}/{status.name}: {readiness}{reason}"),
        ("Leader", f"{leader}, term {_text(status.term)}, generation {_text(status.generation)}"),
        (
            "Replicas",
            f"{_text(status.desired_replicas)} wanted, {status.ready_replicas} ready, "
            f"{_text(status.updated_replicas)} updated",
        ),
        ("Revision", _revision(status)),
        ("URL", status.url or MISSING),
    ]
    return "\n".join(_columns([[f"{name}:", value] for name, value in rows])) + "\n"


def _revision(status: summary.Summary) -> str:
    if not status.update_revision:
        return MISSING
    current = status.current_revision
    if current and current != status.update_revision:
        return f"updating {current} -> {status.update_revision}"
    return f"{status.update_revision} (every replica)"


def _conditions(status: summary.Summary, now: datetime.datetime) -> list[list[str]]:
    return [
        [c.type, c.status, c.reason or MISSING, _age(c.since, now), c.message]
        for c in status.conditions
    ]


def _replicas(status: summary.Summary) -> list[list[str]]:
    return [
        [
            replica.name,
            replica.role or MISSING,
            replica.state or MISSING,
            {True: "yes", False: "no", None: MISSING}[replica.voter],
            replica.node or MISSING,
            replica.zone or MISSING,
            _text(replica.generation),
            _text(replica.lag),
            (replica.revision or MISSING) + (OUTDATED if replica.updated is False else ""),
            replica.pod_status,
            replica.message,
        ]
        for replica in status.replicas
    ]


def _events(status: summary.Summary, now: datetime.datetime) -> list[list[str]]:
    return [
        [
            _age(event.time, now),
            event.type,
            event.reason,
            event.message + (f" (x{event.count})" if event.count > 1 else ""),
        ]
        for event in status.events
    ]


def _section(title: str, rows: list[list[str]]) -> str:
    if not rows:
        return f"{title}: none\n"
    headers = HEADERS[title.split(" ")[0]]
    return f"{title}:\n" + "\n".join(_columns([headers, *rows])) + "\n"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, without trailing blanks."""
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _text(value: int | None) -> str:
    return MISSING if value is None else str(value)


def _age(then: datetime.datetime | None, now: datetime.datetime) -> str:
    if then is None:
        return MISSING
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size, below in (("s", 1, 120), ("m", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if seconds < below:
            return f"{seconds // size}{unit}"
    return f"{seconds // 86400}d"
