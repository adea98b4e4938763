"""Which backups a restore needs, which one a point in time selects, and what to make next.

Pure functions over the manifests a listing found. Backups form chains: a full backup, then
incrementals each building on the one before. Restoring a backup means unbundling its whole
chain, so a missing link makes it unrestorable, and a long chain makes restores slow and
fragile: the next backup is full again once the chain holds ``max_chain`` incrementals.
"""

import datetime
from collections.abc import Sequence

from gitquorum import errors
from gitquorum.backup import manifests


def chain(backups: Sequence[manifests.Manifest], backup_id: str) -> list[manifests.Manifest]:
    """The backups restoring ``backup_id`` unbundles: its full backup first, it last."""
    by_id = {manifest.id: manifest for manifest in backups}
    if backup_id not in by_id:
        raise errors.BackupCorrupt(f"backup {backup_id} is not in the store")
    links = [by_id[backup_id]]
    while (base := links[-1].base) is not None:
        if base not in by_id:
            raise errors.BackupCorrupt(
                f"backup {links[-1].id} builds on {base}, which is not in the store"
            )
        # Manifests check that a base is older than its backup, so the walk cannot loop.
        links.append(by_id[base])
    links.reverse()
    return links


def pick(
    backups: Sequence[manifests.Manifest], *, before: datetime.datetime | None
) -> manifests.Manifest | None:
    """The newest backup made at or before ``before`` (the newest of all for None)."""
    candidates = [m for m in backups if before is None or m.created <= before]
    return max(candidates, key=lambda manifest: (manifest.created, manifest.id), default=None)


def next_kind(
    backups: Sequence[manifests.Manifest], *, max_chain: int
) -> tuple[manifests.Kind, manifests.Manifest | None]:
    """What the next backup is: full, or incremental on the newest backup (returned)."""
    newest = pick(backups, before=None)
    if newest is None:
        return "full", None
    try:
        links = chain(backups, newest.id)
    except errors.BackupCorrupt:
        # An incremental on a broken chain could never be restored.
        return "full", None
    if len(links) - 1 >= max_chain:
        return "full", None
    return "incremental", newest
