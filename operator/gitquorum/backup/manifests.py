"""A backup's manifest: what the backup holds, written last so that it marks the backup done.

The manifest is JSON, readable by people and by tools other than gitquorum::

    {"format": 1, "id": "20261129T120000Z-0a1b2c3d", "namespace": "team", "repository": "app",
     "created": "2026-11-29T12:00:00+00:00", "generation": 42, "head": "refs/heads/main",
     "refs": {"refs/heads/main": "<40 hex>", ...}, "checksum": "<64 hex>",
     "kind": "incremental", "base": "20261128T120000Z-9f8e7d6c",
     "bundle": {"key": ".../repository.bundle", "size": 1234, "sha256": "<64 hex>",
                "prerequisites": ["<40 hex>", ...]}}

``refs`` is the repository's exact ref state at the backup, ``checksum`` the replicas' checksum
of it (:mod:`gitquorum.replication.checksum`), so a restored repository can be compared with the
replicas it came from. ``base`` is the backup this one builds on (None for a full backup);
``bundle`` is None when nothing changed since the base. Parsing is strict: the store is outside
our control, and a manifest we misread would restore the wrong refs, so anything unexpected is
:class:`errors.BackupCorrupt`.
"""

import dataclasses
import datetime
import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from gitquorum import errors
from gitquorum.backup import layout
from gitquorum.replication import checksum, transactions

FORMAT = 1
"""The manifest format this code writes and reads."""

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
"""A manifest is read whole into memory before parsing: this bounds what a stray or hostile
object in the bucket can make us allocate. Some 400 000 refs fit."""

Kind = Literal["full", "incremental"]
KINDS: tuple[Kind, ...] = ("full", "incremental")

_OBJECT_ID = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIELDS = frozenset(
    {
        "format",
        "id",
        "namespace",
        "repository",
        "created",
        "generation",
        "head",
        "refs",
        "checksum",
        "kind",
        "base",
        "bundle",
    }
)
_BUNDLE_FIELDS = frozenset({"key", "size", "sha256", "prerequisites"})


@dataclasses.dataclass(frozen=True)
class BundleFile:
    """The bundle object of a backup."""

    key: str
    """The bundle's object key."""
    size: int
    """Its size in bytes, checked after download."""
    sha256: str
    """The SHA-256 of its bytes in hex, checked after download."""
    prerequisites: tuple[str, ...]
    """The commits the bundle assumes present (the base's ref tips it excluded)."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """One backup of one repository."""

    id: str
    """The backup id (:func:`layout.new_backup_id`)."""
    namespace: str
    repository: str
    created: datetime.datetime
    """When the backup was made, in UTC."""
    generation: int
    """The repository's replication generation the refs were read at."""
    head: str | None
    """The ref HEAD names; None if the repository had none to name."""
    refs: Mapping[str, str]
    """Every ref and the 40-hex object id it names."""
    checksum: str
    """:func:`checksum.of` the refs."""
    kind: Kind
    base: str | None
    """The id of the backup this one builds on; None for a full backup."""
    bundle: BundleFile | None
    """None when nothing changed since the base."""

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "format": FORMAT,
            "id": self.id,
            "namespace": self.namespace,
            "repository": self.repository,
            "created": self.created.astimezone(datetime.UTC).isoformat(),
            "generation": self.generation,
            "head": self.head,
            "refs": dict(sorted(self.refs.items())),
            "checksum": self.checksum,
            "kind": self.kind,
            "base": self.base,
            "bundle": None
            if self.bundle is None
            else {
                "key": self.bundle.key,
                "size": self.bundle.size,
                "sha256": self.bundle.sha256,
                "prerequisites": list(self.bundle.prerequisites),
            },
        }
        return json.dumps(document, indent=1).encode() + b"\n"


def from_json(data: bytes) -> Manifest:
    """The manifest in ``data``; BackupCorrupt saying what is wrong if it is malformed."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise errors.BackupCorrupt(
            f"manifest of {len(data)} bytes exceeds the limit of {MAX_MANIFEST_BYTES}"
        )
    try:
        document = json.loads(data, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError) as error:
        raise errors.BackupCorrupt(f"manifest is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise errors.BackupCorrupt("manifest is not a JSON object")
    _check_fields("manifest", document, _FIELDS)
    if _integer(document, "format") != FORMAT:
        raise errors.BackupCorrupt(f"manifest format {document['format']} is not {FORMAT}")
    backup_id = _backup_id(document, "id")
    where = f"manifest of backup {backup_id}"
    refs = _refs(document["refs"], where=where)
    manifest = Manifest(
        id=backup_id,
        namespace=_string(document, "namespace", where=where),
        repository=_string(document, "repository", where=where),
        created=_created(document["created"], backup_id=backup_id, where=where),
        generation=_integer(document, "generation", where=where),
        head=_head(document["head"], where=where),
        refs=refs,
        checksum=_checksum(document["checksum"], refs, where=where),
        kind=_kind(document["kind"], where=where),
        base=None if document["base"] is None else _backup_id(document, "base", where=where),
        bundle=None
        if document["bundle"] is None
        else _bundle(document["bundle"], backup_id=backup_id, where=where),
    )
    if manifest.kind == "full" and manifest.base is not None:
        raise errors.BackupCorrupt(f"{where}: a full backup with base {manifest.base}")
    if manifest.kind == "incremental" and manifest.base is None:
        raise errors.BackupCorrupt(f"{where}: an incremental backup without a base")
    # Two backups may start in the same second (ids have second resolution): a base of the
    # same second is fine, one of a later time or the backup itself is not.
    if manifest.base is not None and (
        manifest.base == manifest.id or layout.created_of(manifest.base) > manifest.created
    ):
        raise errors.BackupCorrupt(f"{where}: its base {manifest.base} is not older")
    return manifest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two values for one key would leave which one counts to the parser.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _check_fields(where: str, document: dict[str, Any], fields: frozenset[str]) -> None:
    missing = sorted(fields - document.keys())
    if missing:
        raise errors.BackupCorrupt(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(document.keys() - fields)
    if unknown:
        raise errors.BackupCorrupt(f"{where}: unknown field {', '.join(unknown)[:200]}")


def _integer(document: dict[str, Any], name: str, *, where: str = "manifest") -> int:
    value = document[name]
    # bool is an int to Python, not to the format.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.BackupCorrupt(f"{where}: {name} is not a non-negative integer")
    return value


def _string(document: dict[str, Any], name: str, *, where: str) -> str:
    value = document[name]
    if not isinstance(value, str) or not value:
        raise errors.BackupCorrupt(f"{where}: {name} is not a non-empty string")
    return value


def _backup_id(document: dict[str, Any], name: str, *, where: str = "manifest") -> str:
    value = document[name]
    if not isinstance(value, str):
        raise errors.BackupCorrupt(f"{where}: {name} is not a backup id")
    try:
        return layout.check_backup_id(value)
    except errors.BackupError as error:
        raise errors.BackupCorrupt(f"{where}: {name}: {error}") from error


def _created(value: object, *, backup_id: str, where: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise errors.BackupCorrupt(f"{where}: created is not a time")
    try:
        created = datetime.datetime.fromisoformat(value)
    except ValueError as error:
        raise errors.BackupCorrupt(f"{where}: created: {error}") from error
    if created.utcoffset() != datetime.timedelta(0):
        raise errors.BackupCorrupt(f"{where}: created {value!r} is not in UTC")
    created = created.astimezone(datetime.UTC)
    # The id's time is what listings sort by: it must be the time the manifest claims.
    if created.replace(microsecond=0) != layout.created_of(backup_id):
        raise errors.BackupCorrupt(f"{where}: created {value!r} is not the time of its id")
    return created


def _ref_name(value: object, *, where: str) -> str:
    try:
        return transactions.check_ref_name(value)
    except errors.ReplicationError as error:
        raise errors.BackupCorrupt(f"{where}: {error}") from error


def _head(value: object, *, where: str) -> str | None:
    return None if value is None else _ref_name(value, where=f"{where}: head")


def _refs(value: object, *, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise errors.BackupCorrupt(f"{where}: refs is not an object")
    refs: dict[str, str] = {}
    for ref, object_id in value.items():
        name = _ref_name(ref, where=f"{where}: refs")
        if not isinstance(object_id, str) or not _OBJECT_ID.fullmatch(object_id):
            raise errors.BackupCorrupt(f"{where}: {name} names no object id")
        refs[name] = object_id
    return refs


def _checksum(value: object, refs: Mapping[str, str], *, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise errors.BackupCorrupt(f"{where}: checksum is not 64 hex digits")
    if value != checksum.of(refs):
        raise errors.BackupCorrupt(f"{where}: checksum does not match its refs")
    return value


def _kind(value: object, *, where: str) -> Kind:
    for kind in KINDS:
        if value == kind:
            return kind
    raise errors.BackupCorrupt(f"{where}: kind {str(value)[:40]!r} is not full or incremental")


def _bundle(value: object, *, backup_id: str, where: str) -> BundleFile:
    if not isinstance(value, dict):
        raise errors.BackupCorrupt(f"{where}: bundle is not an object")
    _check_fields(f"{where}: bundle", value, _BUNDLE_FIELDS)
    key = value["key"]
    # A key elsewhere would make a restore read another backup's bundle.
    if not isinstance(key, str) or not key.endswith(f"{backup_id}/{layout.BUNDLE_NAME}"):
        raise errors.BackupCorrupt(f"{where}: bundle key is not this backup's")
    digest = value["sha256"]
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise errors.BackupCorrupt(f"{where}: bundle sha256 is not 64 hex digits")
    prerequisites = value["prerequisites"]
    if not isinstance(prerequisites, list) or not all(
        isinstance(item, str) and _OBJECT_ID.fullmatch(item) for item in prerequisites
    ):
        raise errors.BackupCorrupt(f"{where}: bundle prerequisites are not object ids")
    return BundleFile(
        key=key,
        size=_integer(value, "size", where=f"{where}: bundle"),
        sha256=digest,
        prerequisites=tuple(prerequisites),
    )
