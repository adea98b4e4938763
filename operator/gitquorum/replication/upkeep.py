"""Upkeep of one replica: maintenance and scrubs when due and in turn, repairs at once.

Every replica runs the same loop, every ``Settings.tick``:

1. it reads the figures of its repository (``housekeeping.collect``: a directory listing);
2. if it knows itself damaged, it repairs (below) and does nothing else;
3. otherwise it sees what is due: a scrub (``maintenance.scrub_due``), maintenance (a look
   every ``push_interval`` applied transactions or ``interval`` seconds, and a plan that is
   not empty, ``maintenance.plan``); nothing while it copies a peer's state;
4. with a permit if its controller gives them (``Settings.permits``), it asks the leader for
   a turn (``turntaking``; the leader takes its own only when no follower waits), works
   while it renews it, and gives it back.

A scrub that finds damage marks the replica damaged at once, and durably (``ledger``: a
restart repairs too): its status says ``Damaged``, it serves no reads and forwards them to
the leader (``Replica.readable``), its ``/readyz`` fails, it is no source for a peer
(``peerapi``), and it goes on voting and applying transactions (what it stores for new
pushes is sound). It repairs at once, without waiting for a turn, from a healthy peer
(``repairing``), then scrubs again; only a clean scrub lifts the mark. A damaged leader
repairs from an in-sync follower; meanwhile it takes writes (pushes that need a damaged
object fail in git's own checks) and its followers serve the reads; with no healthy peer it
stays damaged, says so, and tries again later, so that its controller can move leadership
away.
"""

import asyncio
import contextlib
import dataclasses
import logging
import pathlib
import time
from collections.abc import Mapping
from typing import Any

from gitquorum import errors
from gitquorum.replication import (
    housekeeping,
    ledger,
    maintenance,
    messages,
    repairing,
    replica,
    reports,
    scrubbing,
    turntaking,
)
from gitquorum.server import metrics, spawning

log = logging.getLogger(__name__)

WORKSPACE = "upkeep"
DAMAGED_DIRECTORY = "damaged"
STATS_SECONDS = 5.0
"""The figures in the status and metrics are at most this old (a look reads them afresh)."""
MAX_PERMIT_SECONDS = 7 * maintenance.DAY
# A permit is the controller's window: a week bounds a controller's mistake.
KINDS = ("maintenance", "scrub", "repair")


class Upkeep:
    """Maintenance, scrubs and repairs of one replica, and the leader's book of turns."""

    def __init__(
        self,
        *,
        name: str,
        member: replica.Replica,
        runner: spawning.GitRunner,
        settings: maintenance.Settings,
        data: pathlib.Path,
        token: str,
        strict: bool,
    ) -> None:
        self.name = name
        self.member = member
        self.settings = settings
        self._store = member.store
        self._runner = runner
        self._strict = strict
        self._path = data / ledger.RECORD_FILE
        workspace = data / WORKSPACE
        self._housekeeper = housekeeping.Housekeeper(
            runner=runner, repository=self._store.repository, workspace=workspace
        )
        self._repairs = repairing.Repairs(
            member=member,
            runner=runner,
            repairer=scrubbing.Repairer(
                runner=runner,
                repository=self._store.repository,
                workspace=workspace,
                damaged=data / DAMAGED_DIRECTORY,
                token=token,
            ),
            settings=settings,
            strict=strict,
        )
        self.record = ledger.Record()
        self.stats = maintenance.Stats()
        self._stats_at = float("-inf")
        self.due: tuple[str, ...] = ()
        self.running = ""
        self._started = time.time()
        self._checked_at: float | None = None
        self._checked_generation = 0
        self._pending = False
        self._findings: scrubbing.Findings | None = None
        self._permit_until = float("-inf")
        self.turns = turntaking.Turns(name=name, member=member, every=settings.tick)
        self._task: asyncio.Task[None] | None = None
        self.runs = metrics.Counter(
            "gitquorum_upkeep_runs_total",
            "Maintenance runs, scrubs and repairs, by outcome (ok, damaged, failed, cancelled).",
            labels=("kind", "outcome"),
        )
        self.tasks = metrics.Counter(
            "gitquorum_maintenance_tasks_total",
            "Maintenance tasks done (geometric-repack, full-repack, commit-graph, pack-refs...).",
            labels=("task",),
        )
        self.durations = metrics.Histogram(
            "gitquorum_upkeep_duration_seconds",
            "How long maintenance runs, scrubs and repairs took.",
            labels=("kind",),
        )

    # -- life cycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Loads what the last run remembered: a replica found damaged stays damaged."""
        self.record = await asyncio.to_thread(ledger.load, self._path)
        self._checked_generation = self._store.state.generation
        if self.record.damage is not None:
            self.member.damage = self.record.damage
            log.error(
                "repository %s: replica %s was found damaged before it stopped (%s): "
                "serving no reads until it is repaired",
                self.name,
                self.member.id,
                self.record.damage,
            )
        self.member.upkeep_report = self.report
        await self._refresh(force=True)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick)
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # logged; the next tick tries again
                log.exception("repository %s: upkeep step failed", self.name)

    async def _step(self) -> None:
        window = time.time() - self.settings.ref_history
        self._store.history.forget(window)
        await self._refresh()
        if self.member.damage is not None:
            self.due = ("repair",)
            if time.monotonic() >= self._repairs.after:
                await self._repair()
            return
        if self._copying():
            self.due = ()
            return
        self.due = await self._find_due()
        if not self.due or not self._permitted():
            return
        task = self.due[0]
        if not await self.turns.acquire(task):
            return
        try:
            work = self._maintain() if task == "maintenance" else self._scrub()
            await self.turns.holding(task, work)
        finally:
            await self.turns.release()

    # -- what is due ----------------------------------------------------------------------------

    async def _refresh(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._stats_at < STATS_SECONDS:
            return
        stale_before = time.time() - self.settings.prune_expiry
        self.stats = await asyncio.to_thread(
            housekeeping.collect, self._store.repository, stale_before=stale_before
        )
        self._stats_at = time.monotonic()

    async def _find_due(self) -> tuple[str, ...]:
        due = []
        last_scrub = self.record.last_scrub
        if maintenance.scrub_due(
            last=None if last_scrub is None else last_scrub.at,
            started=self._started,
            now=time.time(),
            interval=self.settings.scrub_interval,
            replica=self.member.id,
        ):
            due.append("scrub")
        if await self._maintenance_due():
            due.append("maintenance")
        return tuple(due)

    async def _maintenance_due(self) -> bool:
        generation = self._store.state.generation
        since = None if self._checked_at is None else time.monotonic() - self._checked_at
        if not maintenance.check_due(
            applied_since=generation - self._checked_generation,
            seconds_since=since,
            settings=self.settings,
        ):
            return self._pending
        await self._refresh(force=True)
        self._checked_at, self._checked_generation = time.monotonic(), generation
        self._pending = not self._plan().empty
        return self._pending

    def _plan(self) -> maintenance.Plan:
        full = self.record.last_full_repack
        return maintenance.plan(
            self.stats,
            since_full_repack=None if full is None else time.time() - full,
            settings=self.settings,
        )

    def _copying(self) -> bool:
        return self.member.following.copying or self._store.state.rebuilding

    def _permitted(self) -> bool:
        return not self.settings.permits or time.monotonic() < self._permit_until

    # -- maintenance ----------------------------------------------------------------------------

    async def _maintain(self) -> None:
        await self._refresh(force=True)
        before, plan = self.stats, self._plan()
        self._checked_at = time.monotonic()
        self._checked_generation = self._store.state.generation
        self._pending = False
        if plan.empty:
            return
        self.running = "maintenance"
        started = time.monotonic()
        outcome, detail = "ok", ""
        result = housekeeping.Result()
        try:
            result = await self._housekeeper.run(
                plan,
                refs_lock=self._refs_lock,
                roots=self._roots,
                expire_before=time.time() - self.settings.prune_expiry,
            )
        except errors.GitFailed as error:
            outcome, detail = "failed", f"git {error.command} failed: {error.message}"
        except asyncio.CancelledError:
            outcome, detail = "cancelled", "stopped"
            raise
        finally:
            self.running = ""
            seconds = time.monotonic() - started
            await self._refresh(force=True)
            detail = self._describe(result, before, detail)
            full = any(name == maintenance.Repack.FULL.value for name, _ in result.tasks)
            self.record = dataclasses.replace(
                self.record,
                last_maintenance=reports.Run(time.time(), outcome, round(seconds, 3), detail),
                last_full_repack=time.time() if full else self.record.last_full_repack,
            )
            await asyncio.to_thread(ledger.save, self._path, self.record)
            self._count("maintenance", outcome, seconds)
            for name, _ in result.tasks:
                self.tasks.inc((name,))
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(
            level,
            "repository %s: maintenance on %s %s in %.2f s: %s",
            self.name,
            self.member.id,
            outcome,
            seconds,
            detail,
        )

    def _describe(
        self, result: housekeeping.Result, before: maintenance.Stats, failure: str
    ) -> str:
        after = self.stats
        figures = (
            f"packs {before.packs} -> {after.packs}, loose objects {before.loose_objects} -> "
            f"{after.loose_objects}, {before.size_bytes} -> {after.size_bytes} bytes"
        )
        done = result.describe() + ("; pruned" if result.pruned else "")
        return f"{failure + '; ' if failure else ''}{done}; {figures}"

    def _refs_lock(self) -> contextlib.AbstractAsyncContextManager[object]:
        """The lock a ref change holds on this replica: the leader's write lock, or the
        follower's lock of messages."""
        if self.member.leadership is not None:
            return self.member.leadership.write_lock
        return self.member.following.lock

    def _roots(self) -> housekeeping.Roots:
        """The store's refs and history, and whether objects may expire, at this moment."""
        window = time.time() - self.settings.ref_history
        history = self._store.history
        refusal = maintenance.may_prune(
            history_complete=history.covers(window),
            prepared=self._store.state.prepared is not None,
            copying=self._copying(),
            damaged=self.member.damage is not None,
        )
        return housekeeping.Roots(
            refs=dict(self._store.refs),
            head=self._store.head,
            replaced=history.since(window),
            no_prune=refusal,
        )

    # -- scrubs and repairs ---------------------------------------------------------------------

    async def _scrub(self) -> None:
        self.running = "scrub"
        started = time.monotonic()
        try:
            findings = await scrubbing.scrub(
                self._runner, self._store.repository, strict=self._strict
            )
        except asyncio.CancelledError:
            self._count("scrub", "cancelled", time.monotonic() - started)
            raise
        finally:
            self.running = ""
        seconds = time.monotonic() - started
        if findings.damaged:
            await self._found_damage(findings, seconds)
            return
        detail = findings.summary()
        self.record = dataclasses.replace(
            self.record, last_scrub=reports.Run(time.time(), "ok", round(seconds, 3), detail)
        )
        await asyncio.to_thread(ledger.save, self._path, self.record)
        self._count("scrub", "ok", seconds)
        log.info(
            "repository %s: scrub on %s ok in %.2f s: %s (%s packs, %s loose objects)",
            self.name,
            self.member.id,
            seconds,
            detail,
            self.stats.packs,
            self.stats.loose_objects,
        )

    async def _found_damage(self, findings: scrubbing.Findings, seconds: float) -> None:
        detail = findings.summary()
        self.member.damage = detail
        self._findings = findings
        self._repairs.found()
        self.record = dataclasses.replace(
            self.record,
            damage=detail,
            last_scrub=reports.Run(time.time(), "damaged", round(seconds, 3), detail),
        )
        await asyncio.to_thread(ledger.save, self._path, self.record)
        self._count("scrub", "damaged", seconds)
        log.error(
            "repository %s: scrub on %s found damage: %s; serving no reads until repaired",
            self.name,
            self.member.id,
            detail,
        )
        await self._repair()

    async def _repair(self) -> None:
        started = time.monotonic()
        self.running = "repair"
        try:
            outcome, detail = await self._repairs.attempt(self._findings)
        finally:
            self.running = ""
        seconds = time.monotonic() - started
        run = reports.Run(time.time(), outcome, round(seconds, 3), detail)
        if outcome == "ok":
            self.member.damage = None
            self._findings = None
            self.record = dataclasses.replace(
                self.record, damage=None, last_repair=run, last_scrub=run
            )
            log.info(
                "repository %s: replica %s repaired and verified in %.2f s: %s",
                self.name,
                self.member.id,
                seconds,
                detail,
            )
        else:
            self.record = dataclasses.replace(self.record, last_repair=run)
            log.warning(
                "repository %s: replica %s is still damaged: %s; trying again in %.1f s",
                self.name,
                self.member.id,
                detail,
                self._repairs.after - time.monotonic(),
            )
        await asyncio.to_thread(ledger.save, self._path, self.record)
        self._count("repair", outcome, seconds)

    def integrity(self) -> dict[str, Any]:
        """``GET /replication/integrity``: whether a peer may repair from this replica."""
        applied = self._store.applied
        last = self.record.last_scrub
        return {
            "damaged": self.member.damage is not None,
            "term": self._store.state.term,
            "generation": applied.generation,
            "checksum": applied.checksum,
            "lastScrub": None if last is None else last.at,
        }

    # -- controller -----------------------------------------------------------------------------

    def permit(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /admin/upkeep``: maintain and scrub for the next ``permitSeconds`` (0 ends a
        permit); matters only to a replica started with permits required."""
        seconds = messages.field(message, "permitSeconds")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= MAX_PERMIT_SECONDS
        ):
            raise errors.MalformedMessage(
                f"permitSeconds must be in [0, {MAX_PERMIT_SECONDS:g}] seconds"
            )
        self._permit_until = time.monotonic() + seconds if seconds > 0 else float("-inf")
        return self.report().to_json()

    # -- status and metrics ---------------------------------------------------------------------

    def report(self) -> reports.Upkeep:
        now = time.monotonic()
        stats = self.stats
        return reports.Upkeep(
            packs=stats.packs,
            cruft_packs=stats.cruft_packs,
            loose_objects=stats.loose_objects,
            size_bytes=stats.size_bytes,
            damaged=self.member.damage is not None,
            damage=self.member.damage or "",
            due=self.due,
            running=self.running,
            permits=self.settings.permits,
            permit_seconds=round(max(0.0, self._permit_until - now), 3),
            last_maintenance=self.record.last_maintenance,
            last_scrub=self.record.last_scrub,
            last_repair=self.record.last_repair,
            last_full_repack=self.record.last_full_repack,
            turns=None if self.member.leadership is None else self.turns.book().describe(now=now),
        )

    def _count(self, kind: str, outcome: str, seconds: float) -> None:
        self.runs.inc((kind, outcome))
        self.durations.observe((kind,), seconds)

    def metrics(self) -> list[metrics.Metric]:
        def last(run: reports.Run | None) -> float:
            return 0.0 if run is None else run.at

        def last_clean_scrub() -> float:
            scrub = self.record.last_scrub
            return last(scrub) if scrub is not None and scrub.outcome == "ok" else 0.0

        return [
            self.runs,
            self.tasks,
            self.durations,
            metrics.Gauge(
                "gitquorum_repository_packs",
                "Pack files of the replica's repository, cruft packs included.",
                lambda: self.stats.packs,
            ),
            metrics.Gauge(
                "gitquorum_repository_cruft_packs",
                "Packs of unreachable objects kept until they expire.",
                lambda: self.stats.cruft_packs,
            ),
            metrics.Gauge(
                "gitquorum_repository_loose_objects",
                "Objects stored one per file.",
                lambda: self.stats.loose_objects,
            ),
            metrics.Gauge(
                "gitquorum_repository_size_bytes",
                "Bytes of packs and loose objects.",
                lambda: self.stats.size_bytes,
            ),
            metrics.Gauge(
                "gitquorum_replica_damaged",
                "1 while a scrub's damage is not repaired: the replica serves no reads.",
                lambda: float(self.member.damage is not None),
            ),
            metrics.Gauge(
                "gitquorum_maintenance_last_run_timestamp_seconds",
                "When the last maintenance run ended (0: never).",
                lambda: last(self.record.last_maintenance),
            ),
            metrics.Gauge(
                "gitquorum_scrub_last_run_timestamp_seconds",
                "When the last scrub ended (0: never).",
                lambda: last(self.record.last_scrub),
            ),
            metrics.Gauge(
                "gitquorum_scrub_last_success_timestamp_seconds",
                "When the last scrub that found no damage ended (0: never).",
                last_clean_scrub,
            ),
        ]
