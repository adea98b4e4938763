"""One replica: its store, its role in the current term, and what it tells the controller.

The controller (the operator, or ``gitquorum local``) names the leader and the term in a
configuration it sends to every replica (``configure``). A replica obeys only a term at least
as new as any it has seen, and stores the term before it obeys; a configuration of an older
term, or of the same term naming another leader, is refused. The replica that the
configuration names leads (``leading``); every other one follows (``following``). A leader
that learns of a newer term from a peer steps down at once.

What a replica reports (``status``) is what the controller decides on: its term, its log
position, whether it may lead, whether it serves reads, how far behind it is.

While the leader changes (a hand-off, a new term not yet settled) the replica is *in
transition*: requests it cannot serve yet are held for a moment rather than refused
(``forwarding``), and it stays ready for its Service, so a planned change fails no client.
"""

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from gitquorum import errors
from gitquorum.replication import (
    catchup,
    decisions,
    following,
    leading,
    membership,
    notifying,
    peerclient,
    reports,
    store,
    versions,
)

log = logging.getLogger(__name__)


class Role(enum.Enum):
    LEADER = "Leader"
    FOLLOWER = "Follower"


class Replica:
    """The replication state machine of one replica process."""

    def __init__(
        self,
        *,
        replica: str,
        local: store.Store,
        peers: peerclient.Peers,
        copier: catchup.Copier,
        timing: leading.Timing,
        notifier: notifying.Notifier | None = None,
    ) -> None:
        self.id = replica
        self.store = local
        self.peers = peers
        self.copier = copier
        self.timing = timing
        self.configuration: membership.Configuration | None = None
        self.leadership: leading.Leadership | None = None
        self.following = following.Following(
            replica=replica,
            local=local,
            peers=peers,
            copier=copier,
            timing=timing,
            on_newer_term=self._newer_term,
        )
        self.notifier = notifier
        """Push notifications to webhooks, when the replica has a notifications file."""
        if notifier is not None:
            self.following.on_notified = notifier.observe
        self._changing = asyncio.Lock()
        self._background: set[asyncio.Future[None]] = set()
        self.started = time.monotonic()
        # Starting counts as a transition: a client may reach a new replica before its
        # controller has configured it (a Service still naming the address of the pod it
        # replaced); the request waits for the configuration rather than failing.
        self._transition_until = self.started + timing.handoff
        self.damage: str | None = None
        """What a scrub found wrong with the objects here, until a repair is verified: no
        reads are served meanwhile (``upkeep``)."""
        self.upkeep_report: Callable[[], reports.Upkeep | None] = lambda: None

    @property
    def role(self) -> Role:
        return Role.LEADER if self.leadership is not None else Role.FOLLOWER

    @property
    def leader(self) -> membership.Member | None:
        if self.configuration is None or self.store.state.leader is None:
            return None
        return self.configuration.member(self.store.state.leader)

    @property
    def readable(self) -> bool:
        """Whether this replica may serve reads now without serving a stale state."""
        if self.damage is not None:
            return False
        if self.leadership is not None:
            return self.leadership.readable
        return self.following.readable

    @property
    def writable(self) -> bool:
        return self.leadership is not None and self.leadership.writable

    @property
    def in_transition(self) -> bool:
        """Whether a leader change is under way here, so that what cannot be served now soon
        can be: a hand-off, a new leader taking office, a follower awaiting its first lease."""
        if self.leadership is not None and self.leadership.handing_off:
            return True
        if time.monotonic() >= self._transition_until:
            return False
        if self.leadership is not None:
            return not self.leadership.ready
        return not self.following.readable

    async def hand_off(self, *, term: int, successor: str, timeout: float) -> dict[str, Any]:
        """Prepares a switchover to ``successor`` (see ``Leadership.hand_off``)."""
        if term != self.store.state.term or self.leadership is None:
            raise errors.Conflict(
                f"this replica does not lead term {term} (at term {self.store.state.term}, "
                f"{self.role.value.lower()})"
            )
        self._transition_until = time.monotonic() + timeout + self.timing.handoff
        applied = await self.leadership.hand_off(successor, timeout=timeout)
        self._transition_until = time.monotonic() + self.timing.handoff
        return {
            "ok": True,
            "term": term,
            "generation": applied.generation,
            "transaction": applied.transaction,
            "checksum": applied.checksum,
        }

    async def leave(self, timeout: float) -> None:
        """Before the process stops: a leader waits (up to ``timeout``) for the controller to
        move leadership away, so that pushes in flight finish and new ones are held, not cut."""
        deadline = time.monotonic() + timeout
        if self.leadership is None:
            await self.following.release()
            return
        log.info("stopping while leading term %s: waiting for a switchover", self.store.state.term)
        while self.leadership is not None and time.monotonic() < deadline:
            await asyncio.sleep(self.timing.heartbeat / 5)
        if self.leadership is not None:
            log.warning("no switchover within %s s: stopping as the leader", timeout)

    async def configure(self, configuration: membership.Configuration) -> None:
        """Takes a configuration from the controller; raises Conflict if it is outdated."""
        async with self._changing:
            state = self.store.state
            if configuration.term < state.term:
                raise errors.Conflict(
                    f"term {configuration.term} is older than this replica's {state.term}"
                )
            if configuration.term == state.term and state.leader not in (
                None,
                configuration.leader,
            ):
                raise errors.Conflict(
                    f"term {state.term} already has leader {state.leader}, "
                    f"not {configuration.leader}"
                )
            previous_leader = state.leader
            if configuration.term != state.term or self.configuration is None:
                self._transition_until = time.monotonic() + self.timing.handoff
            await self.store.observe_term(configuration.term, configuration.leader)
            same_term = self.leadership is not None and self.leadership.term == configuration.term
            self.configuration = configuration
            if configuration.leader == self.id:
                if not same_term:
                    await self._lead(configuration, previous_leader)
                elif self.leadership is not None:
                    self.leadership.reconfigure(configuration)
            else:
                await self._follow()
            log.info(
                "term %s: %s leads; this replica (%s) is %s",
                configuration.term,
                configuration.leader,
                self.id,
                self.role.value.lower(),
            )

    async def _lead(
        self, configuration: membership.Configuration, previous_leader: str | None
    ) -> None:
        await self.following.stop()
        if self.leadership is not None:
            await self.leadership.stop()
        self.leadership = leading.Leadership(
            replica=self.id,
            configuration=configuration,
            local=self.store,
            peers=self.peers,
            timing=self.timing,
            previous_leader=previous_leader,
            on_fenced=self._fenced,
            on_acknowledged=None if self.notifier is None else self.notifier.acknowledged_push,
            notified=None if self.notifier is None else self.notifier.heartbeat_value,
        )
        self.leadership.start()
        if self.notifier is not None:
            leadership = self.leadership
            self.notifier.lead(lambda: leadership.ready)

    async def _follow(self) -> None:
        if self.notifier is not None:
            self.notifier.stop_leading()
        if self.leadership is not None:
            await self.leadership.stop()
            self.leadership = None
        self.following.follow(self.leader)

    async def _fenced(self, term: int) -> None:
        """A peer knows a newer term: this leader's word is void; follow whoever leads it."""
        # A task of its own: stepping down cancels the leader's tasks, the caller among them.
        task = asyncio.ensure_future(self._newer_term(term, None))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _newer_term(self, term: int, leader: str | None) -> None:
        async with self._changing:
            if term < self.store.state.term:
                return
            await self.store.observe_term(term, leader)
            await self._follow()

    async def close(self) -> None:
        if self.leadership is not None:
            await self.leadership.stop()
        await self.following.stop()
        if self.notifier is not None:
            await self.notifier.close()
        await self.peers.close()

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.report().to_json()

    def report(self) -> reports.ReplicaStatus:
        """What the controller decides on (``GET /admin/status``)."""
        state = self.store.state
        prepared = state.prepared
        leader_applied = self.following.leader_applied
        lag = (
            0
            if self.leadership is not None or leader_applied is None
            else max(0, leader_applied.generation - state.generation)
        )
        return reports.ReplicaStatus(
            replica=self.id,
            role=self.role.value,
            term=state.term,
            leader=state.leader,
            configured_term=None if self.configuration is None else self.configuration.term,
            configuration=None if self.configuration is None else self.configuration.to_json(),
            generation=state.generation,
            checksum=self.store.checksum,
            transaction=state.last_transaction,
            position=decisions.Position(
                state.position.term, state.position.generation, state.position.seq
            ),
            prepared=None
            if prepared is None
            else {"id": prepared.id, "generation": prepared.generation, "term": prepared.term},
            eligible=not state.rebuilding,
            readable=self.readable,
            writable=self.writable,
            in_transition=self.in_transition,
            state=self._sync_state(),
            lag=lag,
            copy=vars(self.copier.progress) | {"active": self.following.copying},
            refs=len(self.store.refs),
            protocol=reports.Protocol(**versions.describe()),
            leading=None if self.leadership is None else self.leadership.describe(),
            upkeep=self.upkeep_report(),
            notifications=None if self.notifier is None else self.notifier.report(),
        )

    def _sync_state(self) -> str:
        if self.store.state.rebuilding or self.following.copying:
            return "Rebuilding"
        if self.damage is not None:
            return "Damaged"
        if self.leadership is not None:
            return "InSync" if self.leadership.ready else "Promoting"
        return self.following.sync.value
