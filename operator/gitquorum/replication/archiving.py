"""Backups and restores, as one replica takes them (issue 11).

The operator asks; the replica works, because the replica holds the repository: copying it
elsewhere first would double the cost of every backup.

- A **backup** is taken by an in-sync follower (the leader keeps serving pushes): the refs it
  has applied, read at once, are one committed generation; a git bundle of what they reach
  (or of what changed since the newest backup in the store: an incremental) goes to the
  object store, then the manifest, last, so a backup without a manifest never counts.
- A **restore** is applied by the leader of a repository that is still empty: the chain of
  bundles leading to the chosen backup is downloaded, checked against its manifests and
  assembled in a scratch repository (``backup/restoring.py``: refs set, ``git fsck``), and its
  packs and refs are written through the quorum as one transaction (``Leadership.install``),
  so every replica starts from exactly the same refs.

Both are idempotent by backup id and joined when asked again while running (the operator
retries a request whose connection broke), and both log one line per step.
"""

import asyncio
import dataclasses
import datetime
import logging
import pathlib
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from gitquorum import errors
from gitquorum.backup import bundling, catalog, layout, manifests, restoring, stores
from gitquorum.backup.location import Location
from gitquorum.replication import checksum, messages, replica, transactions
from gitquorum.server import spawning

log = logging.getLogger(__name__)

SCRATCH_DIRECTORY = "archiving"
# Incrementals chained on one full backup at most (the CRD's bound): a restore downloads the
# whole chain.
MAX_CHAIN = 100

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class BackupRequest:
    """``POST /admin/backup``: take backup ``id`` of this replica's repository."""

    id: str
    namespace: str
    repository: str
    location: Location
    full: bool
    """Take a full backup even when an incremental one could build on the newest."""
    max_chain: int
    """Incrementals at most between two full backups."""
    allow_leader: bool
    """Whether the leader may take it (a repository of one replica has no follower)."""

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> "BackupRequest":
        max_chain = messages.integer(messages.field(message, "maxChain"), "maxChain")
        if max_chain > MAX_CHAIN:
            raise errors.MalformedMessage(f"maxChain above {MAX_CHAIN}")
        return cls(
            id=_backup_id(messages.field(message, "id")),
            namespace=_text(messages.field(message, "namespace"), "namespace"),
            repository=_text(messages.field(message, "repository"), "repository"),
            location=_location(messages.field(message, "location")),
            full=messages.boolean(messages.field(message, "full"), "full"),
            max_chain=max_chain,
            allow_leader=messages.boolean(messages.field(message, "allowLeader"), "allowLeader"),
        )


@dataclasses.dataclass(frozen=True)
class RestoreRequest:
    """``POST /admin/restore``: restore a backup of ``namespace/repository`` into this one."""

    location: Location
    namespace: str
    repository: str
    backup: str | None
    """The backup's id; None: the newest (not after ``before`` when given)."""
    before: datetime.datetime | None

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> "RestoreRequest":
        backup = message.get("backup")
        before = message.get("before")
        return cls(
            location=_location(messages.field(message, "location")),
            namespace=_text(messages.field(message, "namespace"), "namespace"),
            repository=_text(messages.field(message, "repository"), "repository"),
            backup=None if backup is None else _backup_id(backup),
            before=None if before is None else _time(before, "before"),
        )


def _text(value: object, what: str) -> str:
    # Kubernetes names are at most 253 characters of [a-z0-9.-].
    if not isinstance(value, str) or not 0 < len(value) <= 253:
        raise errors.MalformedMessage(f"{what} must be a name, not {messages.describe(value)}")
    return value


def _backup_id(value: object) -> str:
    try:
        return layout.check_backup_id(value)
    except errors.BackupError as error:
        raise errors.MalformedMessage(str(error)) from error


def _location(value: object) -> Location:
    if not isinstance(value, dict):
        raise errors.MalformedMessage("location must be an object")
    try:
        return Location.from_json(value)
    except errors.BackupError as error:
        raise errors.MalformedMessage(f"location: {error}") from error


def _time(value: object, what: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise errors.MalformedMessage(f"{what} must be an RFC 3339 time")
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise errors.MalformedMessage(f"{what} is not an RFC 3339 time: {value[:40]!r}") from error
    if parsed.tzinfo is None:
        raise errors.MalformedMessage(f"{what} needs a time zone (Z or +HH:MM)")
    return parsed.astimezone(datetime.UTC)


class Archivist:
    """Takes backups and restores for one replica; one job per backup id at a time."""

    def __init__(
        self, member: replica.Replica, *, runner: spawning.GitRunner, data: pathlib.Path
    ) -> None:
        self._replica = member
        self._runner = runner
        self._scratch = data / SCRATCH_DIRECTORY
        self._jobs: dict[str, asyncio.Future[manifests.Manifest]] = {}
        # Left by a run that ended mid-job: nothing in it is worth keeping.
        shutil.rmtree(self._scratch, ignore_errors=True)

    async def back_up(self, request: BackupRequest) -> manifests.Manifest:
        return await self._job(f"backup {request.id}", lambda: self._back_up(request))

    async def restore(self, request: RestoreRequest) -> manifests.Manifest:
        return await self._job("restore", lambda: self._restore(request))

    async def _job(
        self, key: str, start: Callable[[], Awaitable[manifests.Manifest]]
    ) -> manifests.Manifest:
        job = self._jobs.get(key)
        if job is None or job.done():
            job = asyncio.ensure_future(start())
            self._jobs[key] = job
            job.add_done_callback(lambda _: self._jobs.pop(key, None))
        # The job goes on if the asker's connection breaks: it asks again and joins it.
        return await asyncio.shield(job)

    # -- backup ---------------------------------------------------------------------------------

    async def _back_up(self, request: BackupRequest) -> manifests.Manifest:
        name = f"{request.namespace}/{request.repository}"
        self._require_source(request)
        local = self._replica.store
        # One applied state: generation, refs and head change together (store.apply).
        snapshot = bundling.Snapshot(
            generation=local.state.generation, head=local.head, refs=dict(local.refs)
        )
        # The id carries the time the operator created the backup; the manifest says the same.
        created = layout.created_of(request.id)
        store = stores.open_store(request.location)
        existing: list[manifests.Manifest] = await _step(
            name, "object store listed", asyncio.to_thread, store.list_manifests
        )
        for manifest in existing:
            if manifest.id == request.id:
                log.info("%s: backup %s already in the store", name, request.id)
                return manifest
        kind, base = catalog.next_kind(existing, max_chain=request.max_chain)
        if request.full:
            kind, base = "full", None
        scratch = self._scratch / request.id
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            bundle = await _step(
                name,
                f"{kind} bundle of generation {snapshot.generation} "
                f"({len(snapshot.refs)} refs) created",
                bundling.create,
                self._runner,
                repository=local.repository,
                snapshot=snapshot,
                scratch=scratch,
                exclude=tuple(base.refs.values()) if base is not None else (),
            )
            prefix = request.location.prefix
            bundle_file = None
            if bundle is not None:
                key = layout.bundle_key(prefix, request.id)
                await _step(
                    name,
                    f"bundle of {bundle.size} bytes uploaded to {key}",
                    asyncio.to_thread,
                    store.upload,
                    key,
                    bundle.path,
                )
                bundle_file = manifests.BundleFile(
                    key=key,
                    size=bundle.size,
                    sha256=bundle.sha256,
                    prerequisites=bundle.prerequisites,
                )
            manifest = manifests.Manifest(
                id=request.id,
                namespace=request.namespace,
                repository=request.repository,
                created=created,
                generation=snapshot.generation,
                head=snapshot.head if snapshot.head in snapshot.refs else None,
                refs=snapshot.refs,
                checksum=checksum.of(snapshot.refs),
                kind=kind,
                base=base.id if base is not None else None,
                bundle=bundle_file,
            )
            await _step(
                name,
                f"manifest written: backup {request.id} complete",
                asyncio.to_thread,
                store.put_bytes,
                layout.manifest_key(prefix, request.id),
                manifest.to_json(),
            )
            return manifest
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _require_source(self, request: BackupRequest) -> None:
        member = self._replica
        if member.leadership is not None and not request.allow_leader:
            raise errors.Unavailable(
                f"replica {member.id} leads: backups are taken from an in-sync follower"
            )
        if not member.readable or member.store.state.rebuilding:
            raise errors.Unavailable(
                f"replica {member.id} is not in sync (it holds no read lease): no backup here"
            )

    # -- restore --------------------------------------------------------------------------------

    async def _restore(self, request: RestoreRequest) -> manifests.Manifest:
        name = f"{request.namespace}/{request.repository}"
        leadership = self._replica.leadership
        if leadership is None:
            raise errors.Unavailable(f"replica {self._replica.id} does not lead: no restore here")
        store = stores.open_store(request.location)
        found: list[manifests.Manifest] = await _step(
            name, "object store listed", asyncio.to_thread, store.list_manifests
        )
        target = _choose(found, request)
        if self._replica.store.checksum == target.checksum and self._replica.store.refs:
            log.info("%s: backup %s is restored already", name, target.id)
            return target
        chain = catalog.chain(found, target.id)
        scratch = self._scratch / "restore"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            bundles = []
            for manifest in chain:
                if manifest.bundle is None:
                    continue
                path = scratch / "bundles" / f"{manifest.id}.bundle"
                path.parent.mkdir(parents=True, exist_ok=True)
                await _step(
                    name,
                    f"bundle {manifest.id} ({manifest.bundle.size} bytes) downloaded",
                    asyncio.to_thread,
                    store.download,
                    manifest.bundle.key,
                    path,
                )
                bundles.append((manifest, path))
            objects = scratch / "repository.git"
            await _step(
                name,
                f"{len(bundles)} bundles unbundled and checked (git fsck)",
                restoring.assemble,
                self._runner,
                scratch=objects,
                bundles=bundles,
                target=target,
            )
            changes = tuple(
                transactions.Change(ref=ref, old=transactions.ZERO_ID, new=oid)
                for ref, oid in sorted(target.refs.items())
            )
            await _step(
                name,
                f"backup {target.id} written through the quorum ({len(changes)} refs)",
                leadership.install,
                changes=changes,
                head=target.head,
                objects=objects / "objects",
            )
            return target
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _choose(found: list[manifests.Manifest], request: RestoreRequest) -> manifests.Manifest:
    where = f"{request.namespace}/{request.repository}"
    if request.backup is not None:
        for manifest in found:
            if manifest.id == request.backup:
                return manifest
        raise errors.BackupError(f"backup {request.backup} of {where} is not in the object store")
    picked = catalog.pick(found, before=request.before)
    if picked is None:
        after = f" taken before {request.before.isoformat()}" if request.before else ""
        raise errors.BackupError(f"the object store holds no backup of {where}{after}")
    return picked


async def _step(
    name: str, done: str, call: Callable[..., Awaitable[T]], *args: Any, **kw: Any
) -> T:
    """Runs one step of a job and logs it with the time it took."""
    started = time.monotonic()
    result = await call(*args, **kw)
    log.info("%s: %s in %.1f s", name, done, time.monotonic() - started)
    return result
