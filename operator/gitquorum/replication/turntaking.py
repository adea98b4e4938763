"""Taking turns for upkeep: a follower asks its leader, the leader keeps the book.

The book and its rules are ``turns``; this is the talking. A follower whose work is due asks
the leader (``POST /replication/turn``) and, once it has the turn, renews it every tick
while it works (``holding``); a refused renewal, or a leader that does not answer, stops the
work, so that a turn that lapsed on the leader never has two replicas working on it. The
leader answers its followers from the book of its current term and takes its own turns from
the same book. A replica whose leader is unknown takes no turn.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from gitquorum.replication import peerclient, replica, turns

log = logging.getLogger(__name__)

PEER_TIMEOUT = 2.0


class Turns:
    """One replica's side of turns: its own asks, and the leader's book."""

    def __init__(self, *, name: str, member: replica.Replica, every: float) -> None:
        self._name = name
        self._member = member
        self._every = every
        self._book = turns.Turns(leader=member.id, now=time.monotonic())
        self._term = 0

    def book(self) -> turns.Turns:
        """The leader's book of turns for the current term (a new term starts a new one)."""
        term = self._member.store.state.term
        if term != self._term:
            self._book = turns.Turns(leader=self._member.id, now=time.monotonic())
            self._term = term
        return self._book

    async def acquire(self, task: str) -> bool:
        """Takes or renews this replica's turn for ``task``."""
        member = self._member
        if member.leadership is not None:
            return self.book().take_own(task, now=time.monotonic())
        leader = member.leader
        if leader is None or leader.id == member.id:
            return False
        message = {
            "term": member.store.state.term,
            "replica": member.id,
            "task": task,
            "every": self._every,
        }
        try:
            answer = await member.peers.call(
                leader.peer_url, "/replication/turn", message, timeout=PEER_TIMEOUT
            )
        except peerclient.PeerError as error:
            log.debug("repository %s: no turn from %s: %s", self._name, leader.id, error)
            return False
        return answer.get("granted") is True

    async def release(self) -> None:
        member = self._member
        if member.leadership is not None:
            self.book().release(member.id)
            return
        leader = member.leader
        if leader is None or leader.id == member.id:
            return
        message = {
            "term": member.store.state.term,
            "replica": member.id,
            "task": "maintenance",
            "release": True,
        }
        with contextlib.suppress(peerclient.PeerError):
            await member.peers.call(
                leader.peer_url, "/replication/turn", message, timeout=PEER_TIMEOUT
            )

    async def holding(self, task: str, work: Coroutine[Any, Any, None]) -> None:
        """Runs ``work`` while this replica's turn lasts; stops it when the turn is lost."""
        job = asyncio.ensure_future(work)
        renew = min(self._every, turns.TURN_SECONDS / 4)
        try:
            while not job.done():
                await asyncio.wait({job}, timeout=renew)
                if not job.done() and not await self.acquire(task):
                    log.warning(
                        "repository %s: %s on %s lost its turn: stopping it",
                        self._name,
                        task,
                        self._member.id,
                    )
                    job.cancel()
                    break
        finally:
            if not job.done():
                job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job

    async def answer(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /replication/turn``: a follower asks for a turn, renews or returns it."""
        request = turns.TurnRequest.parse(message)
        member = self._member
        term = member.store.state.term
        configuration = member.configuration
        if member.leadership is None or request.term != term or configuration is None:
            return {"granted": False, "term": term, "reason": "not the leader of this term"}
        if configuration.member(request.replica) is None:
            return {"granted": False, "term": term, "reason": "not a member"}
        book = self.book()
        if request.release:
            book.release(request.replica)
            return {"granted": False, "term": term}
        granted = book.ask(request.replica, request.task, now=time.monotonic(), every=request.every)
        return {"granted": granted, "term": term, "holder": book.holder}
