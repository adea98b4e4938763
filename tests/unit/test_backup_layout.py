"""Object keys and backup ids of the backup store."""

import datetime

import pytest

from gitquorum import errors
from gitquorum.backup import layout

pytestmark = pytest.mark.unit

CREATED = datetime.datetime(2026, 11, 29, 13, 4, 5, 678, tzinfo=datetime.UTC)
ID = "20261129T130405Z-0a1b2c3d"


def test_new_backup_id_is_utc_time_and_suffix() -> None:
    assert layout.new_backup_id(CREATED, "0a1b2c3d") == ID


def test_new_backup_id_converts_to_utc() -> None:
    local = CREATED.astimezone(datetime.timezone(datetime.timedelta(hours=5)))
    assert layout.new_backup_id(local, "0a1b2c3d") == ID


def test_new_backup_id_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        layout.new_backup_id(CREATED.replace(tzinfo=None), "0a1b2c3d")


@pytest.mark.parametrize("suffix", ["", "0A1B2C3D", "0a1b2c3", "0a1b2c3d4", "0a1b2c3g"])
def test_new_backup_id_refuses_bad_suffix(suffix: str) -> None:
    with pytest.raises(ValueError, match="suffix"):
        layout.new_backup_id(CREATED, suffix)


def test_backup_ids_sort_by_time() -> None:
    times = [CREATED + datetime.timedelta(seconds=s) for s in (0, 1, 59, 3600, 86400 * 40)]
    ids = [
        layout.new_backup_id(t, "ffffffff" if i % 2 else "00000000") for i, t in enumerate(times)
    ]
    assert sorted(ids) == ids


def test_check_backup_id_accepts_id() -> None:
    assert layout.check_backup_id(ID) == ID


@pytest.mark.parametrize(
    "value",
    [
        "",
        "20261129T130405Z",
        "20261129T130405Z-0A1B2C3D",
        "20261129T130405-0a1b2c3d",
        "20261329T130405Z-0a1b2c3d",  # month 13
        "20261129T250405Z-0a1b2c3d",  # hour 25
        " 20261129T130405Z-0a1b2c3d",
        "20261129T130405Z-0a1b2c3d/",
        "../20261129T130405Z-0a1b2c3d",
    ],
)
def test_check_backup_id_rejects_malformed(value: str) -> None:
    with pytest.raises(errors.BackupError, match="malformed backup id"):
        layout.check_backup_id(value)


def test_created_of_reads_the_time_back() -> None:
    assert layout.created_of(ID) == CREATED.replace(microsecond=0)


def test_repository_prefix_joins_path_namespace_and_name() -> None:
    assert layout.repository_prefix("backups", "team", "app") == "backups/team/app/"
    assert layout.repository_prefix("/a/b/", "team", "app") == "a/b/team/app/"


def test_repository_prefix_empty_path_is_bucket_root() -> None:
    assert layout.repository_prefix("", "team", "app") == "team/app/"


@pytest.mark.parametrize("name", ["", "a/b", "..", ".hidden", "-x"])
def test_repository_prefix_rejects_names_that_move_the_key(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be part of an object key"):
        layout.repository_prefix("backups", name, "app")
    with pytest.raises(ValueError, match="cannot be part of an object key"):
        layout.repository_prefix("backups", "team", name)


def test_manifest_and_bundle_keys() -> None:
    prefix = layout.repository_prefix("backups", "team", "app")
    assert layout.manifest_key(prefix, ID) == f"backups/team/app/{ID}/manifest.json"
    assert layout.bundle_key(prefix, ID) == f"backups/team/app/{ID}/repository.bundle"


def test_check_backup_id_rejects_non_string() -> None:
    with pytest.raises(errors.BackupError, match="malformed backup id: a int"):
        layout.check_backup_id(20261129)


def test_keys_reject_malformed_id() -> None:
    with pytest.raises(errors.BackupError):
        layout.manifest_key("p/", "../x")


def test_backup_id_of_keys() -> None:
    assert layout.backup_id_of(f"backups/team/app/{ID}/manifest.json") == ID
    assert layout.backup_id_of(f"backups/team/app/{ID}/repository.bundle") == ID
    assert layout.backup_id_of(f"{ID}/manifest.json") == ID


@pytest.mark.parametrize(
    "key",
    [
        "",
        "manifest.json",
        f"backups/team/app/{ID}/other.json",
        f"backups/team/app/{ID}",
        "backups/team/app/not-an-id/manifest.json",
        f"backups/team/app/{ID}/manifest.json/x",
    ],
)
def test_backup_id_of_other_keys_is_none(key: str) -> None:
    assert layout.backup_id_of(key) is None
