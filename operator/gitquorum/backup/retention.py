"""Which backups a retention policy keeps, and so which ones may be deleted.

The policy is the familiar grandfather-father-son one: keep the ``last`` newest backups, and
the newest backup of each of the ``daily`` most recent days that have one, likewise for ISO
weeks and for months, all in UTC. A period without backups does not use up a slot, so a
repository nobody pushed to for a month still keeps ``daily`` daily backups.

Two rules keep a policy from destroying what it means to keep. Every base of a kept backup is
kept, transitively: an incremental backup restores only with its whole chain. And the newest
backup, and any made after ``now`` (a clock ahead of ours, a backup finishing as this runs),
are always kept, so no policy leaves a repository without a restore point.
"""

import dataclasses
import datetime
from collections.abc import Callable, Hashable, Sequence

from gitquorum.backup import manifests


@dataclasses.dataclass(frozen=True)
class Retention:
    """How many backups to keep; None for a rule means the rule keeps nothing by itself, and
    None for every rule (the default) keeps every backup: deleting is opt-in."""

    last: int | None = None
    """The newest backups to keep, counted."""
    daily: int | None = None
    """Days, most recent first, whose newest backup is kept."""
    weekly: int | None = None
    """ISO weeks, most recent first, whose newest backup is kept."""
    monthly: int | None = None
    """Months, most recent first, whose newest backup is kept."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise ValueError(f"retention {field.name} must be a non-negative integer")

    @property
    def keeps_everything(self) -> bool:
        return all(getattr(self, field.name) is None for field in dataclasses.fields(self))


Period = Callable[[datetime.datetime], Hashable]


def _day(moment: datetime.datetime) -> Hashable:
    return moment.astimezone(datetime.UTC).date()


def _week(moment: datetime.datetime) -> Hashable:
    year, week, _ = moment.astimezone(datetime.UTC).isocalendar()
    return (year, week)


def _month(moment: datetime.datetime) -> Hashable:
    utc = moment.astimezone(datetime.UTC)
    return (utc.year, utc.month)


def keep(
    backups: Sequence[manifests.Manifest], policy: Retention, *, now: datetime.datetime
) -> frozenset[str]:
    """The ids of the backups ``policy`` keeps at ``now``."""
    if policy.keeps_everything:
        return frozenset(m.id for m in backups)
    newest_first = sorted(backups, key=lambda m: (m.created, m.id), reverse=True)
    kept: set[str] = {m.id for m in newest_first[:1]}
    kept.update(m.id for m in newest_first if m.created > now)
    kept.update(m.id for m in newest_first[: policy.last or 0])
    for count, period in ((policy.daily, _day), (policy.weekly, _week), (policy.monthly, _month)):
        kept.update(_newest_per_period(newest_first, count or 0, period))
    return frozenset(_with_bases(kept, backups))


def to_delete(
    backups: Sequence[manifests.Manifest], policy: Retention, *, now: datetime.datetime
) -> frozenset[str]:
    """The ids of the backups ``policy`` does not keep at ``now``."""
    return frozenset(m.id for m in backups) - keep(backups, policy, now=now)


def _newest_per_period(
    newest_first: Sequence[manifests.Manifest], count: int, period: Period
) -> set[str]:
    """The newest backup of each of the ``count`` most recent periods that have one."""
    chosen: dict[Hashable, str] = {}
    for manifest in newest_first:
        key = period(manifest.created)
        if key in chosen:
            continue
        if len(chosen) == count:
            break
        chosen[key] = manifest.id
    return set(chosen.values())


def _with_bases(kept: set[str], backups: Sequence[manifests.Manifest]) -> set[str]:
    by_id = {m.id: m for m in backups}
    closed: set[str] = set()
    pending = list(kept)
    while pending:
        backup_id = pending.pop()
        if backup_id in closed or backup_id not in by_id:
            continue
        closed.add(backup_id)
        base = by_id[backup_id].base
        if base is not None:
            pending.append(base)
    return closed
