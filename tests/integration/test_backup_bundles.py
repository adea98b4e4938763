"""Backup bundles made from a live repository and assembled back, with real git.

One history runs through the file: a full backup of a repository with branches, tags (an
annotated one too) and HEAD, then two incrementals after more pushes, a force push that drops
history and a deleted branch. Restores of each backup are checked against the repository it
came from, object by object, and by cloning them.
"""

import asyncio
import dataclasses
import datetime
import hashlib
import os
import pathlib

import pytest

from gitquorum import errors
from gitquorum.backup import bundling, layout, manifests, restoring
from gitquorum.replication import checksum
from gitquorum.server import settings, spawning
from tests.integration.helpers import Git

pytestmark = pytest.mark.integration

T0 = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=datetime.UTC)


@dataclasses.dataclass
class Made:
    manifest: manifests.Manifest
    path: pathlib.Path | None


@dataclasses.dataclass
class History:
    live: pathlib.Path
    work: pathlib.Path
    backups: list[Made]
    tmp: pathlib.Path


def _runner(git: Git) -> spawning.GitRunner:
    return spawning.GitRunner(
        settings.GitOptions(), settings.Limits(), environment={**os.environ, **git.env}
    )


def _snapshot(git: Git, live: pathlib.Path, generation: int) -> bundling.Snapshot:
    head = git.out("symbolic-ref", "HEAD", cwd=live)
    return bundling.Snapshot(generation=generation, head=head, refs=git.refs(live))


def _back_up(
    git: Git,
    live: pathlib.Path,
    scratch: pathlib.Path,
    *,
    snapshot: bundling.Snapshot,
    number: int,
    base: manifests.Manifest | None,
) -> Made:
    bundle = asyncio.run(
        bundling.create(
            _runner(git),
            repository=live,
            snapshot=snapshot,
            scratch=scratch,
            exclude=base.refs.values() if base is not None else (),
        )
    )
    created = T0 + datetime.timedelta(hours=number)
    backup_id = layout.new_backup_id(created, f"{number:08x}")
    bundle_file = (
        None
        if bundle is None
        else manifests.BundleFile(
            key=layout.bundle_key("backups/ns/repo/", backup_id),
            size=bundle.size,
            sha256=bundle.sha256,
            prerequisites=bundle.prerequisites,
        )
    )
    manifest = manifests.Manifest(
        id=backup_id,
        namespace="ns",
        repository="repo",
        created=created,
        generation=snapshot.generation,
        head=snapshot.head,
        refs=dict(snapshot.refs),
        checksum=checksum.of(snapshot.refs),
        kind="full" if base is None else "incremental",
        base=None if base is None else base.id,
        bundle=bundle_file,
    )
    # The manifest survives its JSON, as it will in the store.
    assert manifests.from_json(manifest.to_json()) == manifest
    return Made(manifest, None if bundle is None else bundle.path)


def _push(git: Git, work: pathlib.Path, *refspecs: str) -> None:
    git.run("push", "-q", "--force", "origin", *refspecs, cwd=work)


@pytest.fixture(scope="module")
def history(git: Git, tmp_path_factory: pytest.TempPathFactory) -> History:
    tmp = tmp_path_factory.mktemp("history")
    live = tmp / "live.git"
    work = tmp / "work"
    git.run("init", "-q", "--bare", str(live))
    git.run("clone", "-q", str(live), str(work))
    git.commit(work, "README", "one\n")
    git.commit(work, "src/a.txt", "a\n")
    git.run("checkout", "-q", "-b", "feature", cwd=work)
    git.commit(work, "src/b.txt", "b\n")
    git.commit(work, "src/c.txt", "c\n")
    git.run("checkout", "-q", "main", cwd=work)
    git.run("tag", "v0", "main~1", cwd=work)
    git.run("tag", "-a", "-m", "release one", "v1", "main", cwd=work)
    _push(git, work, "main", "feature", "v0", "v1")
    made = [_back_up(git, live, tmp / "b1", snapshot=_snapshot(git, live, 1), number=1, base=None)]

    # More pushes: a new commit on main, a new branch, a new annotated tag on an old commit.
    git.commit(work, "README", "two\n")
    git.run("checkout", "-q", "-b", "topic", cwd=work)
    git.commit(work, "topic.txt", "topic\n")
    git.run("checkout", "-q", "main", cwd=work)
    git.run("tag", "-a", "-m", "late tag", "v0.5", "main~2", cwd=work)
    _push(git, work, "main", "topic", "v0.5")
    made.append(
        _back_up(
            git, live, tmp / "b2", snapshot=_snapshot(git, live, 2), number=2, base=made[0].manifest
        )
    )

    # A force push that drops feature's history, and a deleted branch.
    git.run("checkout", "-q", "feature", cwd=work)
    git.run("reset", "-q", "--hard", "main~1", cwd=work)
    git.commit(work, "src/d.txt", "d\n")
    git.run("checkout", "-q", "main", cwd=work)
    _push(git, work, "feature", ":topic")
    made.append(
        _back_up(
            git, live, tmp / "b3", snapshot=_snapshot(git, live, 3), number=3, base=made[1].manifest
        )
    )
    return History(live=live, work=work, backups=made, tmp=tmp)


def _assemble(
    git: Git, chain: list[Made], scratch: pathlib.Path, target: manifests.Manifest | None = None
) -> list[pathlib.Path]:
    bundles = [(made.manifest, made.path) for made in chain if made.path is not None]
    return asyncio.run(
        restoring.assemble(
            _runner(git), scratch=scratch, bundles=bundles, target=target or chain[-1].manifest
        )
    )


def _objects(git: Git, repository: pathlib.Path, refs: dict[str, str]) -> set[str]:
    listed = git.run(
        "rev-list", "--objects", "--stdin", cwd=repository, input="\n".join(refs.values()).encode()
    )
    return {line.split(" ")[0] for line in listed.stdout.splitlines()}


def test_bundle_full_holds_every_ref_and_head(git: Git, history: History) -> None:
    full = history.backups[0]
    assert full.path is not None and full.manifest.bundle is not None
    header = bundling.read_header(full.path)
    assert header.prerequisites == ()
    assert dict((ref, oid) for oid, ref in header.refs) == {
        **full.manifest.refs,
        "HEAD": full.manifest.refs["refs/heads/main"],
    }
    assert full.manifest.bundle.size == full.path.stat().st_size
    assert full.manifest.bundle.sha256 == hashlib.sha256(full.path.read_bytes()).hexdigest()


def test_bundle_incremental_names_base_tips_as_prerequisites(git: Git, history: History) -> None:
    full, second = history.backups[0], history.backups[1]
    assert second.manifest.bundle is not None
    prerequisites = set(second.manifest.bundle.prerequisites)
    assert prerequisites
    base_commits = {
        git.out("rev-parse", f"{oid}^{{commit}}", cwd=history.live)
        for oid in full.manifest.refs.values()
    }
    assert prerequisites <= base_commits
    assert second.manifest.bundle.size < full.manifest.bundle.size  # type: ignore[union-attr]


def test_restore_chain_of_three_matches_manifest(git: Git, history: History) -> None:
    scratch = history.tmp / "restored3"
    packs = _assemble(git, history.backups, scratch)
    target = history.backups[-1].manifest
    assert git.refs(scratch) == dict(target.refs)
    assert git.out("symbolic-ref", "HEAD", cwd=scratch) == target.head
    assert _objects(git, scratch, dict(target.refs)) == _objects(
        git, history.live, dict(target.refs)
    )
    assert {path.suffix for path in packs} == {".pack", ".idx"}
    assert all(path.parent == scratch / "objects" / "pack" for path in packs)
    # Nothing outside the packs: the caller installs only them.
    assert git.out("count-objects", cwd=scratch).startswith("0 objects")


def test_restore_of_middle_backup_has_its_refs(git: Git, history: History) -> None:
    scratch = history.tmp / "restored2"
    _assemble(git, history.backups[:2], scratch)
    target = history.backups[1].manifest
    assert git.refs(scratch) == dict(target.refs)
    assert "refs/heads/topic" in target.refs


def test_restore_holds_objects_only_in_packs(git: Git, history: History) -> None:
    scratch = history.tmp / "packs-only"
    packs = _assemble(git, history.backups, scratch)
    target = dict(history.backups[-1].manifest.refs)
    # Only the returned pack files, in a repository of their own, hold every object.
    alone = history.tmp / "alone.git"
    git.run("init", "-q", "--bare", str(alone))
    for path in packs:
        (alone / "objects" / "pack" / path.name).write_bytes(path.read_bytes())
    for ref, oid in target.items():
        git.run("update-ref", ref, oid, cwd=alone)
    git.run("fsck", "--full", "--no-dangling", cwd=alone)
    assert _objects(git, alone, target) == _objects(git, history.live, target)


def test_restored_repository_clones(git: Git, history: History) -> None:
    scratch = history.tmp / "to-clone"
    _assemble(git, history.backups, scratch)
    clone = history.tmp / "clone"
    git.run("clone", "-q", "--no-local", str(scratch), str(clone))
    target = history.backups[-1].manifest
    assert git.out("rev-parse", "HEAD", cwd=clone) == target.refs["refs/heads/main"]
    assert (clone / "README").read_text() == "two\n"
    assert git.out("rev-parse", "origin/feature", cwd=clone) == target.refs["refs/heads/feature"]


def test_bundle_nothing_new_is_none(git: Git, history: History) -> None:
    last = history.backups[-1].manifest
    snapshot = bundling.Snapshot(generation=3, head=last.head, refs=dict(last.refs))
    made = _back_up(git, history.live, history.tmp / "none", snapshot=snapshot, number=4, base=last)
    assert made.path is None and made.manifest.bundle is None
    # A backup without a bundle restores from its chain all the same.
    scratch = history.tmp / "restored4"
    _assemble(git, [*history.backups, made], scratch)
    assert git.refs(scratch) == dict(last.refs)


def test_bundle_of_refs_moved_back_is_none(git: Git, history: History) -> None:
    # Only a ref set back to an older commit: nothing new to bundle, the refs still change.
    last = history.backups[-1].manifest
    refs = {**last.refs, "refs/heads/main": history.backups[0].manifest.refs["refs/heads/main"]}
    snapshot = bundling.Snapshot(generation=5, head=last.head, refs=refs)
    made = _back_up(git, history.live, history.tmp / "back", snapshot=snapshot, number=5, base=last)
    assert made.path is None
    scratch = history.tmp / "restored5"
    _assemble(git, [*history.backups, made], scratch)
    assert git.refs(scratch) == refs


def test_bundle_of_empty_repository_is_none(git: Git, tmp_path: pathlib.Path) -> None:
    live = tmp_path / "empty.git"
    git.run("init", "-q", "--bare", str(live))
    snapshot = bundling.Snapshot(generation=0, head="refs/heads/main", refs={})
    made = _back_up(git, live, tmp_path / "scratch", snapshot=snapshot, number=1, base=None)
    assert made.path is None
    scratch = tmp_path / "restored"
    assert _assemble(git, [made], scratch) == []
    assert git.refs(scratch) == {}


def test_bundle_is_of_the_snapshot_while_refs_move(
    git: Git, history: History, tmp_path: pathlib.Path
) -> None:
    live = tmp_path / "moving.git"
    git.run("clone", "-q", "--bare", str(history.live), str(live))
    snapshot = _snapshot(git, live, 7)
    work = tmp_path / "work"
    git.run("clone", "-q", str(live), str(work))
    git.commit(work, "later.txt", "after the snapshot\n")
    _push(git, work, "main", "main:refs/heads/later")
    made = _back_up(git, live, tmp_path / "scratch", snapshot=snapshot, number=1, base=None)
    assert made.path is not None
    refs = {ref: oid for oid, ref in bundling.read_header(made.path).refs if ref != "HEAD"}
    assert refs == dict(snapshot.refs)


def test_bundle_without_head_bundles_no_head(git: Git, history: History) -> None:
    snapshot = bundling.Snapshot(
        generation=1, head=None, refs=dict(history.backups[0].manifest.refs)
    )
    made = _back_up(
        git, history.live, history.tmp / "headless", snapshot=snapshot, number=1, base=None
    )
    assert made.path is not None
    assert "HEAD" not in {ref for _, ref in bundling.read_header(made.path).refs}


def test_restore_rejects_flipped_bytes(git: Git, history: History) -> None:
    second = history.backups[1]
    assert second.path is not None
    damaged = history.tmp / "damaged.bundle"
    data = bytearray(second.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    chain = [history.backups[0], Made(second.manifest, damaged)]
    with pytest.raises(
        errors.BackupCorrupt, match=f"backup {second.manifest.id}: bundle .* sha256"
    ):
        _assemble(git, chain, history.tmp / "flipped")


def test_restore_rejects_truncated_bundle(git: Git, history: History) -> None:
    second = history.backups[1]
    assert second.path is not None
    damaged = history.tmp / "short.bundle"
    damaged.write_bytes(second.path.read_bytes()[:-10])
    chain = [history.backups[0], Made(second.manifest, damaged)]
    with pytest.raises(errors.BackupCorrupt, match="bytes, its manifest says"):
        _assemble(git, chain, history.tmp / "short")


def _matching(manifest: manifests.Manifest, path: pathlib.Path) -> manifests.Manifest:
    """The manifest as if the damage had been there when it was written."""
    assert manifest.bundle is not None
    bundle = dataclasses.replace(
        manifest.bundle,
        size=path.stat().st_size,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    return dataclasses.replace(manifest, bundle=bundle)


def test_restore_rejects_pack_git_refuses(git: Git, history: History) -> None:
    second = history.backups[1]
    assert second.path is not None
    damaged = history.tmp / "refused.bundle"
    data = bytearray(second.path.read_bytes())
    data[-30] ^= 0xFF  # inside the pack's last object or its trailing checksum
    damaged.write_bytes(bytes(data))
    manifest = _matching(second.manifest, damaged)
    chain = [history.backups[0], Made(manifest, damaged)]
    with pytest.raises(errors.BackupCorrupt, match=f"backup {manifest.id}: git refused"):
        _assemble(git, chain, history.tmp / "refused", target=manifest)


def test_restore_rejects_missing_base_bundle(git: Git, history: History) -> None:
    # The incremental alone: its prerequisites are missing.
    with pytest.raises(errors.BackupCorrupt, match="git refused its bundle"):
        _assemble(git, history.backups[1:2], history.tmp / "no-base")


def test_restore_rejects_refs_not_in_the_objects(git: Git, history: History) -> None:
    full = history.backups[0]
    missing = "1" * 40
    refs = {**full.manifest.refs, "refs/heads/ghost": missing}
    target = dataclasses.replace(full.manifest, refs=refs, checksum=checksum.of(refs))
    with pytest.raises(errors.BackupCorrupt, match="its refs cannot be set"):
        _assemble(git, [full], history.tmp / "ghost", target=target)
