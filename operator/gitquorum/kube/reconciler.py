"""One pass over one repository: observe, decide one durable step, act, report.

Every pass starts from the GitRepository, its pods, volumes and nodes (kopf's watch caches)
and the replicas' own reports, so a pass can repeat or follow any other, and an operator
restarted at any point carries on. The order inside a pass is what keeps data safe: a durable
decision is written to the status (optimistic concurrency) before replicas are told of it and
before any pod or volume it frees is deleted.

The pass reads as its steps; the parts of a pass live in modules by role (``observing``,
``ensuring``, ``updating``) over a shared ``context``.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from gitquorum import errors
from gitquorum.kube import (
    api,
    bootstrapping,
    context,
    ensuring,
    manifests,
    names,
    observing,
    planning,
    rolling,
    status,
    updating,
    upkeeping,
)
from gitquorum.kube.context import Memory, Notes, Settings
from gitquorum.kube.metrics import OperatorMetrics
from gitquorum.kube.spec import RepositorySpec
from gitquorum.replication import peerclient

log = logging.getLogger(__name__)

__all__ = ["Memory", "Notes", "Reconciler", "Settings"]


class Reconciler(
    observing.Observing,
    ensuring.Ensuring,
    updating.Updating,
    upkeeping.Upkeeping,
    bootstrapping.Bootstrapping,
):
    """One repository's passes; keeps only caches of what is stored elsewhere."""

    def __init__(
        self,
        kube: api.Api,
        settings: context.Settings,
        *,
        events: context.EventSink,
        metrics: OperatorMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(kube, settings, events=events, metrics=metrics, clock=clock)
        self.repositories: dict[str, context.Memory] = {}

    async def close(self) -> None:
        for repository in self.repositories.values():
            if repository.peers is not None:
                await repository.peers.close()

    async def forget(self, uid: str) -> None:
        """Drops what was kept for a deleted repository, closing its connections."""
        repository = self.repositories.pop(uid, None)
        self.updating.release(uid)
        for keys in self.upkeep_permits.values():
            for key in [key for key in keys if key.startswith(f"{uid}/")]:
                del keys[key]
        if repository is not None and repository.peers is not None:
            await repository.peers.close()

    async def reconcile(
        self,
        body: context.Body,
        pods: Iterable[context.Body],
        claims: Iterable[context.Body],
        nodes: Mapping[str, context.Body],
    ) -> float:
        """One pass; returns the seconds until the next one is due (events may come sooner)."""
        started = self.clock()
        try:
            return await self._pass(body, list(pods), list(claims), nodes)
        except errors.StaleObject as conflict:
            log.info("%s; the next pass reads it again", conflict)
            self.metrics.conflicts.inc(())
            return 0.2
        finally:
            self.metrics.passes.observe((), self.clock() - started)

    async def _pass(
        self,
        body: context.Body,
        pods: list[context.Body],
        claims: list[context.Body],
        nodes: Mapping[str, context.Body],
    ) -> float:
        metadata = body["metadata"]
        memory = self.repositories.setdefault(metadata["uid"], context.Memory())
        body = memory.latest(body)
        spec = RepositorySpec.from_body(body.get("spec") or {})
        revision = self._revision(body, spec, memory)
        problem = await self._ensure_objects(body, spec, memory)
        durable = planning.Durable.from_status(body.get("status") or {})
        if problem is not None:
            # Nothing can run without its credentials; say so where the user looks.
            self._event(body, memory, "Warning", "CredentialsInvalid", problem)
            await self._write(body, durable, {}, spec, memory, context.Notes(problem, revision))
            return self.settings.idle_interval
        observed = await self._observe(durable, pods, claims, nodes, memory, spec)
        body, durable, step, blocked = await self._decide_membership(
            body, durable, observed, claims, spec, memory
        )
        update = rolling.Update(rolling.Action.NONE, "")
        if step is None and durable.leader is not None:
            body, durable, update = await self._update(
                body, durable, observed, spec, memory, revision
            )
        configured = False
        if durable.leader is not None and durable.term > 0:
            configured = await self._configure(durable, observed, memory)
            await self._permit_upkeep(body, spec, observed, memory)
            await self._bootstrap(body, durable, observed, memory)
        self._report_divergence(body, durable, observed, memory)
        self._report_damage(body, observed, memory)
        self._report_cordoned(body, observed, memory)
        self._report_webhooks(body, durable, observed, memory)
        await self._label_serving(body, observed, pods)
        await self._converge(body, durable, observed, pods, claims, spec)
        await self._write(
            body, durable, observed, spec, memory, context.Notes(blocked, revision, update)
        )
        memory.settled = (
            step is None
            and update.action in (rolling.Action.NONE, rolling.Action.REPORT)
            and not configured
            and all(observed[name].report is not None for name in durable.member_names)
        )
        busy = any(item.ip for item in observed.values()) or (step is not None)
        return self.settings.busy_interval if busy else self.settings.idle_interval

    async def _decide_membership(
        self,
        body: context.Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        claims: list[context.Body],
        spec: RepositorySpec,
        memory: context.Memory,
    ) -> tuple[context.Body, planning.Durable, planning.Step | None, str | None]:
        """The membership step (elect, replace, scale), written before anything acts on it."""
        step = planning.next_step(
            durable,
            observed,
            replicas=spec.replicas,
            existing_claims=[claim["metadata"]["name"] for claim in claims],
            leader_timeout=self.settings.leader_timeout,
            repository=body["metadata"]["name"],
        )
        if step is None:
            return body, durable, None, None
        if step.durable is None:
            if not _starting(durable, observed, step):
                self._event(body, memory, "Warning", step.kind.value, step.message)
            return body, durable, step, step.message
        notes = context.Notes(None, self._revision(body, spec, memory))
        body = await self._write(body, step.durable, observed, spec, memory, notes)
        self.metrics.decisions.inc((step.kind.value,))
        self._event(body, memory, "Normal", step.kind.value, step.message, always=True)
        return body, step.durable, step, None

    def _revision(self, body: context.Body, spec: RepositorySpec, memory: context.Memory) -> str:
        """``manifests.revision``, rendered again only when the spec (its generation) changed:
        rendering a pod on every pass was a seventh of the event loop at 1,000 repositories."""
        metadata = body["metadata"]
        key = (metadata["name"], metadata.get("generation"), self.settings.image)
        if memory.revision is None or memory.revision[0] != key:
            memory.revision = (key, manifests.revision(body, spec, image=self.settings.image))
        return memory.revision[1]

    def _report_damage(
        self,
        body: context.Body,
        observed: Mapping[str, planning.Observed],
        memory: context.Memory,
    ) -> None:
        damaged = sorted(
            item.name
            for item in observed.values()
            if item.report is not None and item.report.state == updating.DAMAGED
        )
        if damaged:
            self._event(
                body,
                memory,
                "Warning",
                "ReplicaDamaged",
                f"the scrub of {', '.join(damaged)} found damaged or missing objects: it serves "
                "no reads and repairs itself from an undamaged replica",
            )

    def _report_divergence(
        self,
        body: context.Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        memory: context.Memory,
    ) -> None:
        apart = planning.diverged(durable, observed)
        if apart:
            self._event(
                body,
                memory,
                "Warning",
                "RefsDiverged",
                f"refs of {', '.join(apart)} differ from leader {durable.leader}'s at the same "
                "generation: repaired from the leader",
            )

    def _report_webhooks(
        self,
        body: context.Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        memory: context.Memory,
    ) -> None:
        leader = observed.get(durable.leader or "")
        delivery = status.notifications(body, leader.report if leader is not None else None)
        for item in delivery or ():
            if item["consecutiveFailures"]:
                message = f"webhook {item['name']} fails, retried: {item['lastError']}"
                self._event(body, memory, "Warning", "WebhookFailing", message)

    def _report_cordoned(
        self, body: context.Body, observed: Mapping[str, planning.Observed], memory: context.Memory
    ) -> None:
        for item in observed.values():
            if item.cordoned is not None and not item.node_lost:
                self._event(body, memory, "Warning", "WaitingForNode", item.cordoned)

    async def _configure(
        self,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        memory: context.Memory,
    ) -> bool:
        """Gives each member whose configuration is not the wanted one the wanted one;
        returns whether any needed it."""
        wanted = planning.configuration(durable, observed).to_json()
        stale = [
            item
            for item in observed.values()
            if item.report is not None
            and item.name in durable.member_names
            and item.report.configuration != wanted
        ]
        # The leader first: followers told of a new term before it can lead would only
        # forward pushes to a leader that refuses them.
        stale.sort(key=lambda item: item.name != durable.leader)
        for item in stale:
            assert memory.peers is not None and item.ip is not None
            try:
                await memory.peers.call(
                    f"http://{item.ip}:{names.PEER_PORT}",
                    "/admin/configuration",
                    wanted,
                    method="PUT",
                    timeout=self.settings.status_timeout * 2,
                )
            except peerclient.PeerError as error:
                log.info("replica %s not configured yet: %s", item.name, error)
        return bool(stale)

    async def _label_serving(
        self,
        body: context.Body,
        observed: Mapping[str, planning.Observed],
        pods: list[context.Body],
    ) -> None:
        namespace = body["metadata"]["namespace"]
        for pod in pods:
            name = pod["metadata"]["name"]
            item = observed.get(name)
            wanted = None if item is None else planning.serving(item, self.settings.leader_timeout)
            current = (pod["metadata"].get("labels") or {}).get(names.SERVING_LABEL)
            if wanted is None or current == str(wanted).lower():
                continue
            log.info("replica %s %s clients", name, "serves" if wanted else "no longer serves")
            await asyncio.to_thread(
                self.kube.label_pod, namespace, name, names.SERVING_LABEL, str(wanted).lower()
            )

    async def _converge(
        self,
        body: context.Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        pods: list[context.Body],
        claims: list[context.Body],
        spec: RepositorySpec,
    ) -> None:
        # Members are independent: a new repository's claims and pods are asked for together.
        await asyncio.gather(
            *(
                self._converge_member(body, observed.get(m.name) or planning.Observed(m.name), spec)
                for m in durable.members
            )
        )
        present = [p["metadata"]["name"] for p in pods] + [c["metadata"]["name"] for c in claims]
        leftovers = planning.orphans(durable, present)
        if leftovers:
            await self._delete_orphans(body, leftovers, observed)

    async def _converge_member(
        self, body: context.Body, item: planning.Observed, spec: RepositorySpec
    ) -> None:
        """A member's claim, then its pod: made when missing, the pod replaced once ended."""
        namespace, repository = body["metadata"]["namespace"], body["metadata"]["name"]
        if item.node_lost:
            return  # replaced once that is safe (planning), never recreated in place
        if not item.claim:
            claim = manifests.volume_claim(repository, item.name, spec)
            await asyncio.to_thread(self.kube.create, namespace, claim)
        if item.pod and item.phase in ("Failed", "Succeeded") and not item.deleting:
            await asyncio.to_thread(self.kube.delete_pod, namespace, item.name, force=False)
        elif not item.pod:
            pod = manifests.replica_pod(body, item.name, spec, image=self.settings.image)
            if await asyncio.to_thread(self.kube.create, namespace, pod):
                self.metrics.pods_created.inc(())

    async def _delete_orphans(
        self, body: context.Body, leftovers: list[str], observed: Mapping[str, planning.Observed]
    ) -> None:
        """Pods and volumes of removed members, once a fresh read confirms they are removed
        (the watch cache may lag behind the status this operator just wrote)."""
        namespace, repository = body["metadata"]["namespace"], body["metadata"]["name"]
        fresh = await asyncio.to_thread(self.kube.read_repository, namespace, repository)
        if fresh is None:
            return
        durable = planning.Durable.from_status(fresh.get("status") or {})
        if not durable.members:
            return
        for name in planning.orphans(durable, leftovers):
            item = observed.get(name) or planning.Observed(name)
            if item.pod and (not item.deleting or item.node_lost):
                await asyncio.to_thread(self.kube.delete_pod, namespace, name, force=item.node_lost)
            if item.claim:
                await asyncio.to_thread(self.kube.delete_claim, namespace, name)
                log.info("deleted pod and volume of removed replica %s", name)


def _starting(
    durable: planning.Durable, observed: Mapping[str, planning.Observed], step: planning.Step
) -> bool:
    """A repository that never had a leader, none of whose replicas has answered yet: it is
    being created, and no leader is what that looks like (the status says so; a Warning for each
    new repository would only be noise, and a request to the API server)."""
    return (
        step.kind is planning.Kind.NO_LEADER
        and durable.term == 0
        and all(item.report is None for item in observed.values())
    )
