"""Maintenance, scrubs and repairs on a repository with real git, without replica processes:
what is counted, what each repack keeps and removes, and what a scrub finds and a repair
puts right."""

import asyncio
import contextlib
import os
import pathlib
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from gitquorum.replication import (
    housekeeping,
    maintenance,
    refstore,
    scrubbing,
    store,
    transactions,
)
from gitquorum.server import settings, spawning
from tests.integration.helpers import Git

pytestmark = pytest.mark.integration

HOUR = 3600.0


@pytest.fixture
def runner(git: Git, tmp_path: pathlib.Path) -> spawning.GitRunner:
    return spawning.GitRunner(
        settings.GitOptions(),
        settings.Limits(),
        environment=git.env,
        config=store.git_config(tmp_path / "hooks"),
    )


def _repository(git: Git, tmp_path: pathlib.Path, pushes: int) -> tuple[pathlib.Path, pathlib.Path]:
    """A bare repository with one pack per push (as replicas keep them), and its work tree."""
    bare = tmp_path / "repo.git"
    work = tmp_path / "work"
    git.run("init", "-q", "--bare", str(bare))
    git.run("config", "receive.unpackLimit", "1", cwd=bare)
    git.run("init", "-q", str(work))
    for index in range(pushes):
        git.commit(work, f"file{index}", f"{index}\n" * 50)
        git.run("push", "-q", str(bare), "main", cwd=work)
    return bare, work


def _stats(bare: pathlib.Path) -> maintenance.Stats:
    return housekeeping.collect(bare, stale_before=time.time() - HOUR)


@contextlib.asynccontextmanager
async def _no_lock() -> AsyncIterator[None]:
    yield


def _roots(
    git: Git, bare: pathlib.Path, replaced: Sequence[str] = (), no_prune: str | None = None
) -> housekeeping.Roots:
    return housekeeping.Roots(
        refs=git.refs(bare), head="refs/heads/main", replaced=list(replaced), no_prune=no_prune
    )


def _run(
    runner: spawning.GitRunner,
    bare: pathlib.Path,
    plan: maintenance.Plan,
    roots: housekeeping.Roots,
    *,
    expire_before: float | None = None,
) -> housekeeping.Result:
    keeper = housekeeping.Housekeeper(
        runner=runner, repository=bare, workspace=bare.parent / "upkeep"
    )

    async def run() -> housekeeping.Result:
        return await keeper.run(
            plan, refs_lock=_no_lock, roots=lambda: roots, expire_before=expire_before
        )

    return asyncio.run(run())


def _age(bare: pathlib.Path, seconds: float) -> None:
    """Makes every object file look ``seconds`` old."""
    then = time.time() - seconds
    for path in (bare / "objects").rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


def _exists(git: Git, bare: pathlib.Path, object_id: str) -> bool:
    return git.run("cat-file", "-e", object_id, cwd=bare, check=False).returncode == 0


def test_collect_counts_packs_loose_objects_refs_and_indexes(
    git: Git, tmp_path: pathlib.Path
) -> None:
    bare, _ = _repository(git, tmp_path, pushes=4)
    git.run("hash-object", "-w", "--stdin", cwd=bare, input=b"loose\n")
    stats = _stats(bare)
    assert (stats.packs, stats.cruft_packs, stats.midx_packs) == (4, 0, None)
    assert stats.loose_objects == 1 and stats.loose_bytes > 0 and stats.stale_loose_objects == 0
    assert stats.loose_refs == 1 and stats.packed_refs_bytes == 0
    assert not (stats.has_bitmap or stats.has_commit_graph or stats.has_reflogs)
    assert stats.size_bytes == stats.pack_bytes + stats.loose_bytes
    assert housekeeping.collect(bare, stale_before=time.time() + 1).stale_loose_objects == 1


def test_geometric_repack_rolls_packs_up_and_writes_the_indexes(
    git: Git, tmp_path: pathlib.Path, runner: spawning.GitRunner
) -> None:
    bare, _ = _repository(git, tmp_path, pushes=12)
    refs = git.refs(bare)
    plan = maintenance.plan(_stats(bare), since_full_repack=0.0, settings=maintenance.Settings())
    assert plan.repack is maintenance.Repack.GEOMETRIC and plan.commit_graph
    result = _run(runner, bare, plan, _roots(git, bare))
    assert [name for name, _ in result.tasks] == ["geometric-repack", "commit-graph"]
    after = _stats(bare)
    assert after.packs <= 2 and after.midx_packs == after.packs
    assert after.has_bitmap and after.has_commit_graph and after.has_bloom_filters
    assert maintenance.plan(after, since_full_repack=0.0, settings=maintenance.Settings()).empty
    assert git.refs(bare) == refs
    git.run("fsck", "--full", "--strict", "--no-dangling", cwd=bare)


def test_pack_refs_packs_the_loose_refs(
    git: Git, tmp_path: pathlib.Path, runner: spawning.GitRunner
) -> None:
    bare, work = _repository(git, tmp_path, pushes=1)
    for index in range(20):
        git.run("push", "-q", str(bare), f"main:refs/tags/t{index}", cwd=work)
    refs = git.refs(bare)
    stats = _stats(bare)
    assert maintenance.needs_pack_refs(stats.loose_refs, stats.packed_refs_bytes)
    _run(runner, bare, maintenance.Plan(pack_refs=True), _roots(git, bare))
    after = _stats(bare)
    assert after.loose_refs == 0 and after.packed_refs_bytes > 0
    assert git.refs(bare) == refs


def test_full_repack_expires_only_what_nothing_could_still_need(
    git: Git, tmp_path: pathlib.Path, runner: spawning.GitRunner
) -> None:
    bare, work = _repository(git, tmp_path, pushes=3)
    tips = {}
    for name in ("gone", "replaced"):
        git.run("checkout", "-q", "-b", name, "main", cwd=work)
        tips[name] = git.commit(work, f"{name}.txt", f"{name}\n")
        git.run("push", "-q", str(bare), name, cwd=work)
        git.run("push", "-q", str(bare), f":{name}", cwd=work)
    _age(bare, 2 * HOUR)
    git.run("checkout", "-q", "-b", "newest", "main", cwd=work)
    tips["newest"] = git.commit(work, "newest.txt", "newest\n")
    git.run("push", "-q", str(bare), "newest", cwd=work)
    git.run("push", "-q", str(bare), ":newest", cwd=work)
    plan = maintenance.Plan(repack=maintenance.Repack.FULL)
    result = _run(
        runner,
        bare,
        plan,
        _roots(git, bare, replaced=[tips["replaced"], "0" * 39 + "1"]),
        expire_before=time.time() - HOUR,
    )
    assert result.pruned and result.no_prune is None
    assert not _exists(git, bare, tips["gone"]), "unreachable for long: expired"
    assert _exists(git, bare, tips["replaced"]), "a replaced ref's value is kept"
    assert _exists(git, bare, tips["newest"]), "written within the expiry: kept"
    stats = _stats(bare)
    assert stats.cruft_packs == 1 and stats.has_bitmap and stats.midx_packs == stats.packs
    git.run("fsck", "--full", "--strict", "--no-dangling", cwd=bare)


def test_full_repack_expires_nothing_when_told_not_to(
    git: Git, tmp_path: pathlib.Path, runner: spawning.GitRunner
) -> None:
    bare, work = _repository(git, tmp_path, pushes=2)
    git.run("checkout", "-q", "-b", "gone", "main", cwd=work)
    gone = git.commit(work, "gone.txt", "gone\n")
    git.run("push", "-q", str(bare), "gone", cwd=work)
    git.run("push", "-q", str(bare), ":gone", cwd=work)
    _age(bare, 2 * HOUR)
    plan = maintenance.Plan(repack=maintenance.Repack.FULL)
    roots = _roots(git, bare, no_prune="a transaction is held prepared")
    result = _run(runner, bare, plan, roots, expire_before=time.time() - HOUR)
    assert not result.pruned and "prepared" in result.describe()
    assert _exists(git, bare, gone)
    assert _stats(bare).cruft_packs == 1


def _flip_middle_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def test_scrub_finds_flipped_bytes_and_repair_puts_them_right(
    git: Git, tmp_path: pathlib.Path, runner: spawning.GitRunner
) -> None:
    source, _ = _repository(git, tmp_path, pushes=3)
    damaged = tmp_path / "damaged.git"
    git.run("clone", "-q", "--bare", str(source), str(damaged))
    git.run("repack", "-q", "-a", "-d", cwd=damaged)
    (pack,) = (damaged / "objects" / "pack").glob("*.pack")
    _flip_middle_byte(pack)
    findings = asyncio.run(scrubbing.scrub(runner, damaged, strict=True))
    assert findings.damaged and findings.bad_packs == {pack.stem}
    _repair_and_verify(git, runner, damaged, source, findings, tmp_path)
    assert list((tmp_path / "aside").rglob(pack.name)), "the damaged pack is kept aside"


def test_scrub_finds_a_deleted_loose_object_and_repair_fetches_it(
    git: Git, tmp_path: pathlib.Path, runner: spawning.GitRunner
) -> None:
    source, work = _repository(git, tmp_path, pushes=3)
    damaged = tmp_path / "damaged.git"
    git.run("init", "-q", "--bare", str(damaged))
    git.run("push", "-q", str(damaged), "main", cwd=work)  # small: unpacked, loose objects
    tree = git.out("rev-parse", "main~1^{tree}", cwd=work)
    (damaged / "objects" / tree[:2] / tree[2:]).unlink()
    findings = asyncio.run(scrubbing.scrub(runner, damaged, strict=True))
    assert findings.damaged and tree in findings.missing
    _repair_and_verify(git, runner, damaged, source, findings, tmp_path)


def _repair_and_verify(
    git: Git,
    runner: spawning.GitRunner,
    damaged: pathlib.Path,
    source: pathlib.Path,
    findings: scrubbing.Findings,
    tmp_path: pathlib.Path,
) -> None:
    refs = git.refs(damaged)
    repairer = scrubbing.Repairer(
        runner=runner,
        repository=damaged,
        workspace=tmp_path / "workspace",
        damaged=tmp_path / "aside",
        token="not-used-for-a-path",
    )
    done = asyncio.run(
        repairer.repair(findings, scrubbing.Source("source", str(source)), tips=[*refs.values()])
    )
    assert done
    verified = asyncio.run(scrubbing.scrub(runner, damaged, strict=True))
    assert not verified.damaged, verified.summary()
    assert git.refs(damaged) == refs
    git.run("fsck", "--full", "--strict", "--no-dangling", cwd=damaged)


def test_rebuild_sets_everything_aside_and_fetches_what_the_refs_reach(
    git: Git, tmp_path: pathlib.Path, runner: spawning.GitRunner
) -> None:
    source, _ = _repository(git, tmp_path, pushes=3)
    damaged = tmp_path / "damaged.git"
    git.run("clone", "-q", "--bare", str(source), str(damaged))
    refs = git.refs(damaged)
    repairer = scrubbing.Repairer(
        runner=runner,
        repository=damaged,
        workspace=tmp_path / "workspace",
        damaged=tmp_path / "aside",
        token="not-used-for-a-path",
    )
    source_url = scrubbing.Source("source", str(source))
    asyncio.run(repairer.rebuild(source_url, tips=list(refs.values())))
    assert list((tmp_path / "aside").rglob("*.pack"))
    git.run("fsck", "--full", "--strict", "--no-dangling", cwd=damaged)
    assert git.refs(damaged) == refs


def _change(ref: str, old: str, new: str) -> transactions.Change:
    return transactions.Change(ref=ref, old=old, new=new)


def test_follower_writes_refs_itself_beside_packed_refs(git: Git, tmp_path: pathlib.Path) -> None:
    bare, work = _repository(git, tmp_path, pushes=2)
    first, second = git.out("rev-list", "--reverse", "main", cwd=work).split()
    git.run("push", "-q", str(bare), f"{first}:refs/heads/a", f"{first}:refs/tags/v1", cwd=work)
    git.run("pack-refs", "--all", cwd=bare)
    assert not (bare / "refs" / "heads" / "main").exists()
    zero = transactions.ZERO_ID

    assert refstore.write_loose(bare, [_change("refs/heads/main", first, second)]) is False
    assert refstore.write_loose(bare, [_change("refs/heads/a", first, second)]) is True
    assert refstore.write_loose(bare, [_change("refs/heads/new", zero, first)]) is True
    assert refstore.write_loose(bare, [_change("refs/heads/a/b", zero, first)]) is False
    assert refstore.write_loose(bare, [_change("refs/tags", zero, first)]) is False
    stale = [_change("refs/heads/c", zero, first), _change("refs/tags/v1", second, first)]
    assert refstore.write_loose(bare, stale) is False
    refs = git.refs(bare)
    assert refs["refs/heads/a"] == second and refs["refs/heads/new"] == first
    assert "refs/heads/c" not in refs and refs["refs/tags/v1"] == first
    assert not list(bare.rglob("*.lock")), "a refused write leaves no lock behind"
    git.run("fsck", "--no-dangling", cwd=bare)


def test_follower_leaves_unreadable_packed_refs_to_git(git: Git, tmp_path: pathlib.Path) -> None:
    bare, work = _repository(git, tmp_path, pushes=1)
    head = git.out("rev-parse", "main", cwd=work)
    (bare / "packed-refs").write_text("# pack-refs with: peeled\nnot a ref line\n")
    change = _change("refs/heads/other", transactions.ZERO_ID, head)
    assert refstore.write_loose(bare, [change]) is False
