"""Where backups live in the object store.

Each repository has a prefix of its own, and each backup a directory of two objects below it::

    <path>/<namespace>/<repository>/<backup-id>/manifest.json
    <path>/<namespace>/<repository>/<backup-id>/repository.bundle

``<path>`` is the prefix configured for the store (empty for the bucket's root). A backup id is
``YYYYMMDDTHHMMSSZ-<8 lowercase hex>``: the UTC time the backup was made, then a random suffix
so two backups in the same second do not collide. Ids sort as their times do, so listing the
prefix lists the backups oldest first.

``manifest.json`` (see :mod:`gitquorum.backup.manifests`) names the backup's refs, HEAD, the
checksum of the refs, and the backup it builds on. It is written last: a backup without a
manifest is an upload that did not finish and counts for nothing. ``repository.bundle`` is a
plain git bundle (``git help bundle``); it is absent when nothing changed since the base.

A full backup's bundle holds every object its refs reach; an incremental backup's holds what is
new since its base, and names the base's ref tips as prerequisites. Restoring with plain git
and no gitquorum at all::

    git init --bare restored.git
    git -C restored.git bundle unbundle <full>/repository.bundle
    git -C restored.git bundle unbundle <incremental>/repository.bundle   # oldest first
    # then set each ref and HEAD as the last backup's manifest.json lists them:
    git -C restored.git update-ref refs/heads/main <oid>
    git -C restored.git symbolic-ref HEAD refs/heads/main
"""

import datetime
import re

from gitquorum import errors

MANIFEST_NAME = "manifest.json"
BUNDLE_NAME = "repository.bundle"

_BACKUP_ID = re.compile(r"(\d{8}T\d{6}Z)-([0-9a-f]{8})")
_SUFFIX = re.compile(r"[0-9a-f]{8}")
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# A namespace or repository name becomes one level of the key: a slash or a dot-only name
# would move it elsewhere in the store.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def repository_prefix(path: str, namespace: str, repository: str) -> str:
    """The key prefix of a repository's backups, ending in ``/``."""
    for name, value in (("namespace", namespace), ("repository", repository)):
        if not _SEGMENT.fullmatch(value):
            raise ValueError(f"{name} {value!r} cannot be part of an object key")
    base = path.strip("/")
    return f"{base}/{namespace}/{repository}/" if base else f"{namespace}/{repository}/"


def new_backup_id(created: datetime.datetime, suffix: str) -> str:
    """The id of a backup made at ``created`` (timezone-aware); ``suffix`` is 8 random hex
    digits, as ``secrets.token_hex(4)`` gives."""
    if created.tzinfo is None:
        raise ValueError("a backup's creation time must be timezone-aware")
    if not _SUFFIX.fullmatch(suffix):
        raise ValueError(f"a backup id's suffix is 8 lowercase hex digits, not {suffix!r}")
    return f"{created.astimezone(datetime.UTC).strftime(_TIME_FORMAT)}-{suffix}"


def check_backup_id(value: object) -> str:
    """``value`` if it is a well-formed backup id; BackupError otherwise (ids come from
    requests and from the store's listings, not only from us)."""
    if not isinstance(value, str):
        raise errors.BackupError(f"malformed backup id: a {type(value).__name__}")
    created_of(value)
    return value


def created_of(backup_id: str) -> datetime.datetime:
    """The UTC time a backup id names; BackupError for a malformed id."""
    match = _BACKUP_ID.fullmatch(backup_id)
    if match is None:
        raise errors.BackupError(f"malformed backup id {backup_id[:80]!r}")
    try:
        moment = datetime.datetime.strptime(match.group(1), _TIME_FORMAT)
    except ValueError as error:
        raise errors.BackupError(f"malformed backup id {backup_id[:80]!r}: {error}") from error
    return moment.replace(tzinfo=datetime.UTC)


def manifest_key(prefix: str, backup_id: str) -> str:
    return f"{prefix}{check_backup_id(backup_id)}/{MANIFEST_NAME}"


def bundle_key(prefix: str, backup_id: str) -> str:
    return f"{prefix}{check_backup_id(backup_id)}/{BUNDLE_NAME}"


def backup_id_of(key: str) -> str | None:
    """The backup id of a manifest or bundle key; None for any other key."""
    parts = key.rsplit("/", 2)
    if len(parts) < 2 or parts[-1] not in (MANIFEST_NAME, BUNDLE_NAME):
        return None
    try:
        return check_backup_id(parts[-2])
    except errors.BackupError:
        return None
