"""Planned change in a pass: a switchover asked for (the annotation, a leader pod being
deleted) or the next step of a rolling update (``rolling`` decides, ``switching`` hands off).
"""

import asyncio
import dataclasses
import logging
from collections.abc import Mapping

from gitquorum.kube import context, manifests, names, planning, rolling, switching
from gitquorum.kube.spec import RepositorySpec

log = logging.getLogger("gitquorum.kube.reconciler")

DAMAGED = "Damaged"
"""The state of a replica whose scrub found damaged or missing objects (it repairs itself)."""


class Updating(context.Context):
    """Rolling updates and switchovers."""

    async def _update(
        self,
        body: context.Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        spec: RepositorySpec,
        memory: context.Memory,
        revision: str,
    ) -> tuple[context.Body, planning.Durable, rolling.Update]:
        """At most one planned change per pass: a switchover asked for (annotation, leader
        pod deleting) or the next step of a rolling update."""
        uid = body["metadata"]["uid"]
        asked = self._switchover_asked(body, durable, observed)
        if asked is not None:
            target, why = asked
            body, durable = await self._switch_over(
                body, durable, observed, spec, memory, target, why
            )
            update = rolling.plan(
                durable, observed, revision=revision, replicas=spec.replicas, strategy="OnDelete"
            )
            if update.action is rolling.Action.REPORT:
                update = dataclasses.replace(
                    update, action=rolling.Action.WAIT, message="update waits for a switchover"
                )
            return body, durable, update
        if memory.replacing is not None:
            item = observed.get(memory.replacing)
            if item is None or (item.revision == revision and item.in_sync):
                memory.replacing = None
        update = rolling.plan(
            durable,
            observed,
            revision=revision,
            replicas=spec.replicas,
            strategy=spec.update_strategy,
        )
        if update.action is rolling.Action.NONE and memory.replacing is not None:
            # Its pod is being deleted or recreated: no pod is outdated, yet not all updated.
            waiting = rolling.Update(
                rolling.Action.WAIT,
                f"replica {memory.replacing} is being replaced at revision {revision}",
            )
            return body, durable, waiting
        if update.action is rolling.Action.NONE:
            self.updating.release(uid)
            return body, durable, update
        if update.action in (rolling.Action.REPORT, rolling.Action.WAIT):
            return body, durable, update
        if memory.replacing is not None:
            # The watch cache may not show our own deletion yet: never two at once.
            return (
                body,
                durable,
                rolling.Update(
                    rolling.Action.WAIT,
                    f"update waits for replica {memory.replacing} to be back in sync",
                    outdated=update.outdated,
                ),
            )
        if not self.updating.take(uid):
            queued = rolling.Update(
                rolling.Action.WAIT,
                f"update queued: {len(self.updating.holders)} repositories are updating, at "
                f"most {self.updating.limit} at once (--max-concurrent-updates)",
                outdated=update.outdated,
            )
            return body, durable, queued
        assert update.replica is not None
        if update.action is rolling.Action.SWITCHOVER:
            body, durable = await self._switch_over(
                body, durable, observed, spec, memory, update.replica, "rolling update"
            )
            return body, durable, update
        await self._replace(body, update.replica, memory, revision, observed)
        return body, durable, update

    def _switchover_asked(
        self,
        body: context.Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
    ) -> tuple[str, str] | None:
        """(target, why) when leadership must move now, not as part of an update."""
        leader = observed.get(durable.leader or "")
        if leader is not None and leader.deleting and leader.report is not None:
            target = rolling.switchover_target(durable, observed)
            return (target, f"leader pod {leader.name} is being deleted") if target else None
        if leader is not None and leader.report is not None and leader.report.state == DAMAGED:
            # It serves nothing while it repairs: another replica leads meanwhile.
            target = rolling.switchover_target(durable, observed)
            return (target, f"leader {leader.name} found damaged objects") if target else None
        wanted = ((body["metadata"].get("annotations")) or {}).get(names.SWITCHOVER)
        if wanted is None:
            return None
        if wanted == durable.leader:
            return wanted, "asked by annotation"
        target = rolling.switchover_target(
            durable, observed, wanted=None if wanted == "any" else wanted
        )
        return (target or wanted), "asked by annotation"

    async def _switch_over(
        self,
        body: context.Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        spec: RepositorySpec,
        memory: context.Memory,
        target: str,
        why: str,
    ) -> tuple[context.Body, planning.Durable]:
        asked = why == "asked by annotation"
        if target == durable.leader:
            await self._answer_switchover(body, memory, "Normal", f"{target} already leads")
            return body, durable
        if rolling.switchover_target(durable, observed, wanted=target) is None:
            message = (
                f"switchover to {target} refused: it is not a voting replica in sync in term "
                f"{durable.term}"
            )
            if asked:
                await self._answer_switchover(body, memory, "Warning", message)
            else:
                self._event(body, memory, "Warning", "SwitchoverWaiting", message)
            return body, durable
        assert memory.peers is not None
        outcome = await switching.hand_off(memory.peers, durable, observed, target)
        if outcome.durable is None:
            self._event(body, memory, "Warning", "SwitchoverWaiting", outcome.message)
            return body, durable
        notes = context.Notes(None, manifests.revision(body, spec, image=self.settings.image))
        body = await self._write(body, outcome.durable, observed, spec, memory, notes)
        self.metrics.decisions.inc(("Switchover",))
        self._event(body, memory, "Normal", "Switchover", f"{outcome.message} ({why})", always=True)
        if asked:
            await self._answer_switchover(body, memory, None, "")
        return body, outcome.durable

    async def _answer_switchover(
        self, body: context.Body, memory: context.Memory, kind: str | None, message: str
    ) -> None:
        """The annotation asked once: removed, with the outcome as an event."""
        if kind is not None:
            reason = "Switchover" if kind == "Normal" else "SwitchoverRefused"
            self._event(body, memory, kind, reason, message, always=True)
        metadata = body["metadata"]
        await asyncio.to_thread(
            self.kube.remove_annotation, metadata["namespace"], metadata["name"], names.SWITCHOVER
        )

    async def _replace(
        self,
        body: context.Body,
        replica: str,
        memory: context.Memory,
        revision: str,
        observed: Mapping[str, planning.Observed],
    ) -> None:
        """Deletes an outdated follower's pod; ``_converge`` recreates it on its volume."""
        item = observed.get(replica) or planning.Observed(replica)
        memory.replacing = replica
        await asyncio.to_thread(
            self.kube.delete_pod, body["metadata"]["namespace"], replica, force=False
        )
        self.metrics.decisions.inc(("ReplicaUpdated",))
        self._event(
            body,
            memory,
            "Normal",
            "ReplicaUpdated",
            f"replacing replica {replica} (revision {item.revision or 'unknown'} -> {revision}) "
            "on its own volume",
            always=True,
        )
