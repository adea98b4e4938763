"""Backup chains, point-in-time picks and what the next backup builds on."""

import datetime

import pytest

from gitquorum import errors
from gitquorum.backup import catalog
from tests.unit import backups

pytestmark = pytest.mark.unit

HOUR = datetime.timedelta(hours=1)
FULL = backups.manifest(backups.T0)
INC1 = backups.manifest(backups.T0 + HOUR, number=1, base=FULL.id)
INC2 = backups.manifest(backups.T0 + 2 * HOUR, number=2, base=INC1.id)
FULL2 = backups.manifest(backups.T0 + 3 * HOUR, number=3)
INC3 = backups.manifest(backups.T0 + 4 * HOUR, number=4, base=FULL2.id)
ALL = [INC3, FULL, INC2, FULL2, INC1]


def test_chain_of_full_is_itself() -> None:
    assert catalog.chain(ALL, FULL.id) == [FULL]


def test_chain_of_incremental_runs_full_first() -> None:
    assert catalog.chain(ALL, INC2.id) == [FULL, INC1, INC2]
    assert catalog.chain(ALL, INC3.id) == [FULL2, INC3]


def test_chain_missing_base_names_both() -> None:
    with pytest.raises(errors.BackupCorrupt, match=f"{INC2.id} builds on {INC1.id}, which is not"):
        catalog.chain([FULL, INC2], INC2.id)


def test_chain_missing_full_base() -> None:
    with pytest.raises(errors.BackupCorrupt, match=f"{INC1.id} builds on {FULL.id}"):
        catalog.chain([INC1, INC2], INC2.id)


def test_chain_unknown_target() -> None:
    with pytest.raises(errors.BackupCorrupt, match=f"backup {INC3.id} is not in the store"):
        catalog.chain([FULL], INC3.id)


def test_pick_newest_without_bound() -> None:
    assert catalog.pick(ALL, before=None) == INC3


def test_pick_none_from_empty() -> None:
    assert catalog.pick([], before=None) is None


def test_pick_newest_at_or_before() -> None:
    assert catalog.pick(ALL, before=INC1.created) == INC1
    assert catalog.pick(ALL, before=INC1.created + HOUR / 2) == INC1
    assert catalog.pick(ALL, before=INC1.created - datetime.timedelta(seconds=1)) == FULL


def test_pick_none_before_first() -> None:
    assert catalog.pick(ALL, before=FULL.created - datetime.timedelta(seconds=1)) is None


def test_next_kind_full_without_backups() -> None:
    assert catalog.next_kind([], max_chain=5) == ("full", None)


def test_next_kind_incremental_on_newest() -> None:
    assert catalog.next_kind(ALL, max_chain=5) == ("incremental", INC3)


def test_next_kind_full_when_chain_is_at_max() -> None:
    assert catalog.next_kind([FULL, INC1, INC2], max_chain=2) == ("full", None)
    assert catalog.next_kind([FULL, INC1, INC2], max_chain=3) == ("incremental", INC2)


def test_next_kind_full_when_max_chain_is_zero() -> None:
    assert catalog.next_kind([FULL], max_chain=0) == ("full", None)


def test_next_kind_full_when_newest_chain_is_broken() -> None:
    assert catalog.next_kind([FULL, INC2], max_chain=10) == ("full", None)
