"""Assembling a backup's objects and refs from its chain of bundles, checked before use.

A restore unbundles every bundle of the chain, full backup first, into a scratch bare
repository: ``git bundle unbundle`` checks each bundle's prerequisites are there and completes
a thin pack against the objects the earlier bundles brought. Then the target backup's refs and
HEAD are written exactly as its manifest lists them, and ``git fsck`` reads every object (not
only connectivity): a restore must fail here, before any replica sees the objects, rather than
install a repository that is damaged. What is returned are the scratch's pack files, which the
caller installs into the repository through the replication quorum.
"""

import asyncio
import hashlib
import pathlib
from collections.abc import Sequence

from gitquorum import errors
from gitquorum.backup import bundling, manifests
from gitquorum.replication import refstore
from gitquorum.server import spawning

READ_SIZE = 1024 * 1024


async def assemble(
    runner: spawning.GitRunner,
    *,
    scratch: pathlib.Path,
    bundles: Sequence[tuple[manifests.Manifest, pathlib.Path]],
    target: manifests.Manifest,
) -> list[pathlib.Path]:
    """Unbundles ``bundles`` (the target's chain, full first, as downloaded) into the new bare
    repository ``scratch``, sets the target's refs and HEAD, checks it all, and returns its
    ``.pack`` and ``.idx`` files. BackupCorrupt, with git's message, if anything fails."""
    present = [(manifest, path) for manifest, path in bundles if manifest.bundle is not None]
    for manifest, path in present:
        await asyncio.to_thread(check_file, manifest, path)
    await runner.run(["init", "--quiet", "--bare", str(scratch)])
    env = {"GIT_DIR": str(scratch)}
    for manifest, path in present:
        assert manifest.bundle is not None
        try:
            await runner.run(["bundle", "unbundle", str(path)], env=env)
        except errors.GitFailed as error:
            raise errors.BackupCorrupt(
                f"backup {manifest.id}: git refused its bundle {manifest.bundle.key}: "
                f"{error.message}"
            ) from error
    await _set_refs(runner, scratch=scratch, target=target)
    try:
        await runner.run(["fsck", "--full", "--no-dangling", "--no-progress"], env=env)
    except errors.GitFailed as error:
        raise errors.BackupCorrupt(
            f"backup {target.id}: the restored repository fails git fsck: {error.message}"
        ) from error
    return pack_files(scratch)


def check_file(manifest: manifests.Manifest, path: pathlib.Path) -> None:
    """Raises BackupCorrupt unless the downloaded bundle is the one the manifest describes."""
    bundle = manifest.bundle
    if bundle is None:
        return
    where = f"backup {manifest.id}: bundle {bundle.key}"
    size = path.stat().st_size
    if size != bundle.size:
        raise errors.BackupCorrupt(f"{where} is {size} bytes, its manifest says {bundle.size}")
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(READ_SIZE):
            digest.update(chunk)
    if digest.hexdigest() != bundle.sha256:
        raise errors.BackupCorrupt(f"{where} does not match the sha256 of its manifest")
    header = bundling.read_header(path)
    if set(header.prerequisites) != set(bundle.prerequisites):
        raise errors.BackupCorrupt(f"{where} needs other commits than its manifest lists")


async def _set_refs(
    runner: spawning.GitRunner, *, scratch: pathlib.Path, target: manifests.Manifest
) -> None:
    """Writes exactly the target's refs and HEAD; update-ref refuses a ref whose object is
    missing, and reading the refs back proves they are exactly the manifest's."""
    changes = refstore.differences({}, dict(target.refs))
    try:
        await refstore.apply(runner, str(scratch), changes, check_old=False)
        if target.head is not None:
            await refstore.set_head(runner, str(scratch), target.head)
    except errors.GitFailed as error:
        raise errors.BackupCorrupt(
            f"backup {target.id}: its refs cannot be set: {error.message}"
        ) from error
    found = await refstore.read_all(runner, str(scratch))
    if found != dict(target.refs):
        wrong = sorted(set(found.items()) ^ set(target.refs.items()))
        raise errors.BackupCorrupt(
            f"backup {target.id}: restored refs differ from its manifest: {wrong[:5]}"
        )


def pack_files(repository: pathlib.Path) -> list[pathlib.Path]:
    """The ``.pack`` and ``.idx`` files of a repository."""
    directory = repository / "objects" / "pack"
    return (
        sorted(path for path in directory.iterdir() if path.suffix in (".pack", ".idx"))
        if directory.is_dir()
        else []
    )
