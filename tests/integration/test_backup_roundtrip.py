"""A backup through a real object store and back: with gitquorum, and with plain git alone."""

import asyncio
import datetime
import os
import pathlib
import secrets

import pytest

from gitquorum.backup import bundling, catalog, layout, manifests, objectstore, restoring
from gitquorum.backup.location import Location
from gitquorum.replication import checksum
from gitquorum.server import settings, spawning
from tests.integration.helpers import Git
from tests.objectstore import ObjectStoreEndpoint

pytestmark = pytest.mark.integration

T0 = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=datetime.UTC)


def _back_up(
    git: Git, store: objectstore.ObjectStore, live: pathlib.Path, scratch: pathlib.Path, number: int
) -> manifests.Manifest:
    """One backup as the replica makes it: bundle, upload, manifest last."""
    runner = spawning.GitRunner(
        settings.GitOptions(), settings.Limits(), environment={**os.environ, **git.env}
    )
    kind, base = catalog.next_kind(store.list_manifests(), max_chain=5)
    snapshot = bundling.Snapshot(
        generation=number, head=git.out("symbolic-ref", "HEAD", cwd=live), refs=git.refs(live)
    )
    bundle = asyncio.run(
        bundling.create(
            runner,
            repository=live,
            snapshot=snapshot,
            scratch=scratch,
            exclude=base.refs.values() if base else (),
        )
    )
    created = T0 + datetime.timedelta(hours=number)
    backup_id = layout.new_backup_id(created, secrets.token_hex(4))
    prefix = store.location.prefix
    bundle_file = None
    if bundle is not None:
        key = layout.bundle_key(prefix, backup_id)
        store.upload(key, bundle.path)
        bundle_file = manifests.BundleFile(key, bundle.size, bundle.sha256, bundle.prerequisites)
    manifest = manifests.Manifest(
        id=backup_id,
        namespace="team",
        repository="app",
        created=created,
        generation=number,
        head=snapshot.head,
        refs=dict(snapshot.refs),
        checksum=checksum.of(snapshot.refs),
        kind=kind,
        base=base.id if base else None,
        bundle=bundle_file,
    )
    store.put_bytes(layout.manifest_key(prefix, backup_id), manifest.to_json())
    return manifest


@pytest.fixture
def backed_up(
    git: Git, object_store: ObjectStoreEndpoint, tmp_path: pathlib.Path
) -> tuple[objectstore.ObjectStore, list[manifests.Manifest]]:
    location = Location(
        endpoint=object_store.endpoint,
        bucket=object_store.bucket,
        prefix=layout.repository_prefix(f"rt-{secrets.token_hex(4)}", "team", "app"),
        access_key=object_store.access_key,
        secret_key=object_store.secret_key,
    )
    store = objectstore.ObjectStore(location)
    live, work = tmp_path / "live.git", tmp_path / "work"
    git.run("init", "-q", "--bare", str(live))
    git.run("clone", "-q", str(live), str(work))
    made = []
    for number in range(3):
        git.commit(work, f"file{number}", f"{number}\n")
        git.run("tag", "-a", "-m", f"tag {number}", f"v{number}", cwd=work)
        git.run("push", "-q", "origin", "main", f"v{number}", cwd=work)
        made.append(_back_up(git, store, live, tmp_path / f"scratch{number}", number))
    return store, made


def test_roundtrip_restores_through_the_store(
    git: Git,
    backed_up: tuple[objectstore.ObjectStore, list[manifests.Manifest]],
    tmp_path: pathlib.Path,
) -> None:
    store, made = backed_up
    found = store.list_manifests()
    assert found == made
    assert [m.kind for m in found] == ["full", "incremental", "incremental"]
    target = catalog.pick(found, before=None)
    assert target is not None
    bundles = []
    for manifest in catalog.chain(found, target.id):
        assert manifest.bundle is not None
        path = tmp_path / "download" / f"{manifest.id}.bundle"
        path.parent.mkdir(parents=True, exist_ok=True)
        store.download(manifest.bundle.key, path)
        bundles.append((manifest, path))
    runner = spawning.GitRunner(
        settings.GitOptions(), settings.Limits(), environment={**os.environ, **git.env}
    )
    scratch = tmp_path / "restored.git"
    asyncio.run(restoring.assemble(runner, scratch=scratch, bundles=bundles, target=target))
    assert git.refs(scratch) == dict(target.refs)


def test_roundtrip_restores_with_plain_git(
    git: Git,
    backed_up: tuple[objectstore.ObjectStore, list[manifests.Manifest]],
    tmp_path: pathlib.Path,
) -> None:
    # The steps the layout's documentation gives, with nothing of gitquorum but the download.
    store, made = backed_up
    restored = tmp_path / "plain.git"
    git.run("init", "-q", "--bare", str(restored))
    for manifest in made:
        assert manifest.bundle is not None
        path = tmp_path / f"{manifest.id}.bundle"
        store.download(manifest.bundle.key, path)
        git.run("bundle", "unbundle", str(path), cwd=restored)
    last = made[-1]
    for ref, oid in last.refs.items():
        git.run("update-ref", ref, oid, cwd=restored)
    assert last.head is not None
    git.run("symbolic-ref", "HEAD", last.head, cwd=restored)
    git.run("fsck", "--full", "--no-dangling", cwd=restored)
    clone = tmp_path / "clone"
    git.run("clone", "-q", str(restored), str(clone))
    assert (clone / "file2").read_text() == "2\n"
