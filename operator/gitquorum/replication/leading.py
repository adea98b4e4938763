"""The leader: one writer per repository, majority before acknowledgement, leases for reads.

A push reaches the leader's git receive-pack, whose pre-receive hook hands the push over
(``hooks``). Under the write lock, one push at a time, the leader:

1. checks each update's old value against the refs it holds (a client that pushed on a
   stale view is turned down as git would turn it down, before anything is replicated);
2. stages the push's pack files, records the transaction as prepared, and sends it to every
   follower (``prepare``); each follower stores the files and the exact updates durably;
3. once a majority of the voters (itself included) holds it, the transaction is decided:
   the hook lets receive-pack move the objects and refs, and the leader makes sure its refs
   are exactly the decided ones and records the new generation;
4. it tells the followers to apply it (``commit``) and acknowledges the push once every
   follower has either applied it or lost the read lease it was granted, so no replica
   serves a state older than an acknowledged push.

Without a majority within the prepare timeout the push is turned down and the transaction
abandoned. Heartbeats keep the leader's own lease (it serves reads only while a majority
answered within ``leader_lease``), carry its applied state to the followers, and tell it who
is behind; followers ask it for their read leases (``grant_lease``).

A new leader first waits for the old leader's leases to lapse (``decisions.promotion_wait``)
and proposes again any transaction it holds prepared; only then does it take writes.

A planned leader change (switchover) starts with ``hand_off``: the leader stops admitting
writes, lets the ones admitted finish, and waits until the chosen successor has applied
everything; the controller then starts the successor's term. Writes that arrive meanwhile are
held by the forwarding layer, not refused, and go to whoever leads once the term has changed.
A leader whose hand-off is not followed by a new term takes writes again after a while, so a
controller that dies in the middle cannot leave the repository without a writer.
"""

import asyncio
import contextlib
import dataclasses
import logging
import pathlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from gitquorum import errors
from gitquorum.replication import (
    decisions,
    hooks,
    membership,
    peerclient,
    store,
    tracing,
    transactions,
)

log = logging.getLogger(__name__)


Screen = Callable[[hooks.Request], Awaitable[str | None]]
"""Why a push handed over by its hook must be refused whatever the refs (a protected ref
forced), or None; run before the quorum round."""


@dataclasses.dataclass(frozen=True)
class Timing:
    """How long things may take, in seconds; see the replica's command line for defaults."""

    leader_lease: float = 1.5
    """A leader serves reads while a majority answered its heartbeats within this."""
    follower_lease: float = 1.5
    """A follower serves reads for this long after the leader confirmed it in sync."""
    heartbeat: float = 0.25
    """Interval of heartbeats and of lease requests."""
    prepare: float = 10.0
    """A push is turned down when a majority has not stored it within this."""
    message: float = 5.0
    """Timeout of one replication message."""
    handoff: float = 10.0
    """A leader that handed off and heard of no new term since takes writes again after this."""


@dataclasses.dataclass
class Follower:
    """What the leader knows of one follower."""

    member: membership.Member
    acked_term: bool = False
    heartbeat_sent: float = float("-inf")
    """Send time of the newest heartbeat it answered (monotonic)."""
    applied: decisions.Applied | None = None
    lease_end: float = float("-inf")
    reachable: bool = False
    error: str = ""


class Leadership:
    """The leader role for one term; discarded when the replica steps down."""

    def __init__(
        self,
        *,
        replica: str,
        configuration: membership.Configuration,
        local: store.Store,
        peers: peerclient.Peers,
        timing: Timing,
        previous_leader: str | None,
        on_fenced: Callable[[int], Awaitable[None]],
        on_acknowledged: Callable[[transactions.Transaction], None] | None = None,
        notified: Callable[[], int] | None = None,
    ) -> None:
        self.replica = replica
        self.configuration = configuration
        self.term = configuration.term
        self._store = local
        self._peers = peers
        self._timing = timing
        self._on_fenced = on_fenced
        self._on_acknowledged = on_acknowledged
        """Told of every transaction once acknowledged (push notifications)."""
        self._notified = notified
        """The generation up to which pushes were notified, for the heartbeats."""
        self.followers = {member.id: Follower(member) for member in configuration.others(replica)}
        self._previous_stopped = (
            previous_leader is None
            or previous_leader == replica
            or previous_leader in configuration.stopped
        )
        self.write_lock = asyncio.Lock()
        self._seq = 0
        self.ready = False
        self.ready_reason = "waiting for a majority to take the new term"
        self._majority_since: float | None = None
        self.lease_generation = local.state.generation
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False
        self._admitted = 0
        self._handoff_until = float("-inf")
        """While in the future, no write is admitted: leadership is being handed off."""
        self._relinquished_until = float("-inf")
        """While in the future, no read is served here and no lease granted: handed off."""

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        for follower in self.followers.values():
            self._spawn(self._heartbeats(follower))
        self._spawn(self._take_office())

    async def stop(self) -> None:
        self._stopped = True
        self.ready = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reconfigure(self, configuration: membership.Configuration) -> None:
        """Takes a new configuration of the same term and leader without leaving office: a
        member's new address (its pod was replaced), a member added, removed or promoted.

        Stepping down and taking office again would stop writes for the promotion wait on
        every such change; the operator changes voters one at a time, so the new voter set
        applies at once, as Raft's single-server changes do."""
        assert configuration.term == self.term and configuration.leader == self.replica
        self.configuration = configuration
        wanted = {member.id: member for member in configuration.others(self.replica)}
        for replica in set(self.followers) - set(wanted):
            del self.followers[replica]  # its heartbeat loop ends at its next round
        for replica, member in wanted.items():
            follower = self.followers.get(replica)
            if follower is None:
                follower = self.followers[replica] = Follower(member)
                self._spawn(self._heartbeats(follower))
            elif follower.member != member:
                follower.member = member

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- leases ---------------------------------------------------------------------------------

    @property
    def voters(self) -> frozenset[str]:
        return self.configuration.voters

    def lease_end(self) -> float:
        """Until when this leader may serve reads: a majority answered heartbeats sent since."""
        times = [time.monotonic() if self.replica in self.voters else float("-inf")]
        times += [
            follower.heartbeat_sent
            for replica, follower in self.followers.items()
            if replica in self.voters
        ]
        times.sort(reverse=True)
        return times[decisions.quorum(len(self.voters)) - 1] + self._timing.leader_lease

    @property
    def readable(self) -> bool:
        # A leader that handed off serves no reads and grants no leases: its successor then
        # need not wait for this leader's lease to lapse (the configuration says it handed off).
        now = time.monotonic()
        return self.ready and now >= self._relinquished_until and now < self.lease_end()

    def grant_lease(self, replica: str, applied: decisions.Applied) -> bool:
        """A follower asks to serve reads: yes while in sync and this leader leads."""
        follower = self.followers.get(replica)
        if follower is None:
            return False
        follower.applied = applied
        leader = self._store.applied
        granted = self.lease_generation == leader.generation and decisions.may_grant_lease(
            follower=applied, leader=leader, leading=self.readable
        )
        if granted:
            follower.lease_end = time.monotonic() + self._timing.follower_lease
        return granted

    def release_lease(self, replica: str) -> None:
        """A follower that stopped serving reads (it shuts down) gave its lease back: writes
        need not wait for it to lapse (a follower that leaves cost every push ~1 s)."""
        follower = self.followers.get(replica)
        if follower is not None:
            follower.lease_end = float("-inf")
            log.info("%s gave its read lease back", replica)

    # -- heartbeats -----------------------------------------------------------------------------

    async def _heartbeats(self, follower: Follower) -> None:
        while not self._stopped and self.followers.get(follower.member.id) is follower:
            started = time.monotonic()
            await self._heartbeat(follower, started)
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self._timing.heartbeat - elapsed))

    async def _heartbeat(self, follower: Follower, sent: float) -> None:
        applied = self._store.applied
        message = {
            "term": self.term,
            "leader": self.replica,
            "generation": applied.generation,
            "transaction": applied.transaction,
            "checksum": applied.checksum,
            # Until it has settled what it holds prepared, a new leader's applied state may
            # be behind a follower's: followers must not repair towards it yet.
            "settled": self.ready,
        }
        if self._notified is not None:
            message["notified"] = self._notified()
        try:
            answer = await self._peers.call(
                follower.member.peer_url,
                "/replication/heartbeat",
                message,
                timeout=self._timing.heartbeat * 4,
            )
        except peerclient.PeerError as error:
            follower.reachable = False
            follower.error = str(error)
            return
        follower.reachable = True
        follower.error = ""
        if await self._check_term(answer):
            follower.acked_term = True
            follower.heartbeat_sent = max(follower.heartbeat_sent, sent)
            follower.applied = decisions.Applied.from_message(answer)

    async def _check_term(self, answer: dict[str, Any]) -> bool:
        """Whether a peer's answer accepts this term; steps down if it knows a newer one."""
        term = int(answer.get("term", 0))
        if term > self.term:
            log.warning(
                "a peer is at term %s, above this leader's %s: stepping down", term, self.term
            )
            self._stopped = True
            await self._on_fenced(term)
            return False
        return bool(answer.get("ok"))

    # -- taking office --------------------------------------------------------------------------

    async def _take_office(self) -> None:
        """Waits out the old leader's leases, then completes what it left prepared."""
        while not self._stopped:
            acked = {self.replica} | {r for r, f in self.followers.items() if f.acked_term}
            if decisions.has_quorum(acked, self.voters):
                break
            await asyncio.sleep(self._timing.heartbeat / 2)
        majority_at = time.monotonic()
        while not self._stopped:
            unconfirmed = [
                replica
                for replica, follower in self.followers.items()
                if not follower.acked_term and replica not in self.configuration.stopped
            ]
            wait = decisions.promotion_wait(
                leader_lease=self._timing.leader_lease,
                follower_lease=self._timing.follower_lease,
                previous_leader_stopped=self._previous_stopped,
                unconfirmed=unconfirmed,
            )
            remaining = majority_at + wait - time.monotonic()
            if remaining <= 0:
                break
            self.ready_reason = f"waiting {remaining:.1f} s for the previous leases to lapse"
            await asyncio.sleep(min(remaining, self._timing.heartbeat))
        async with self.write_lock:
            await self._resolve_prepared()
        self.ready = True
        self.ready_reason = ""
        log.info("leading term %s at generation %s", self.term, self._store.state.generation)

    async def _resolve_prepared(self) -> None:
        prepared = self._store.state.prepared
        action = decisions.resolve_prepared(
            None if prepared is None else prepared.position,
            generation=self._store.state.generation,
        )
        if prepared is None or action is decisions.Prepared.NONE:
            return
        if action is decisions.Prepared.DISCARD:
            await self._store.drop_prepared()
            return
        log.info(
            "proposing again transaction %s left prepared at generation %s",
            prepared.id,
            prepared.generation,
        )
        again = dataclasses.replace(
            prepared, id=uuid.uuid4().hex, term=self.term, seq=self._next_seq()
        )
        self._store.staging_for(prepared).rename(self._store.staging_for(again))
        await self._store.record_prepared(again)
        while not self._stopped:
            if await self._replicate(again):
                await self._finish(again)
                return
            log.warning("no majority for the prepared transaction yet; retrying")

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- admission and hand-off -----------------------------------------------------------------

    @property
    def handing_off(self) -> bool:
        return time.monotonic() < self._handoff_until

    @property
    def writable(self) -> bool:
        return self.ready and not self.handing_off and not self._stopped

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Counts a write request served here, so that a hand-off can wait for it to end.

        Checking and counting happen with no await in between: a hand-off that begins later
        sees this write and waits for it."""
        if not self.writable:
            raise errors.Unavailable(f"the leader does not take writes now: {self.why_not()}")
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    def why_not(self) -> str:
        if self.handing_off:
            return "leadership is being handed off"
        return self.ready_reason or "stepping down"

    async def hand_off(self, successor: str, *, timeout: float) -> decisions.Applied:
        """Stops admitting writes, waits for the admitted ones and for ``successor`` to hold
        everything applied here; returns the applied state handed over.

        Raises Unavailable (and takes writes again) if that does not happen within
        ``timeout``: a push still receiving a large pack, or a successor behind, is a reason
        to try again later, not to fail the push."""
        follower = self.followers.get(successor)
        if follower is None or successor not in self.voters:
            raise errors.BadRequest(f"{successor} is not a voting follower of this leader")
        if not self.ready:
            raise errors.Unavailable(f"the leader is not ready: {self.ready_reason}")
        started = time.monotonic()
        self._handoff_until = started + timeout + self._timing.handoff
        deadline = started + timeout
        while time.monotonic() < deadline:
            applied = self._store.applied
            if (
                self._admitted == 0
                and not self.write_lock.locked()
                and follower.applied is not None
                and follower.applied.generation == applied.generation
                and follower.applied.checksum == applied.checksum
            ):
                # Until the new term reaches this replica, nothing is admitted here, and no
                # read is served: the successor may then take office without waiting for this
                # leader's lease (reads are held meanwhile, as writes are).
                self._handoff_until = time.monotonic() + self._timing.handoff
                self._relinquished_until = self._handoff_until
                log.info(
                    "handed off to %s at generation %s after %.3f s",
                    successor,
                    applied.generation,
                    time.monotonic() - started,
                )
                return applied
            await asyncio.sleep(self._timing.heartbeat / 5)
        self._handoff_until = float("-inf")
        raise errors.Unavailable(
            f"hand-off to {successor} not possible within {timeout:g} s: "
            f"{self._admitted} write(s) in flight, successor at generation "
            f"{None if follower.applied is None else follower.applied.generation}, "
            f"leader at {self._store.state.generation}; writes resume here"
        )

    # -- pushes ---------------------------------------------------------------------------------

    async def push(
        self,
        channel: hooks.Channel,
        received: "asyncio.Future[frozenset[str]]",
        *,
        atomic: bool = False,
        screen: Screen | None = None,
        trace: tracing.PushTrace | None = None,
    ) -> bool:
        """Decides one push handed over by its hook; True once it is acknowledged.

        ``received`` resolves when git receive-pack has exited, whatever happened to it, to
        the refs git reported as updated. A ref that moved since the client read it is left
        out of the transaction; git then refuses that ref alone (``ng``), as it does for any
        push that is not ``atomic``, and updates the others.
        """
        trace = trace or tracing.PushTrace()
        request = await channel.request()
        trace.step("receive-pack")
        # Rules on the push itself (protected refs) need no lock: they read only the push.
        refused = await screen(request) if screen is not None else None
        trace.step("screen")
        if refused is not None:
            channel.reply(reason=refused)
            raise errors.PushRefused(refused)
        async with self.write_lock:
            trace.step("lock")
            stale = self._stale(request.changes)
            reason = self._refusal(stale, request.changes, atomic=atomic)
            if reason is not None:
                channel.reply(reason=reason)
                return False
            changes = [change for change in request.changes if change.ref not in stale]
            transaction = self._transaction(changes, request.quarantine)
            contents, link_from = None, None
            if transaction.size <= store.SMALL_TRANSACTION_BYTES:
                # A small push goes out at once, its files read here (less than a thread hop
                # costs); this replica links them into its staging while the followers store
                # theirs, and records them in the same step.
                link_from = request.quarantine / "pack" if request.quarantine else None
                contents = (
                    transactions.read_files(link_from, transaction.files) if link_from else b""
                )
            else:
                await self._store.stage_from_quarantine(transaction, request.quarantine)
            trace.step("stage")
            replicated = await self._replicate(
                transaction, record=True, trace=trace, contents=contents, link_from=link_from
            )
            if not replicated:
                await self._abandon(transaction)
                channel.reply(reason=self._no_quorum_reason())
                return False
            trace.step("quorum")
            # Decided: the followers may apply it while git moves objects and refs here.
            self.lease_generation = transaction.generation
            commits = self._send_commits(transaction)
            channel.reply()
            applied_by_git = await asyncio.shield(received)
            trace.step("git-finish")
            # Recording the generation need not come first: a restart finds the prepared
            # transaction with its refs moved and records it then (store.open).
            await asyncio.gather(
                self._store.apply(transaction, check_old=False, applied_by_git=applied_by_git),
                self._await_commits(commits),
            )
            trace.step("commit")
            self._acknowledged(transaction)
            return True

    async def install(
        self,
        *,
        changes: tuple[transactions.Change, ...],
        head: str | None,
        objects: pathlib.Path,
    ) -> decisions.Applied:
        """Writes a restored ref state into an empty repository through the quorum.

        ``objects`` is a scratch object directory whose ``pack`` holds every object the refs
        reach. The restore is one transaction like a push's, so every replica gets it by the
        replication protocol (prepared on a majority before any ref moves, then committed)
        and no replica can be left with a restore the others lack.
        """
        async with self.write_lock:
            if not self.ready:
                raise errors.Unavailable(f"the leader is not ready: {self.ready_reason}")
            if self._store.refs or self._store.state.generation:
                raise errors.Conflict(
                    f"the repository is not empty (generation {self._store.state.generation}, "
                    f"{len(self._store.refs)} refs): a backup is restored only into a new one"
                )
            transaction = transactions.Transaction(
                id=uuid.uuid4().hex,
                term=self.term,
                generation=self._store.state.generation + 1,
                seq=self._next_seq(),
                changes=changes,
                head=head,
                files=tuple(transactions.pack_files(objects / "pack")),
            )
            await self._store.stage_from_quarantine(transaction, objects)
            if not await self._replicate(transaction, record=True):
                await self._abandon(transaction)
                raise errors.NoQuorum(self._no_quorum_reason())
            self.lease_generation = transaction.generation
            commits = self._send_commits(transaction)
            await asyncio.gather(
                self._store.apply(transaction, check_old=True), self._await_commits(commits)
            )
            self._acknowledged(transaction)
            return self._store.applied

    def _stale(self, changes: list[transactions.Change]) -> frozenset[str]:
        """The refs whose old value is not what they are here now."""
        return frozenset(
            change.ref
            for change in changes
            if self._store.refs.get(change.ref, transactions.ZERO_ID) != change.old
        )

    def _refusal(
        self, stale: frozenset[str], changes: list[transactions.Change], *, atomic: bool
    ) -> str | None:
        if not self.ready:
            return f"the leader is not ready: {self.ready_reason}"
        # An atomic push is all or nothing; a push of stale refs only has nothing to do.
        if stale and (atomic or len(stale) == len(changes)):
            return f"{', '.join(sorted(stale))} moved while you pushed (fetch first)"
        return None

    def _transaction(
        self, changes: list[transactions.Change], quarantine: pathlib.Path | None
    ) -> transactions.Transaction:
        files = transactions.pack_files(quarantine / "pack") if quarantine is not None else []
        return transactions.Transaction(
            id=uuid.uuid4().hex,
            term=self.term,
            generation=self._store.state.generation + 1,
            seq=self._next_seq(),
            changes=tuple(changes),
            head=self._new_head(changes),
            files=tuple(files),
        )

    def _new_head(self, changes: list[transactions.Change]) -> str | None:
        """Where HEAD goes when it names no branch and the push creates some."""
        if self._store.head in self._store.refs:
            return None
        for change in changes:
            if change.ref.startswith("refs/heads/") and not change.deletes:
                if change.ref != self._store.head:
                    return change.ref
                return None
        return None

    async def _replicate(
        self,
        transaction: transactions.Transaction,
        *,
        record: bool = False,
        trace: tracing.PushTrace | None = None,
        contents: bytes | None = None,
        link_from: pathlib.Path | None = None,
    ) -> bool:
        """Sends a prepared transaction to the followers; True once a majority holds it.

        With ``record`` the leader records it as prepared here at the same time: it counts
        itself only once that is durable, with its files (staged already, or linked from
        ``link_from`` as it records). The followers get ``contents`` as the files when given,
        else the files are streamed from the staging directory.
        """
        holders: set[str] = set()
        if not record:
            holders.add(self.replica)
        pending: set[asyncio.Future[Any]] = set()
        recording = asyncio.ensure_future(
            self._store.record_prepared(transaction, link_from=link_from)
        )
        if record:
            pending.add(recording)
        else:
            recording.cancel()
        if decisions.has_quorum(holders, self.voters):
            return True
        message = {"term": self.term, "leader": self.replica, "transaction": transaction.to_json()}
        staging = self._store.staging_for(transaction)
        sends: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(
                self._peers.prepare(
                    follower.member.peer_url,
                    message,
                    staging=staging,
                    files=transaction.files,
                    contents=contents,
                    timeout=self._timing.prepare,
                )
            ): replica
            for replica, follower in self.followers.items()
        }
        deadline = time.monotonic() + self._timing.prepare
        pending |= set(sends)
        try:
            while pending and not decisions.has_quorum(holders, self.voters):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for send in done:
                    if send is recording:
                        send.result()  # a failure to record here fails the push
                        holders.add(self.replica)
                        if trace is not None:
                            trace.answered("record")
                    elif await self._confirmed(send, sends[send]):
                        holders.add(sends[send])
                        if trace is not None:
                            trace.answered(f"prepare {sends[send]}")
        finally:
            for send in pending - {recording}:  # a slow follower still gets it, or catches up
                self._spawn(_quietly(send))
        if record and not recording.done():
            await recording  # the state file must hold it before git moves anything
            if trace is not None:
                trace.answered("record")
        if self._stopped:
            raise errors.Fenced("a newer term took over during the push")
        return decisions.has_quorum(holders, self.voters)

    async def _confirmed(self, send: "asyncio.Future[dict[str, Any]]", replica: str) -> bool:
        try:
            answer = send.result()
        except peerclient.PeerError as error:
            log.info("prepare on %s failed: %s", replica, error)
            return False
        if not await self._check_term(answer):
            log.info("prepare on %s not stored: %s", replica, answer.get("reason"))
            return False
        return True

    def _no_quorum_reason(self) -> str:
        needed = decisions.quorum(len(self.voters))
        # Some replicas may have stored it without confirming in time: a later leader could
        # still complete it, so the client is told it failed, not that nothing happened.
        return (
            f"no quorum: fewer than {needed} of {len(self.voters)} replicas confirmed the push "
            f"within {self._timing.prepare:g} s; it is not applied (fetch before pushing again)"
        )

    async def _abandon(self, transaction: transactions.Transaction) -> None:
        await self._store.drop_prepared(transaction.id)
        message = {"term": self.term, "transaction": transaction.id}
        for follower in self.followers.values():
            self._spawn(
                _quietly(self._peers.call(follower.member.peer_url, "/replication/abort", message))
            )

    async def _finish(self, transaction: transactions.Transaction) -> None:
        """Applies a decided transaction here, then everywhere, honouring read leases."""
        self.lease_generation = transaction.generation
        await self._store.apply(transaction, check_old=False)
        await self._await_commits(self._send_commits(transaction))
        self._acknowledged(transaction)

    def _acknowledged(self, transaction: transactions.Transaction) -> None:
        if self._on_acknowledged is not None and not self._stopped:
            self._on_acknowledged(transaction)

    def _send_commits(
        self, transaction: transactions.Transaction
    ) -> dict["asyncio.Future[dict[str, Any]]", str]:
        message = {
            "term": self.term,
            "transaction": transaction.id,
            "generation": transaction.generation,
        }
        commits: dict[asyncio.Future[dict[str, Any]], str] = {
            asyncio.ensure_future(
                self._peers.call(follower.member.peer_url, "/replication/commit", message)
            ): replica
            for replica, follower in self.followers.items()
        }
        return commits

    async def _await_commits(self, commits: dict["asyncio.Future[dict[str, Any]]", str]) -> None:
        """Returns once every follower applied the transaction or its read lease lapsed."""
        applied: set[str] = set()
        pending = set(commits)
        while True:
            leases = {r: f.lease_end for r, f in self.followers.items()}
            wait = decisions.commit_wait(time.monotonic(), lease_ends=leases, applied=applied)
            if wait <= 0 or not pending:
                break
            done, pending = await asyncio.wait(
                pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
            )
            for commit in done:
                with contextlib.suppress(peerclient.PeerError):
                    if commit.result().get("ok"):
                        applied.add(commits[commit])
        for commit in pending:
            self._spawn(_quietly(commit))

    # -- status ---------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "ready": self.ready,
            "waiting": self.ready_reason,
            "leaseSeconds": round(max(0.0, self.lease_end() - now), 3),
            "followers": {
                replica: {
                    "reachable": follower.reachable,
                    "generation": None if follower.applied is None else follower.applied.generation,
                    "inSync": follower.applied is not None
                    and follower.applied.generation == self._store.state.generation
                    and follower.applied.checksum == self._store.checksum,
                    "error": follower.error,
                }
                for replica, follower in self.followers.items()
            },
        }


async def _quietly(awaitable: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await awaitable
