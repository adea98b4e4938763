"""A replica's repository and durable state, and the only code that changes either.

Every change follows the same order, so that a crash at any point leaves a state a restart
can finish: objects first (a transaction's pack files are staged and fsynced before it is
confirmed as prepared), then the record of intent (the prepared transaction in the state
file), then the refs (one ``git update-ref`` transaction), then the new generation. On
start, a prepared transaction any of whose refs already shows its new value was being
applied when the replica stopped (refs move only once a transaction is decided), so it is
applied to the end; otherwise it stays prepared for the leader to resolve.

The ref map and its checksum are kept in memory, loaded from git at start and updated with
every transaction, so that comparing replicas costs nothing.
"""

import asyncio
import dataclasses
import functools
import hashlib
import logging
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from gitquorum import errors
from gitquorum.replication import checksum, decisions, history, refstore, state, transactions
from gitquorum.server import spawning

log = logging.getLogger(__name__)

Staging = Callable[[], Sequence[pathlib.Path]]
"""Writes a transaction's files (blocking); returns what must be fsynced for them to last."""

STAGING_DIRECTORY = "transactions"
STATE_FILE = "state.json"
PACK_TRAILER_BYTES = 20
SMALL_TRANSACTION_BYTES = 1024 * 1024


def git_config(hooks: pathlib.Path) -> dict[str, str]:
    """git configuration of a replica, on top of the server's."""
    return {
        # Durable before acknowledged: git fsyncs packs, loose objects and ref files.
        "core.fsync": "objects,reference",
        "core.fsyncMethod": "fsync",
        "core.hooksPath": str(hooks),
        # Every push keeps its pack as is, so the files replicated are the files received.
        "receive.unpackLimit": "1",
        "fetch.unpackLimit": "1",
        # No repacking behind the replica's back in the middle of a push or a copy.
        "receive.autoGc": "false",
        "gc.auto": "0",
    }


class Store:
    """The repository of one replica with its state; one instance per replica process."""

    def __init__(
        self,
        data: pathlib.Path,
        *,
        repository: pathlib.Path,
        runner: spawning.GitRunner,
        default_branch: str,
    ) -> None:
        self.data = data
        self.repository = repository
        self.staging = data / STAGING_DIRECTORY
        self._file = state.StateFile(data / STATE_FILE)
        self._runner = runner
        self._default_branch = default_branch
        self.state = state.State()
        self.refs: dict[str, str] = {}
        self.checksum = checksum.EMPTY
        self.head = f"refs/heads/{default_branch}"
        self._saving = asyncio.Lock()
        self.history = history.History()
        """Ref values replaced lately, recorded before the refs move: maintenance keeps what
        they reach (``housekeeping``)."""

    @property
    def git_dir(self) -> str:
        return str(self.repository)

    @property
    def applied(self) -> decisions.Applied:
        return decisions.Applied(self.state.generation, self.state.last_transaction, self.checksum)

    async def open(self) -> None:
        """Creates the repository if missing, loads the state, finishes an interrupted apply."""
        self.staging.mkdir(parents=True, exist_ok=True)
        self.repository.parent.mkdir(parents=True, exist_ok=True)
        if not (self.repository / "HEAD").is_file():
            await self._runner.run(
                [
                    "init",
                    "--quiet",
                    "--bare",
                    f"--initial-branch={self._default_branch}",
                    self.git_dir,
                ]
            )
        self.state = await asyncio.to_thread(self._file.load)
        await asyncio.to_thread(self._remove_stale_locks)
        await self.reload_refs()
        prepared = self.state.prepared
        if prepared is not None and self._partly_applied(prepared):
            log.warning(
                "transaction %s (generation %s) was being applied when the replica stopped: "
                "finishing it",
                prepared.id,
                prepared.generation,
            )
            await self.apply(prepared, check_old=False)
        self._discard_stale_staging()

    def _remove_stale_locks(self) -> None:
        """Removes the lock files a git killed mid-way left (a node powered off, a SIGKILL).

        git never removes another process's lock: it refuses to touch the ref or packed-refs
        (``Unable to create ...lock: File exists``) until someone does, and every apply and
        copy here would fail from then on. The replica is the only writer of its repository
        and runs no git yet, so every lock found now is stale.
        """
        for lock in self.repository.rglob("*.lock"):
            if lock.is_file():
                log.warning("removing %s, left by a git that did not finish", lock)
                lock.unlink(missing_ok=True)

    async def reload_refs(self) -> None:
        self.refs = await refstore.read_all(self._runner, self.git_dir)
        self.checksum = checksum.of(self.refs)
        self.head = await refstore.read_head(self._runner, self.git_dir)

    def _partly_applied(self, transaction: transactions.Transaction) -> bool:
        return any(
            self.refs.get(change.ref, transactions.ZERO_ID) == change.new
            for change in transaction.changes
            if change.new != change.old
        )

    def _discard_stale_staging(self) -> None:
        keep = self.state.prepared.id if self.state.prepared is not None else None
        for directory in self.staging.iterdir():
            if directory.name != keep:
                transactions.discard(directory)

    async def update(self, *, staged: Staging | None = None, **changes: Any) -> None:
        """Changes fields of the state, durably, one change at a time.

        Each change is derived from the state as it is when its turn comes, so concurrent
        changes (a new term while a transaction is prepared) never undo each other.
        ``staged`` writes files (in the same thread as the state) that must be durable
        before the new state is, and returns them: they are fsynced together with it.
        """
        async with self._saving:
            new = dataclasses.replace(self.state, **changes)
            await asyncio.to_thread(self._save, new, staged)
            self.state = new

    def _save(self, new: state.State, staged: Staging | None) -> None:
        self._file.save(new, durable_first=staged() if staged is not None else ())

    async def observe_term(self, term: int, leader: str | None) -> None:
        """Records a newer term (and its leader) before anything is done under it."""
        if term < self.state.term:
            raise errors.Fenced(f"term {term} is older than {self.state.term}")
        if term > self.state.term or leader != self.state.leader:
            await self.update(term=max(term, self.state.term), leader=leader)

    # -- prepare --------------------------------------------------------------------------------

    def staging_for(self, transaction: transactions.Transaction) -> pathlib.Path:
        return self.staging / transaction.id

    async def stage_from_quarantine(
        self, transaction: transactions.Transaction, quarantine: pathlib.Path | None
    ) -> None:
        """The leader's copy of a push's files: links to git's quarantine, made durable."""
        if quarantine is None or not transaction.files:
            return
        await asyncio.to_thread(
            transactions.link_into,
            quarantine / "pack",
            self.staging_for(transaction),
            transaction.files,
        )

    async def stage_from_stream(
        self, transaction: transactions.Transaction, body: AsyncIterator[bytes]
    ) -> None:
        """A follower's copy of a push's files, read from the leader's message, checked."""
        staging = self.staging_for(transaction)
        transactions.discard(staging)
        contents = await self.receive_small(transaction, body)
        if contents is not None:
            # Most pushes are small: read them whole and write, check and fsync them in one
            # thread hop rather than one per step.
            await asyncio.to_thread(_write_and_sync, staging, transaction.files, contents)
            return
        staging.mkdir(parents=True)
        reader = _Exact(body)
        for file in transaction.files:
            path = staging / file.name
            with path.open("wb") as output:
                async for chunk in reader.take(file.size):
                    output.write(chunk)
                output.flush()
                await asyncio.to_thread(os.fsync, output.fileno())
            if file.name.endswith(".pack"):
                await asyncio.to_thread(_check_trailer, path, file.size)
        await reader.end()
        await asyncio.to_thread(transactions.fsync_directory, staging)

    async def receive_small(
        self, transaction: transactions.Transaction, body: AsyncIterator[bytes]
    ) -> list[bytes] | None:
        """The files of a small transaction read whole from the leader's message, for
        ``record_prepared``; None for a large one, which ``stage_from_stream`` writes as it
        comes."""
        if transaction.size > SMALL_TRANSACTION_BYTES:
            return None
        contents = []
        reader = _Exact(body)
        for file in transaction.files:
            contents.append(b"".join([chunk async for chunk in reader.take(file.size)]))
        await reader.end()
        return contents

    async def record_prepared(
        self,
        transaction: transactions.Transaction,
        *,
        contents: list[bytes] | None = None,
        link_from: pathlib.Path | None = None,
    ) -> None:
        """Records ``transaction`` as prepared, its files staged first: already (by default),
        or now from ``contents`` (``receive_small``) or as links to ``link_from``'s files.

        Files given here are written and the record with them in one thread hop, and fsynced
        together: two rounds of fsync (all of them, then the state's rename) where staging
        first and recording after took six in a row, on the path of every push.
        """
        # Before any ref moves: on the leader, git moves them once this is recorded.
        self.history.record(
            change.old
            for change in transaction.changes
            if change.old != transactions.ZERO_ID and change.old != change.new
        )
        previous = self.state.prepared
        staging = self.staging_for(transaction)
        staged: Staging | None = None
        if contents is not None:
            staged = functools.partial(_write_small, staging, transaction.files, contents)
        elif link_from is not None and transaction.files:
            staged = functools.partial(
                transactions.link_files, link_from, staging, transaction.files
            )
        await self.update(prepared=transaction, staged=staged)
        if previous is not None and previous.id != transaction.id:
            transactions.discard(self.staging / previous.id)

    async def drop_prepared(self, transaction_id: str | None = None) -> None:
        prepared = self.state.prepared
        if prepared is None or (transaction_id is not None and prepared.id != transaction_id):
            return
        await self.update(prepared=None)
        transactions.discard(self.staging_for(prepared))

    # -- apply ----------------------------------------------------------------------------------

    async def apply(
        self,
        transaction: transactions.Transaction,
        *,
        check_old: bool,
        applied_by_git: frozenset[str] = frozenset(),
    ) -> None:
        """Installs a decided transaction's files, moves its refs, records its generation.

        ``applied_by_git`` names refs that git receive-pack reported as updated (with the
        files already moved in): they are recorded, not written again.
        """
        staging = self.staging_for(transaction)
        pending = [
            change
            for change in transaction.changes
            if self.refs.get(change.ref, transactions.ZERO_ID) != change.new
        ]
        to_write = [change for change in pending if change.ref not in applied_by_git]
        head = transaction.head if transaction.head not in (None, self.head) else None
        async with self._saving:
            applied = dataclasses.replace(
                self.state,
                generation=transaction.generation,
                last_term=transaction.term,
                last_seq=transaction.seq,
                last_transaction=transaction.id,
                prepared=None,
            )
            # A follower's usual commit (refs written here, HEAD unchanged) is one thread hop;
            # anything else, or a ref this cannot write itself, goes through git.
            done = head is None and (check_old or not to_write)
            if done:
                done = await asyncio.to_thread(
                    self._apply_here, transaction, staging, to_write, applied
                )
            if not done:
                await self._apply_with_git(transaction, to_write, check_old=check_old, head=head)
                await asyncio.to_thread(self._file.save, applied)
                transactions.discard(staging)
            # No await from here: whoever reads the applied state sees generation, refs and
            # checksum change together, never one without the others.
            self.state = applied
            self._record_changes(pending)

    def _apply_here(
        self,
        transaction: transactions.Transaction,
        staging: pathlib.Path,
        to_write: list[transactions.Change],
        applied: state.State,
    ) -> bool:
        """Files, refs, generation, in this order, each durable before the next (blocking);
        False, with the files perhaps installed and nothing else changed, when the refs are
        left to git (``refstore.write_loose``)."""
        if to_write:
            transactions.install(staging, self.repository / "objects" / "pack", transaction.files)
            if not refstore.write_loose(self.repository, to_write):
                return False
        self._file.save(applied)
        transactions.discard(staging)
        return True

    async def _apply_with_git(
        self,
        transaction: transactions.Transaction,
        to_write: list[transactions.Change],
        *,
        check_old: bool,
        head: str | None,
    ) -> None:
        if to_write:
            await asyncio.to_thread(
                transactions.install,
                self.staging_for(transaction),
                self.repository / "objects" / "pack",
                transaction.files,
            )
        try:
            await refstore.apply(self._runner, self.git_dir, to_write, check_old=check_old)
        except errors.GitFailed as error:
            raise errors.ReplicationError(
                f"transaction {transaction.id} does not apply here: {error.message}"
            ) from error
        if head is not None:
            await refstore.set_head(self._runner, self.git_dir, head)
            self.head = head

    def _record_changes(self, changes: list[transactions.Change]) -> None:
        seen = [
            (change.ref, self.refs.get(change.ref, transactions.ZERO_ID), change.new)
            for change in changes
        ]
        self.checksum = checksum.updated(self.checksum, seen)
        for change in changes:
            if change.deletes:
                self.refs.pop(change.ref, None)
            else:
                self.refs[change.ref] = change.new

    # -- copy from a peer -----------------------------------------------------------------------

    async def begin_rebuild(self) -> None:
        if not self.state.rebuilding:
            await self.update(rebuilding=True)

    async def adopt(
        self,
        *,
        refs: Mapping[str, str],
        head: str,
        generation: int,
        last_term: int,
        last_seq: int,
        last_transaction: str,
        expected_checksum: str,
    ) -> None:
        """Makes the refs equal to a peer's snapshot, whose objects are already fetched."""
        changes = refstore.differences(self.refs, dict(refs))
        self.history.record(c.old for c in changes if c.old != transactions.ZERO_ID)
        await refstore.apply(self._runner, self.git_dir, changes, check_old=False)
        if head != self.head:
            await refstore.set_head(self._runner, self.git_dir, head)
        await self.reload_refs()
        if self.checksum != expected_checksum:
            raise errors.ReplicationError(
                f"copied refs have checksum {self.checksum}, the peer reported {expected_checksum}"
            )
        prepared = self.state.prepared
        keep = prepared if prepared is not None and prepared.generation > generation else None
        await self.update(
            generation=generation,
            last_term=last_term,
            last_seq=last_seq,
            last_transaction=last_transaction,
            prepared=keep,
            rebuilding=False,
        )
        if prepared is not None and keep is None:
            transactions.discard(self.staging_for(prepared))


class _Exact:
    """Reads exact byte counts from a chunked stream."""

    def __init__(self, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._buffer = b""

    async def take(self, size: int) -> AsyncIterator[bytes]:
        remaining = size
        while remaining > 0:
            if not self._buffer:
                self._buffer = await anext(self._body, b"")
                if not self._buffer:
                    raise errors.ReplicationError("transaction files cut short")
            chunk, self._buffer = self._buffer[:remaining], self._buffer[remaining:]
            remaining -= len(chunk)
            yield chunk

    async def end(self) -> None:
        if self._buffer or await anext(self._body, b""):
            raise errors.ReplicationError("transaction files longer than announced")


def _check_trailer(path: pathlib.Path, size: int) -> None:
    """A pack ends with the SHA-1 of everything before it: a cheap check of the whole copy."""
    if size < PACK_TRAILER_BYTES:
        raise errors.ReplicationError(f"{path.name} is too short to be a pack")
    digest = hashlib.sha1()
    with path.open("rb") as source:
        remaining = size - PACK_TRAILER_BYTES
        while remaining > 0:
            chunk = source.read(min(remaining, 1 << 20))
            digest.update(chunk)
            remaining -= len(chunk)
        trailer = source.read(PACK_TRAILER_BYTES)
    if digest.digest() != trailer:
        raise errors.ReplicationError(f"{path.name} does not match its checksum")


def _write_small(
    staging: pathlib.Path, files: tuple[transactions.PackFile, ...], contents: list[bytes]
) -> list[pathlib.Path]:
    """Writes checked files into a fresh staging directory; returns what to fsync."""
    transactions.discard(staging)
    staging.mkdir(parents=True)
    written = []
    for file, data in zip(files, contents, strict=True):
        if file.name.endswith(".pack") and not _trailer_matches(data):
            raise errors.ReplicationError(f"{file.name} does not match its checksum")
        path = staging / file.name
        path.write_bytes(data)
        written.append(path)
    return [*written, staging]


def _write_and_sync(
    staging: pathlib.Path, files: tuple[transactions.PackFile, ...], contents: list[bytes]
) -> None:
    transactions.fsync_together(_write_small(staging, files, contents))


def _trailer_matches(data: bytes) -> bool:
    body, trailer = data[:-PACK_TRAILER_BYTES], data[-PACK_TRAILER_BYTES:]
    return len(data) >= PACK_TRAILER_BYTES and hashlib.sha1(body).digest() == trailer
