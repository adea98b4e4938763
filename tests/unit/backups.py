"""Manifests for the backup tests, made the short way."""

import datetime

from gitquorum.backup import layout, manifests
from gitquorum.replication import checksum

T0 = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=datetime.UTC)
"""A Monday noon, UTC."""

OID_A = "a" * 40
OID_B = "b" * 40


def backup_id(created: datetime.datetime, number: int = 0) -> str:
    return layout.new_backup_id(created, f"{number:08x}")


def manifest(
    created: datetime.datetime,
    *,
    number: int = 0,
    base: str | None = None,
    refs: dict[str, str] | None = None,
    bundle: bool = True,
) -> manifests.Manifest:
    refs = {"refs/heads/main": OID_A} if refs is None else refs
    identity = backup_id(created, number)
    return manifests.Manifest(
        id=identity,
        namespace="team",
        repository="app",
        created=created,
        generation=7,
        head="refs/heads/main",
        refs=refs,
        checksum=checksum.of(refs),
        kind="full" if base is None else "incremental",
        base=base,
        bundle=manifests.BundleFile(
            key=f"backups/team/app/{identity}/repository.bundle",
            size=123,
            sha256="c" * 64,
            prerequisites=() if base is None else (OID_B,),
        )
        if bundle
        else None,
    )
