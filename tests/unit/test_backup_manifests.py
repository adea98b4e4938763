"""Backup manifests: written and read back exactly, anything malformed refused by name."""

import datetime
import json
from collections.abc import Callable
from typing import Any

import pytest

from gitquorum import errors
from gitquorum.backup import manifests
from gitquorum.replication import checksum
from tests.unit import backups

pytestmark = pytest.mark.unit

BASE = backups.manifest(backups.T0)
INCREMENTAL = backups.manifest(
    backups.T0 + datetime.timedelta(hours=1),
    number=1,
    base=BASE.id,
    refs={"refs/heads/main": backups.OID_B, "refs/tags/v1": backups.OID_A},
)


def _document(manifest: manifests.Manifest = INCREMENTAL) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(manifest.to_json())
    return document


def _encoded(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def _rejected(change: Callable[[dict[str, Any]], object], match: str) -> None:
    document = _document()
    change(document)
    with pytest.raises(errors.BackupCorrupt, match=match):
        manifests.from_json(_encoded(document))


def test_manifest_round_trip_incremental() -> None:
    assert manifests.from_json(INCREMENTAL.to_json()) == INCREMENTAL


def test_manifest_round_trip_full_without_bundle_or_head() -> None:
    manifest = backups.manifest(backups.T0, refs={}, bundle=False)
    manifest = manifests.Manifest(**{**manifest.__dict__, "head": None})
    assert manifests.from_json(manifest.to_json()) == manifest


def test_manifest_round_trip_keeps_microseconds() -> None:
    manifest = backups.manifest(backups.T0.replace(microsecond=250))
    assert manifests.from_json(manifest.to_json()).created == backups.T0.replace(microsecond=250)


def test_manifest_json_has_format_and_plain_fields() -> None:
    document = _document()
    assert document["format"] == 1
    assert document["refs"] == {"refs/heads/main": backups.OID_B, "refs/tags/v1": backups.OID_A}
    assert document["bundle"]["prerequisites"] == [backups.OID_B]


def test_manifest_rejects_oversized_data() -> None:
    with pytest.raises(errors.BackupCorrupt, match="exceeds the limit"):
        manifests.from_json(b" " * (manifests.MAX_MANIFEST_BYTES + 1))


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[]", b"null", b'"x"'])
def test_manifest_rejects_non_object(data: bytes) -> None:
    with pytest.raises(errors.BackupCorrupt, match="manifest is not"):
        manifests.from_json(data)


def test_manifest_rejects_duplicate_keys() -> None:
    data = INCREMENTAL.to_json().replace(b'"format": 1,', b'"format": 1, "format": 1,')
    with pytest.raises(errors.BackupCorrupt, match="duplicate key"):
        manifests.from_json(data)


@pytest.mark.parametrize("field", sorted(manifests._FIELDS))
def test_manifest_rejects_missing_field(field: str) -> None:
    _rejected(lambda d: d.pop(field), f"missing {field}")


def test_manifest_rejects_unknown_field() -> None:
    _rejected(lambda d: d.update(extra=1), "unknown field extra")


@pytest.mark.parametrize("value", [2, 0, "1", True, None])
def test_manifest_rejects_format(value: object) -> None:
    _rejected(lambda d: d.update(format=value), "format")


@pytest.mark.parametrize("value", [None, 5, "latest", "20261129T130405Z-0A1B2C3D"])
def test_manifest_rejects_id(value: object) -> None:
    _rejected(lambda d: d.update(id=value), "id")


@pytest.mark.parametrize("field", ["namespace", "repository"])
@pytest.mark.parametrize("value", [None, "", 3])
def test_manifest_rejects_names(field: str, value: object) -> None:
    _rejected(lambda d: d.update({field: value}), f"{field} is not a non-empty string")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (None, "created is not a time"),
        ("yesterday", "created: Invalid isoformat"),
        ("2026-03-02T13:00:00", "not in UTC"),
        ("2026-03-02T14:00:00+01:00", "not in UTC"),
        ("2026-03-02T12:00:01+00:00", "not the time of its id"),
    ],
)
def test_manifest_rejects_created(value: object, match: str) -> None:
    _rejected(lambda d: d.update(created=value), match)


@pytest.mark.parametrize("value", [-1, 1.5, "7", True, None])
def test_manifest_rejects_generation(value: object) -> None:
    _rejected(lambda d: d.update(generation=value), "generation is not a non-negative integer")


@pytest.mark.parametrize("value", [3, "HEAD", "main", "refs/heads/a..b", "refs/heads/x y"])
def test_manifest_rejects_head(value: object) -> None:
    _rejected(lambda d: d.update(head=value), "head: malformed ref name")


@pytest.mark.parametrize("value", [None, [], "refs"])
def test_manifest_rejects_refs_not_object(value: object) -> None:
    _rejected(lambda d: d.update(refs=value), "refs is not an object")


@pytest.mark.parametrize(
    "ref", ["HEAD", "heads/main", "refs/heads/a..b", "refs/heads/x y", "refs/heads/x.lock"]
)
def test_manifest_rejects_ref_name(ref: str) -> None:
    def change(document: dict[str, Any]) -> None:
        document["refs"][ref] = backups.OID_A
        document["checksum"] = checksum.of(document["refs"])

    _rejected(change, "malformed ref name")


@pytest.mark.parametrize("value", [None, 1, "a" * 39, "A" * 40, "g" * 40, "a" * 64])
def test_manifest_rejects_ref_object_id(value: object) -> None:
    _rejected(lambda d: d["refs"].update({"refs/heads/main": value}), "names no object id")


@pytest.mark.parametrize("value", [None, "0" * 63, "X" * 64])
def test_manifest_rejects_checksum_malformed(value: object) -> None:
    _rejected(lambda d: d.update(checksum=value), "checksum is not 64 hex digits")


def test_manifest_rejects_checksum_of_other_refs() -> None:
    _rejected(lambda d: d["refs"].pop("refs/tags/v1"), "checksum does not match its refs")


@pytest.mark.parametrize("value", [None, "differential", "FULL", 1])
def test_manifest_rejects_kind(value: object) -> None:
    _rejected(lambda d: d.update(kind=value), "is not full or incremental")


def test_manifest_rejects_incremental_without_base() -> None:
    _rejected(lambda d: d.update(base=None), "an incremental backup without a base")


def test_manifest_rejects_full_with_base() -> None:
    _rejected(lambda d: d.update(kind="full"), "a full backup with base")


def test_manifest_rejects_base_malformed() -> None:
    _rejected(lambda d: d.update(base="../x"), "base: malformed backup id")


def test_manifest_rejects_base_not_older() -> None:
    _rejected(lambda d: d.update(base=d["id"]), "is not older")


@pytest.mark.parametrize("value", ["bundle", [], 3])
def test_manifest_rejects_bundle_not_object(value: object) -> None:
    _rejected(lambda d: d.update(bundle=value), "bundle is not an object")


@pytest.mark.parametrize("field", sorted(manifests._BUNDLE_FIELDS))
def test_manifest_rejects_bundle_missing_field(field: str) -> None:
    _rejected(lambda d: d["bundle"].pop(field), f"bundle: missing {field}")


def test_manifest_rejects_bundle_unknown_field() -> None:
    _rejected(lambda d: d["bundle"].update(extra=1), "bundle: unknown field extra")


@pytest.mark.parametrize(
    "value",
    [None, "x", f"backups/team/app/{BASE.id}/repository.bundle", "backups/repository.bundle"],
)
def test_manifest_rejects_bundle_key(value: object) -> None:
    _rejected(lambda d: d["bundle"].update(key=value), "bundle key is not this backup's")


@pytest.mark.parametrize("value", [-1, "12", None, 1.0, False])
def test_manifest_rejects_bundle_size(value: object) -> None:
    _rejected(lambda d: d["bundle"].update(size=value), "size is not a non-negative integer")


@pytest.mark.parametrize("value", [None, "c" * 63, "C" * 64])
def test_manifest_rejects_bundle_sha256(value: object) -> None:
    _rejected(lambda d: d["bundle"].update(sha256=value), "sha256 is not 64 hex digits")


@pytest.mark.parametrize("value", [None, "a" * 40, ["a" * 39], [1]])
def test_manifest_rejects_bundle_prerequisites(value: object) -> None:
    _rejected(lambda d: d["bundle"].update(prerequisites=value), "prerequisites are not")


def test_manifest_rejection_names_the_backup() -> None:
    _rejected(lambda d: d.update(generation=-1), f"manifest of backup {INCREMENTAL.id}")
