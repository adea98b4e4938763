"""Maintenance windows and permits (pure decisions).

``spec.maintenance.window`` confines a repository's maintenance and scrubbing to a time of the
week: ``days`` (``Mon`` .. ``Sun``, every day when absent), ``start`` (``HH:MM``, UTC) and
``durationMinutes``; a window may run past midnight into the next day. With a window, replica
pods start with ``--maintenance-permits`` and work only under a permit the operator gives
(``PUT /admin/upkeep``) while the window is open, and at most ``--max-maintenance-per-node``
replicas of all repositories hold one on a node at a time, so that repacks and scrubs on a
node never pile up. Without a window, replicas maintain whenever their own triggers say, one
replica of a repository at a time (the leader grants turns).
"""

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MAX_PERMIT_SECONDS = 24 * 3600.0
"""A permit lasts until its window closes; a window is at most a day (the replica accepts a
week, ``replication/upkeep.py``)."""


@dataclasses.dataclass(frozen=True)
class Window:
    days: frozenset[int]
    """Weekdays the window opens on (0 = Monday)."""
    start: datetime.time
    """When it opens, UTC."""
    duration: datetime.timedelta

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> "Window | None":
        """None without a window; ValueError, naming the field, for a malformed one (the
        CRD schema refuses those first)."""
        if not spec:
            return None
        days = spec.get("days") or DAYS
        unknown = [day for day in days if day not in DAYS]
        if unknown:
            raise ValueError(f"window.days: {unknown} are not among {', '.join(DAYS)}")
        try:
            start = datetime.time.fromisoformat(str(spec["start"]))
            minutes = int(spec["durationMinutes"])
        except (KeyError, ValueError) as error:
            raise ValueError(f"window needs start (HH:MM) and durationMinutes: {error}") from error
        if not 1 <= minutes <= 24 * 60:
            raise ValueError("window.durationMinutes must be between 1 and 1440")
        return cls(
            frozenset(DAYS.index(day) for day in days), start, datetime.timedelta(minutes=minutes)
        )

    def open_until(self, now: datetime.datetime) -> datetime.datetime | None:
        """When the window open at ``now`` (aware, any zone) closes; None when closed."""
        now = now.astimezone(datetime.UTC)
        for back in (0, 1):  # today's window, or yesterday's running past midnight
            day = now.date() - datetime.timedelta(days=back)
            if day.weekday() not in self.days:
                continue
            opens = datetime.datetime.combine(day, self.start, tzinfo=datetime.UTC)
            if opens <= now < opens + self.duration:
                return opens + self.duration
        return None


def grant(
    due: Sequence[tuple[str, str]],
    *,
    held: Mapping[str, Iterable[str]],
    per_node: int,
) -> list[str]:
    """Which of the replicas that have work due (``(key, node)``, in order of preference) get a
    permit now, given the permits ``held`` per node (keys) and the bound per node."""
    taken = {node: set(keys) for node, keys in held.items()}
    granted = []
    for key, node in due:
        holders = taken.setdefault(node, set())
        if key in holders:
            continue
        if len(holders) >= per_node:
            continue
        holders.add(key)
        granted.append(key)
    return granted
