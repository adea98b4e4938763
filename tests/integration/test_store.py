"""A replica's store across crashes: what a restart finds is finished, not guessed."""

import asyncio
import os
import pathlib
import subprocess

import pytest

from gitquorum import errors
from gitquorum.replication import state, store, transactions
from gitquorum.server import settings, spawning
from tests.integration.helpers import Git

pytestmark = pytest.mark.integration

ZERO = "0" * 40


def _store(data: pathlib.Path) -> store.Store:
    runner = spawning.GitRunner(
        settings.GitOptions(), settings.Limits(), environment=dict(os.environ)
    )
    return store.Store(
        data, repository=data / "repositories" / "r.git", runner=runner, default_branch="main"
    )


def _transaction(git: Git, tmp_path: pathlib.Path) -> tuple[transactions.Transaction, pathlib.Path]:
    """A transaction creating two branches, with a real pack of their objects."""
    work = tmp_path / "work"
    git.run("init", "-q", str(work))
    head = git.commit(work, "README", "hello\n")
    packs = tmp_path / "packs"
    packs.mkdir()
    subprocess.run(
        ["git", "pack-objects", "--revs", "-q", str(packs / "pack")],
        input=b"HEAD\n",
        cwd=work,
        check=True,
        env=git.env,
    )
    files = transactions.pack_files(packs)
    transaction = transactions.Transaction(
        id="f" * 32,
        term=1,
        generation=1,
        seq=1,
        changes=(
            transactions.Change("refs/heads/main", ZERO, head),
            transactions.Change("refs/heads/copy", ZERO, head),
        ),
        files=tuple(files),
    )
    return transaction, packs


async def _prepared(
    data: pathlib.Path, transaction: transactions.Transaction, packs: pathlib.Path
) -> store.Store:
    local = _store(data)
    await local.open()
    await asyncio.to_thread(
        transactions.link_into, packs, local.staging_for(transaction), transaction.files
    )
    await local.record_prepared(transaction)
    return local


def test_store_restart_finishes_a_half_applied_transaction(
    git: Git, tmp_path: pathlib.Path
) -> None:
    transaction, packs = _transaction(git, tmp_path)
    data = tmp_path / "data"

    async def scenario() -> store.Store:
        local = await _prepared(data, transaction, packs)
        # The crash: files installed and one of two refs moved, generation not recorded.
        transactions.install(
            local.staging_for(transaction),
            local.repository / "objects" / "pack",
            transaction.files,
        )
        first = transaction.changes[0]
        git.run("update-ref", first.ref, first.new, cwd=local.repository)
        again = _store(data)
        await again.open()
        return again

    again = asyncio.run(scenario())
    assert again.state.generation == 1
    assert again.state.prepared is None
    assert again.state.last_transaction == transaction.id
    assert git.refs(again.repository) == {c.ref: c.new for c in transaction.changes}
    git.run("fsck", "--strict", "--no-dangling", cwd=again.repository)


def test_store_restart_keeps_an_unapplied_transaction_prepared(
    git: Git, tmp_path: pathlib.Path
) -> None:
    transaction, packs = _transaction(git, tmp_path)
    data = tmp_path / "data"

    async def scenario() -> store.Store:
        await _prepared(data, transaction, packs)
        again = _store(data)
        await again.open()
        return again

    again = asyncio.run(scenario())
    assert again.state.generation == 0
    assert again.state.prepared == transaction
    assert git.refs(again.repository) == {}
    assert sorted(p.name for p in again.staging_for(transaction).iterdir()) == sorted(
        f.name for f in transaction.files
    )


def test_store_restart_removes_locks_a_killed_git_left(git: Git, tmp_path: pathlib.Path) -> None:
    """Seen under the operator fault suite: a node powered off while git update-ref held
    packed-refs.lock; every apply and copy then failed with "Unable to create ...lock"."""
    transaction, packs = _transaction(git, tmp_path)
    data = tmp_path / "data"

    async def scenario() -> store.Store:
        local = await _prepared(data, transaction, packs)
        (local.repository / "packed-refs.lock").write_text("")
        (local.repository / "refs" / "heads" / "main.lock").write_text("")
        again = _store(data)
        await again.open()
        await again.apply(transaction, check_old=True)
        return again

    again = asyncio.run(scenario())
    assert again.state.generation == 1
    assert list(again.repository.rglob("*.lock")) == []
    assert git.refs(again.repository) == {c.ref: c.new for c in transaction.changes}


@pytest.mark.parametrize("source", ["linked", "received"])
def test_store_records_a_prepared_transaction_with_its_files_then_applies_it(
    git: Git, tmp_path: pathlib.Path, source: str
) -> None:
    """The leader links a push's files and a follower writes those it received in the same
    step as the record (``record_prepared``); a restart then holds both, and the commit moves
    the refs in one thread hop."""
    transaction, packs = _transaction(git, tmp_path)
    data = tmp_path / "data"

    async def scenario() -> tuple[store.Store, store.Store]:
        local = _store(data)
        await local.open()
        if source == "linked":
            await local.record_prepared(transaction, link_from=packs)
        else:
            contents = [(packs / f.name).read_bytes() for f in transaction.files]
            await local.record_prepared(transaction, contents=contents)
        restarted = _store(data)
        await restarted.open()
        await restarted.apply(transaction, check_old=True)
        return local, restarted

    local, restarted = asyncio.run(scenario())
    assert local.state.prepared == transaction
    assert restarted.state.generation == 1
    assert restarted.state.prepared is None
    assert git.refs(restarted.repository) == {c.ref: c.new for c in transaction.changes}
    assert not restarted.staging_for(transaction).exists()
    installed = {p.name for p in (restarted.repository / "objects" / "pack").iterdir()}
    assert {f.name for f in transaction.files} <= installed


def test_store_refuses_received_files_that_do_not_match_their_checksum(
    git: Git, tmp_path: pathlib.Path
) -> None:
    transaction, packs = _transaction(git, tmp_path)
    data = tmp_path / "data"
    contents = [(packs / f.name).read_bytes() for f in transaction.files]
    pack = next(i for i, f in enumerate(transaction.files) if f.name.endswith(".pack"))
    contents[pack] = contents[pack][:-1] + bytes([contents[pack][-1] ^ 1])

    async def scenario() -> store.Store:
        local = _store(data)
        await local.open()
        with pytest.raises(errors.ReplicationError, match="checksum"):
            await local.record_prepared(transaction, contents=contents)
        return local

    local = asyncio.run(scenario())
    assert local.state.prepared is None
    assert state.StateFile(data / store.STATE_FILE).load().prepared is None
