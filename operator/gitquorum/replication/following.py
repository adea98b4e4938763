"""The follower: stores what the leader proposes, applies what it decided, serves reads
under a lease, and catches up when it finds itself behind.

A follower answers the leader's messages in the order of its own log: a transaction is
stored only if it is the next generation, applied only if it is the one stored. Anything
else means the follower missed something, and it copies the leader's state (``catchup``)
rather than guess. It obeys only the newest term it has seen (``store.observe_term``), so a
deposed leader cannot change it. Each message is parsed whole (``messages``) before its term
counts: one that does not parse is refused (400) and changes nothing, not even the term.

Reads: the follower asks the leader for a lease at every heartbeat interval, and serves
reads only until ``sent + follower_lease``, measured from when it asked, which is before the
leader granted it; the leader records the lease as lasting from when it granted it. The
leader waits out the lease of a follower that has not applied a write before it
acknowledges that write, so a client never reads from a follower a state older than a push
it was told succeeded.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from gitquorum import errors
from gitquorum.replication import (
    backlog,
    catchup,
    decisions,
    leading,
    membership,
    messages,
    peerclient,
    store,
    transactions,
)

log = logging.getLogger(__name__)

COPY_RETRY_SECONDS = 1.0
STOP_SECONDS = 2.0
"""How long stepping out of the follower role waits for its tasks to end once cancelled."""


class Following:
    """The follower role; lives as long as the replica is not the leader."""

    def __init__(
        self,
        *,
        replica: str,
        local: store.Store,
        peers: peerclient.Peers,
        copier: catchup.Copier,
        timing: leading.Timing,
        on_newer_term: Callable[[int, str | None], Awaitable[None]],
    ) -> None:
        self.replica = replica
        self._store = local
        self._peers = peers
        self._copier = copier
        self._timing = timing
        self._on_newer_term = on_newer_term
        self.lock = asyncio.Lock()
        """Held while the repository changes: one message at a time, never during a copy."""
        self.leader: membership.Member | None = None
        self.leader_applied: decisions.Applied | None = None
        self.lease_end = float("-inf")
        self.sync = decisions.Sync.BEHIND
        self._lease_task: asyncio.Task[None] | None = None
        self._copy_task: asyncio.Task[None] | None = None
        self._copy_failed_at = float("-inf")
        self.backlog = backlog.Backlog()
        """Pushes sent while this follower copies, for after the copy."""
        self._released = False
        """Set once this replica gave its read lease back for good (it is shutting down)."""
        self.on_notified: Callable[[int], None] | None = None
        """Told the generation the leader says pushes were notified up to (``notifying``)."""

    def follow(self, leader: membership.Member | None) -> None:
        """Starts (or redirects) lease requests to the current leader."""
        if leader != self.leader:
            self.lease_end = float("-inf")
            if self._copy_task is not None:
                self._copy_task.cancel()  # copying from a deposed leader could hang forever
        self.leader = leader
        if self._lease_task is None and leader is not None and not self._released:
            self._lease_task = asyncio.ensure_future(self._leases())

    async def stop(self) -> None:
        """Ends the follower role; bounded, since the caller is a role change that must not
        wait for ever (a copy stuck on a peer that was cut off once held a new leader back).

        A task that has not ended in time is left cancelled: its cancellation propagates as
        soon as it wakes, so it can change nothing any more (a copy adopts refs only after
        an await, which raises the cancellation)."""
        self.lease_end = float("-inf")
        tasks = [task for task in (self._lease_task, self._copy_task) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            done, stuck = await asyncio.wait(tasks, timeout=STOP_SECONDS)
            for task in done:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
            for task in stuck:
                where = "".join(
                    f"\n  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
                    for frame in task.get_stack()
                )
                log.error(
                    "a follower task did not end %s s after it was cancelled:%s",
                    STOP_SECONDS,
                    where,
                )
        self._lease_task = self._copy_task = None

    async def release(self) -> None:
        """Stops serving reads, then tells the leader, which may then acknowledge writes
        without waiting for this follower's lease (it is shutting down)."""
        self._released = True
        self.lease_end = float("-inf")
        if self._lease_task is not None:
            self._lease_task.cancel()
            self._lease_task = None
        leader = self.leader
        if leader is None:
            return
        applied = self._store.applied
        message = {
            "term": self._store.state.term,
            "replica": self.replica,
            "generation": applied.generation,
            "transaction": applied.transaction,
            "checksum": applied.checksum,
            "release": True,
        }
        with contextlib.suppress(peerclient.PeerError):
            await self._peers.call(
                leader.peer_url, "/replication/lease", message, timeout=self._timing.heartbeat * 4
            )

    @property
    def readable(self) -> bool:
        return (
            time.monotonic() < self.lease_end
            and not self._store.state.rebuilding
            and not self.copying
        )

    @property
    def copying(self) -> bool:
        return self._copy_task is not None and not self._copy_task.done()

    # -- messages from the leader ---------------------------------------------------------------

    async def _accept_term(self, term: int, leader: str | None) -> dict[str, Any] | None:
        """None if the term of a parsed message is current (adopting it if newer); otherwise
        the refusal to send back."""
        if leader == self.replica:
            # Nobody sends itself a leader's message: a forged or misrouted one, not a term.
            raise errors.MalformedMessage(f"a leader's message naming this replica ({leader})")
        state = self._store.state
        if term < state.term:
            return self._answer(ok=False, reason=f"term {term} is stale")
        if term == state.term and leader is not None and state.leader not in (None, leader):
            # One leader per term (the controller names it): a second one is no news to obey.
            return self._answer(ok=False, reason=f"term {term} is led by {state.leader}")
        if term > state.term or (leader is not None and state.leader is None):
            await self._on_newer_term(term, leader)
        return None

    async def heartbeat(self, message: Mapping[str, Any]) -> dict[str, Any]:
        heartbeat = messages.Heartbeat.parse(message)
        refusal = await self._accept_term(heartbeat.term, heartbeat.leader)
        if refusal is not None:
            return refusal
        leader = heartbeat.applied
        self.leader_applied = leader
        if heartbeat.notified is not None and self.on_notified is not None:
            self.on_notified(heartbeat.notified)
        if not heartbeat.settled:
            return self._answer(ok=True)
        async with self.lock:
            await self._reconcile(leader)
        return self._answer(ok=True)

    async def _reconcile(self, leader: decisions.Applied) -> None:
        if self._store.state.generation > leader.generation:
            return  # a heartbeat sent before the commit this replica has applied since
        prepared = self._store.state.prepared
        sync = decisions.compare(
            self._store.applied,
            leader,
            prepared=None if prepared is None else prepared.id,
            prepared_generation=0 if prepared is None else prepared.generation,
        )
        if self._store.state.rebuilding:
            sync = decisions.Sync.BEHIND
        if sync is decisions.Sync.APPLY_PREPARED and prepared is not None:
            await self._apply(prepared)
            return
        self.sync = sync
        if sync is decisions.Sync.DIVERGED:
            log.error(
                "refs differ from the leader's at generation %s (checksum %s, leader %s): "
                "repairing from the leader",
                self._store.state.generation,
                self._store.checksum,
                leader.checksum,
            )
        if sync in (decisions.Sync.BEHIND, decisions.Sync.DIVERGED):
            self._start_copy()

    async def prepare(
        self, message: Mapping[str, Any], files: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        prepare = messages.Prepare.parse(message)
        refusal = await self._accept_term(prepare.term, prepare.leader)
        if refusal is not None:
            return refusal
        transaction = prepare.transaction
        if transaction.generation > self._store.state.generation + 1:
            self._start_copy()
        if self.copying and not self.backlog.full():
            return await self._hold(transaction, files)
        refusal = self._refuse_prepare(transaction)
        if refusal is not None:
            return refusal
        # The files are read without the lock: a leader cut off in the middle of sending
        # must not keep the next leader's messages waiting. A small push's are read whole
        # and written with the record, fsynced together; a large one's go to disk as they come.
        contents = await self._store.receive_small(transaction, files)
        if contents is None:
            await self._store.stage_from_stream(transaction, files)
        async with self.lock:
            refusal = self._refuse_prepare(transaction)
            if refusal is not None:
                transactions.discard(self._store.staging_for(transaction))
                return refusal
            await self._store.record_prepared(transaction, contents=contents)
        return self._answer(ok=True)

    async def _hold(
        self, transaction: transactions.Transaction, files: AsyncIterator[bytes]
    ) -> dict[str, Any]:
        """Keeps a push prepared during a copy for after it (``backlog``); not stored."""
        await self._store.stage_from_stream(transaction, files)
        if not self.copying:  # the copy ended while the files came: judge it as usual
            async with self.lock:
                refusal = self._refuse_prepare(transaction)
                if refusal is not None:
                    transactions.discard(self._store.staging_for(transaction))
                    return refusal
                await self._store.record_prepared(transaction)
            return self._answer(ok=True)
        self.backlog.hold(transaction)
        reason = f"at generation {self._store.state.generation}, catching up (held for after)"
        return self._answer(ok=False, reason=reason)

    def _refuse_prepare(self, transaction: transactions.Transaction) -> dict[str, Any] | None:
        expected = self._store.state.generation + 1
        if self.copying or self._store.state.rebuilding or transaction.generation != expected:
            if transaction.generation > expected:
                self._start_copy()
            reason = f"at generation {self._store.state.generation}, catching up"
            return self._answer(ok=False, reason=reason)
        held = self._store.state.prepared
        if held is not None and held.position > transaction.position:
            return self._answer(ok=False, reason=f"holds the newer {held.position}")
        return None

    async def commit(self, message: Mapping[str, Any]) -> dict[str, Any]:
        commit = messages.Commit.parse(message)
        refusal = await self._accept_term(commit.term, None)
        if refusal is not None:
            return refusal
        transaction_id = commit.transaction
        async with self.lock:
            state = self._store.state
            if state.last_transaction == transaction_id:
                return self._answer(ok=True)
            if self.copying and self.backlog.holds(transaction_id):
                self.backlog.commit(transaction_id)
                return self._answer(ok=False, reason="catching up: applied after the copy")
            prepared = state.prepared
            if prepared is None or prepared.id != transaction_id:
                self._start_copy()
                return self._answer(ok=False, reason="transaction not held here")
            if not await self._apply(prepared):
                return self._answer(ok=False, reason="transaction does not apply here")
        return self._answer(ok=True)

    async def abort(self, message: Mapping[str, Any]) -> dict[str, Any]:
        abort = messages.Abort.parse(message)
        refusal = await self._accept_term(abort.term, None)
        if refusal is not None:
            return refusal
        async with self.lock:
            held = self.backlog.abort(abort.transaction)
            if held is not None:
                transactions.discard(self._store.staging_for(held))
            await self._store.drop_prepared(abort.transaction)
        return self._answer(ok=True)

    async def _apply(self, transaction: transactions.Transaction) -> bool:
        try:
            await self._store.apply(transaction, check_old=True)
        except errors.ReplicationError as error:
            log.error("%s: repairing from the leader", error)
            self.sync = decisions.Sync.DIVERGED
            self._start_copy()
            return False
        return True

    def _answer(self, *, ok: bool, reason: str = "") -> dict[str, Any]:
        applied = self._store.applied
        return {
            "ok": ok,
            "reason": reason,
            "term": self._store.state.term,
            "generation": applied.generation,
            "transaction": applied.transaction,
            "checksum": applied.checksum,
        }

    # -- leases ---------------------------------------------------------------------------------

    async def _leases(self) -> None:
        while True:
            started = time.monotonic()
            await self._ask_lease(started)
            await asyncio.sleep(max(0.0, self._timing.heartbeat - (time.monotonic() - started)))

    async def _ask_lease(self, sent: float) -> None:
        leader = self.leader
        if leader is None or self._store.state.rebuilding:
            return
        applied = self._store.applied
        message = {
            "term": self._store.state.term,
            "replica": self.replica,
            "generation": applied.generation,
            "transaction": applied.transaction,
            "checksum": applied.checksum,
        }
        try:
            answer = await self._peers.call(
                leader.peer_url, "/replication/lease", message, timeout=self._timing.heartbeat * 4
            )
        except peerclient.PeerError:
            return
        if answer.get("granted") and int(answer.get("term", -1)) == self._store.state.term:
            self.lease_end = sent + self._timing.follower_lease
            self.sync = decisions.Sync.IN_SYNC

    # -- catching up ----------------------------------------------------------------------------

    def _start_copy(self) -> None:
        if self.copying or self.leader is None:
            return
        if time.monotonic() - self._copy_failed_at < COPY_RETRY_SECONDS:
            return  # a copy just failed (leader busy, unreachable): not one per heartbeat
        self.lease_end = float("-inf")
        self._copy_task = asyncio.ensure_future(self._copy(self.leader))

    async def _copy(self, leader: membership.Member) -> None:
        try:
            await self._copier.copy(leader, lock=self.lock)
            async with self.lock:
                await self._drain_backlog()
        except Exception as error:  # logged and retried at a later heartbeat
            self._copy_failed_at = time.monotonic()
            log.warning("catching up from %s failed: %s", leader.id, error)
        finally:
            for held in self.backlog.clear():
                transactions.discard(self._store.staging_for(held))

    async def _drain_backlog(self) -> None:
        """Applies the pushes the leader committed during the copy, in order, and holds the
        one still prepared (``backlog``)."""
        state = self._store.state
        if state.rebuilding:
            return
        drain = self.backlog.drain(state.generation)
        for held in drain.discard:
            transactions.discard(self._store.staging_for(held))
        for transaction in drain.apply:
            await self._store.apply(transaction, check_old=True)
        if drain.prepare is not None:
            await self._store.record_prepared(drain.prepare)
        if drain.apply or drain.prepare is not None:
            log.info(
                "after the copy: applied %s pushes committed meanwhile, now at generation %s%s",
                len(drain.apply),
                self._store.state.generation,
                ", one prepared" if drain.prepare is not None else "",
            )
