"""A damaged replica repairing itself from a healthy peer, and only from one.

The sources, in order: the leader (every replica holds at most what it applied), then any
other peer at this replica's own generation and checksum. A peer is asked first whether it
found damage in its objects (``GET /replication/integrity``); one that did, or does not
answer, is no source, so damage never travels from one replica to another (git also checks
every object it receives against its name). A leader that is damaged has only its in-sync
followers to turn to. The repair itself is ``scrubbing.Repairer``'s; a scrub afterwards
verifies it, and a rebuild follows if damage remains. A repair that fails is tried again at
growing intervals, up to a minute (a scrub period, if shorter), so that a peer coming back
is used soon.
"""

import logging
import time

from gitquorum import errors
from gitquorum.replication import maintenance, membership, peerclient, replica, scrubbing
from gitquorum.server import spawning

log = logging.getLogger(__name__)

PEER_TIMEOUT = 2.0
MAX_BACKOFF = 60.0


class Repairs:
    """The repairs of one replica: where from, how, and when to try again."""

    def __init__(
        self,
        *,
        member: replica.Replica,
        runner: spawning.GitRunner,
        repairer: scrubbing.Repairer,
        settings: maintenance.Settings,
        strict: bool,
    ) -> None:
        self._member = member
        self._runner = runner
        self._repairer = repairer
        self._strict = strict
        self._first_backoff = settings.tick
        period = settings.scrub_interval or MAX_BACKOFF
        self._longest_backoff = max(settings.tick, min(MAX_BACKOFF, period))
        self._backoff = self._first_backoff
        self.after = float("-inf")
        """Monotonic time before which no repair is tried again."""

    def found(self) -> None:
        """New damage: repair at once."""
        self.after = float("-inf")
        self._backoff = self._first_backoff

    async def attempt(self, findings: scrubbing.Findings | None) -> tuple[str, str]:
        """Repairs from the first healthy peer that can: ("ok" or "failed", what was done).
        Without ``findings`` (the damage was found before a restart) it scrubs first."""
        outcome, detail = await self._attempt(findings)
        if outcome == "ok":
            self.found()
        else:
            self.after = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._longest_backoff)
        return outcome, detail

    async def _attempt(self, findings: scrubbing.Findings | None) -> tuple[str, str]:
        if findings is None:
            findings = await self._verify()
            if not findings.damaged:
                return "ok", "a scrub after the restart found no damage"
        sources = await self.sources()
        if not sources:
            return "failed", "no healthy peer in sync to repair from"
        detail = ""
        for source in sources:
            tips = list(self._member.store.refs.values())
            try:
                done = await self._repairer.repair(findings, source, tips=tips)
                verified = await self._verify()
                if verified.damaged:
                    done.append(await self._repairer.rebuild(source, tips=tips))
                    verified = await self._verify()
            except errors.GitFailed as error:
                detail = f"from {source.replica}: git {error.command} failed: {error.message}"
                continue
            except OSError as error:  # moving files aside: a full disk, say
                detail = f"from {source.replica}: {error}"
                continue
            if not verified.damaged:
                return "ok", f"from {source.replica}: {'; '.join(done)}"
            findings = verified
            detail = f"from {source.replica}: still damaged: {verified.summary()}"
        return "failed", detail

    async def _verify(self) -> scrubbing.Findings:
        return await scrubbing.scrub(
            self._runner, self._member.store.repository, strict=self._strict
        )

    async def sources(self) -> list[scrubbing.Source]:
        """Healthy peers to repair from, the leader first."""
        configuration = self._member.configuration
        if configuration is None:
            return []
        leader = self._member.leader
        candidates: list[membership.Member] = []
        if leader is not None and leader.id != self._member.id:
            candidates.append(leader)
        candidates += [
            member
            for member in configuration.members
            if member.id != self._member.id and member not in candidates
        ]
        applied = self._member.store.applied
        sources = []
        for candidate in candidates:
            try:
                answer = await self._member.peers.call(
                    candidate.peer_url, "/replication/integrity", timeout=PEER_TIMEOUT
                )
            except peerclient.PeerError as error:
                log.debug("%s is no source now: %s", candidate.id, error)
                continue
            if answer.get("damaged") is not False:
                continue
            in_step = (
                answer.get("generation") == applied.generation
                and answer.get("checksum") == applied.checksum
            )
            if candidate == leader or in_step:
                url = f"{candidate.peer_url}/replication/git"
                sources.append(scrubbing.Source(candidate.id, url))
        return sources
