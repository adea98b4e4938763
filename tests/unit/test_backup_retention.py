"""Retention: which backups a policy keeps, checked rule by rule and then exhaustively.

The exhaustive tests run every policy with each count in {None, 0, 1, 2, 3, 5} over histories
that cross day, ISO week, month and year boundaries, mixing full and incremental backups, and
check the properties that make deleting safe: a kept incremental keeps its whole chain, the
newest backup is always kept, a larger count never keeps less, and every rule keeps what its
definition, computed independently here, says it keeps. Each exhaustive test counts the cases
it checked, so a generator that silently yields nothing fails instead of passing.
"""

import datetime
import itertools
from collections.abc import Callable, Hashable, Iterator, Sequence

import pytest

from gitquorum.backup import manifests, retention
from tests.unit import backups

pytestmark = pytest.mark.unit

UTC = datetime.UTC
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
Retention = retention.Retention
Manifest = manifests.Manifest

COUNTS = (None, 0, 1, 2, 3, 5)


def history(times: Sequence[datetime.datetime], *, full_every: int = 1) -> list[Manifest]:
    """Backups at ``times`` (oldest first), each ``full_every``-th full, the others
    incremental on the one before."""
    made: list[Manifest] = []
    for number, created in enumerate(sorted(times)):
        base = None if number % full_every == 0 else made[-1].id
        made.append(backups.manifest(created, number=number, base=base))
    return made


def ids(items: Sequence[Manifest]) -> frozenset[str]:
    return frozenset(m.id for m in items)


def kept(items: Sequence[Manifest], policy: Retention, now: datetime.datetime) -> list[Manifest]:
    chosen = retention.keep(items, policy, now=now)
    return [m for m in items if m.id in chosen]


# 2026-12-28 is the Monday of ISO week 53 of 2026; 2027-01-04 starts week 1 of 2027.
NEW_YEAR = [
    datetime.datetime(2026, 12, 27, 23, 0, tzinfo=UTC),  # Sunday, week 52
    datetime.datetime(2026, 12, 28, 1, 0, tzinfo=UTC),  # Monday, week 53
    datetime.datetime(2026, 12, 31, 22, 0, tzinfo=UTC),  # December
    datetime.datetime(2027, 1, 1, 2, 0, tzinfo=UTC),  # January, still week 53 of 2026
    datetime.datetime(2027, 1, 1, 9, 0, tzinfo=UTC),
    datetime.datetime(2027, 1, 4, 0, 0, tzinfo=UTC),  # week 1 of 2027
]
NOW = datetime.datetime(2027, 1, 10, tzinfo=UTC)


def test_retention_default_keeps_everything() -> None:
    items = history(NEW_YEAR)
    assert retention.keep(items, Retention(), now=NOW) == ids(items)
    assert retention.to_delete(items, Retention(), now=NOW) == frozenset()


def test_retention_of_no_backups_is_empty() -> None:
    assert retention.keep([], Retention(last=1), now=NOW) == frozenset()


def test_retention_rejects_negative_count() -> None:
    with pytest.raises(ValueError, match="daily must be a non-negative integer"):
        Retention(daily=-1)


def test_retention_rejects_bool_count() -> None:
    with pytest.raises(ValueError, match="last"):
        Retention(last=True)


def test_retention_last_keeps_newest() -> None:
    items = history(NEW_YEAR)
    assert kept(items, Retention(last=2), NOW) == items[-2:]


def test_retention_last_zero_still_keeps_newest() -> None:
    items = history(NEW_YEAR)
    assert kept(items, Retention(last=0), NOW) == items[-1:]


def test_retention_last_beyond_count_keeps_all() -> None:
    items = history(NEW_YEAR)
    assert kept(items, Retention(last=50), NOW) == items


def test_retention_daily_keeps_newest_of_each_day() -> None:
    items = history(NEW_YEAR)
    # Days with backups, newest first: Jan 4, Jan 1 (two: the 09:00 one), Dec 31.
    assert kept(items, Retention(daily=3), NOW) == [items[2], items[4], items[5]]


def test_retention_daily_skips_days_without_backups() -> None:
    items = history([backups.T0, backups.T0 + 10 * DAY, backups.T0 + 20 * DAY])
    assert kept(items, Retention(daily=2), NOW) == items[1:]


def test_retention_daily_counts_utc_days() -> None:
    # 23:30 at UTC-5 is 04:30 UTC the next day: the same UTC day as the later backup.
    minus5 = datetime.timezone(datetime.timedelta(hours=-5))
    early = datetime.datetime(2026, 3, 2, 23, 30, tzinfo=minus5)
    late = datetime.datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    items = history([early.astimezone(UTC), late])
    assert kept(items, Retention(daily=1), NOW) == [items[1]]
    assert kept(items, Retention(daily=2), NOW) == [items[1]]


def test_retention_weekly_uses_iso_weeks_across_the_year() -> None:
    items = history(NEW_YEAR)
    # Weeks newest first: 2027-W01 (Jan 4), 2026-W53 (Dec 28 .. Jan 3: Jan 1 09:00),
    # 2026-W52 (Dec 27).
    assert kept(items, Retention(weekly=2), NOW) == [items[4], items[5]]
    assert kept(items, Retention(weekly=3), NOW) == [items[0], items[4], items[5]]


def test_retention_monthly_keeps_newest_of_each_month() -> None:
    items = history(NEW_YEAR)
    assert kept(items, Retention(monthly=1), NOW) == [items[5]]
    assert kept(items, Retention(monthly=2), NOW) == [items[2], items[5]]
    assert kept(items, Retention(monthly=9), NOW) == [items[2], items[5]]


def test_retention_rules_keep_their_union() -> None:
    items = history(NEW_YEAR)
    policy = Retention(last=1, daily=1, weekly=3, monthly=2)
    assert kept(items, policy, NOW) == [items[0], items[2], items[4], items[5]]


def test_retention_keeps_bases_of_kept_incrementals() -> None:
    items = history(NEW_YEAR, full_every=3)  # full, inc, inc, full, inc, inc
    assert kept(items, Retention(last=1), NOW) == items[3:]
    assert kept(items, Retention(monthly=2), NOW) == items


def test_retention_keeps_chain_transitively_and_deletes_the_rest() -> None:
    items = history(NEW_YEAR, full_every=4)  # full, inc, inc, inc, full, inc
    policy = Retention(weekly=3)  # keeps items[0], items[4], items[5]
    assert kept(items, policy, NOW) == [items[0], items[4], items[5]]
    policy = Retention(daily=3)  # keeps items[2] (so items[0..1]), items[4], items[5]
    assert kept(items, policy, NOW) == [items[0], items[1], items[2], items[4], items[5]]
    assert retention.to_delete(items, policy, now=NOW) == {items[3].id}


def test_retention_keeps_backups_after_now() -> None:
    items = history(NEW_YEAR)
    now = NEW_YEAR[2]
    assert kept(items, Retention(last=0), now) == items[3:]


def test_retention_ignores_bases_missing_from_the_listing() -> None:
    items = history(NEW_YEAR, full_every=6)[1:]  # the full backup is gone
    chosen = retention.keep(items, Retention(last=1), now=NOW)
    assert chosen == ids(items)


# -- exhaustive --------------------------------------------------------------------------------


def histories() -> Iterator[list[Manifest]]:
    spaced = [backups.T0 + step * 5 * HOUR for step in range(30)]
    sparse = [backups.T0 + days * DAY for days in (0, 1, 2, 9, 30, 31, 32, 70, 71, 400)]
    for times in (NEW_YEAR, spaced, sparse):
        for full_every in (1, 2, 3, 100):
            yield history(times, full_every=full_every)


def policies() -> Iterator[Retention]:
    for last, daily, weekly, monthly in itertools.product(COUNTS, repeat=4):
        yield Retention(last=last, daily=daily, weekly=weekly, monthly=monthly)


def cases() -> Iterator[tuple[list[Manifest], Retention]]:
    for items in histories():
        for policy in policies():
            yield items, policy


def newest_per(
    items: Sequence[Manifest], count: int | None, period: Callable[[datetime.datetime], Hashable]
) -> set[str]:
    """The definition, computed the other way round: group by period, then take the newest
    periods, then the newest backup of each."""
    groups: dict[Hashable, list[Manifest]] = {}
    for item in items:
        groups.setdefault(period(item.created), []).append(item)
    recent = sorted(groups, key=lambda key: max(m.created for m in groups[key]), reverse=True)
    return {max(groups[key], key=lambda m: m.created).id for key in recent[: count or 0]}


def base_closure(items: Sequence[Manifest], chosen: set[str]) -> set[str]:
    by_id = {m.id: m for m in items}
    result = set(chosen)
    changed = True
    while changed:
        bases = {by_id[i].base for i in result if by_id[i].base in by_id}
        changed = not bases <= result
        result |= {b for b in bases if b is not None}
    return result


def test_retention_exhaustive_matches_definition() -> None:
    checked = 0
    for items, policy in cases():
        chosen = retention.keep(items, policy, now=NOW)
        if policy.keeps_everything:
            assert chosen == ids(items)
        else:
            newest_first = sorted(items, key=lambda m: m.created, reverse=True)
            expected = {newest_first[0].id}
            expected |= {m.id for m in newest_first[: policy.last or 0]}
            expected |= newest_per(items, policy.daily, lambda t: t.date())
            expected |= newest_per(items, policy.weekly, lambda t: t.isocalendar()[:2])
            expected |= newest_per(items, policy.monthly, lambda t: (t.year, t.month))
            assert chosen == base_closure(items, expected), (policy, [m.id for m in items])
        checked += 1
    assert checked == 12 * len(COUNTS) ** 4


def test_retention_exhaustive_kept_incrementals_are_restorable() -> None:
    checked = 0
    for items, policy in cases():
        chosen = retention.keep(items, policy, now=NOW)
        by_id = {m.id: m for m in items}
        for backup_id in chosen:
            base = by_id[backup_id].base
            assert base is None or base in chosen, (policy, backup_id)
        assert max(items, key=lambda m: m.created).id in chosen
        deleted = retention.to_delete(items, policy, now=NOW)
        assert deleted | chosen == ids(items) and not deleted & chosen
        checked += 1
    assert checked == 12 * len(COUNTS) ** 4


def test_retention_exhaustive_larger_counts_never_keep_less() -> None:
    checked = 0
    for items in histories():
        for policy in policies():
            chosen = retention.keep(items, policy, now=NOW)
            for field in ("last", "daily", "weekly", "monthly"):
                value = getattr(policy, field)
                if value is None:
                    continue
                larger = Retention(**{**policy.__dict__, field: value + 1})
                assert chosen <= retention.keep(items, larger, now=NOW), (policy, field)
                checked += 1
    assert checked > 10_000
