"""Observing one repository's replicas: their pods, volumes and nodes from kopf's watch
caches, and each replica's own report, into one ``planning.Observed`` per replica.

A replica whose volume's node is cordoned waits ``cordonedNodeGraceSeconds``, then counts as
lost. A pod whose cached view has looked wrong for ``Settings.stale_after`` is read again from
the API server: a watch that stalls silently must not leave the operator blind.
"""

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

from gitquorum.kube import context, names, planning, polling, views
from gitquorum.kube.spec import WAIT_FOREVER, RepositorySpec
from gitquorum.replication import peerclient, reports

log = logging.getLogger("gitquorum.kube.reconciler")

REREAD_MAX = 120.0
"""Longest wait, in seconds, between two reads of a pod that stays doubtful while its
cache is right: kopf restarts a stalled watch at its timeout (2 minutes) anyway."""


class Observing(context.Context):
    """What a pass sees of the replicas."""

    async def _observe(
        self,
        durable: planning.Durable,
        pods: list[context.Body],
        claims: list[context.Body],
        nodes: Mapping[str, context.Body],
        memory: context.Memory,
        spec: RepositorySpec,
    ) -> dict[str, planning.Observed]:
        by_pod = {pod["metadata"]["name"]: pod for pod in pods}
        by_pod.update(await self._reread_doubtful(by_pod, memory))
        by_claim = {claim["metadata"]["name"]: claim for claim in claims}
        everything = sorted(durable.member_names | set(by_pod) | set(by_claim))
        observed = {
            name: self._cordon_view(
                self._object_view(name, by_pod.get(name), by_claim.get(name), nodes),
                nodes,
                memory,
                spec,
            )
            for name in everything
        }
        answers = await self._gather_reports(durable, list(observed.values()), memory)
        now = self.clock()
        for item in list(observed.values()):
            silent = now - memory.last_answer.get(item.name, self.started)
            observed[item.name] = dataclasses.replace(
                item, report=answers.get(item.name), silent=silent
            )
        return observed

    async def _gather_reports(
        self, durable: planning.Durable, items: list[planning.Observed], memory: context.Memory
    ) -> dict[str, reports.ReplicaStatus]:
        """Every replica's report: asked of the leader and of any follower its leader cannot
        vouch for (``polling``), in at most two rounds."""
        for gone in set(memory.asked) - {item.name for item in items}:
            del memory.asked[gone]
        maybe_vouched = [
            item
            for item in items
            if memory.settled and item.name != durable.leader and item.name in memory.asked
        ]
        first = [item for item in items if item not in maybe_vouched]
        answers = await self._ask(first, memory)
        leader = answers.get(durable.leader or "")
        now = self.clock()
        second = []
        for item in maybe_vouched:
            report = polling.vouched(
                memory.asked.get(item.name),
                item=item,
                leader=leader,
                now=now,
                interval=self.settings.follower_poll_interval,
            )
            if report is None:
                second.append(item)
                continue
            answers[item.name] = report
            memory.last_answer[item.name] = now
            self.metrics.replica_reports.inc(("vouched",))
        answers.update(await self._ask(second, memory))
        return answers

    async def _ask(
        self, items: list[planning.Observed], memory: context.Memory
    ) -> dict[str, reports.ReplicaStatus]:
        answers = await asyncio.gather(*(self._report(item, memory) for item in items))
        now = self.clock()
        heard: dict[str, reports.ReplicaStatus] = {}
        for item, answer in zip(items, answers, strict=True):
            if answer is None or item.ip is None:
                memory.asked.pop(item.name, None)
                continue
            heard[item.name] = answer
            memory.last_answer[item.name] = now
            memory.asked[item.name] = polling.Asked(answer, item.ip, now)
            self.metrics.replica_reports.inc(("asked",))
        return heard

    async def _reread_doubtful(
        self, by_pod: Mapping[str, context.Body], memory: context.Memory
    ) -> dict[str, context.Body]:
        """Pods whose cached view has looked wrong for ``stale_after``, read again.

        A bound pod without an address, or one whose replica does not answer at the cached
        address, is normal for a few seconds; for longer, the watch may have stalled (a kopf
        watch that stops delivering events is only restarted at its timeout). A pod that
        stays so with the cache right (pulling its image, on a node that never runs it) is
        read again less and less often, up to ``REREAD_MAX``: after a burst of 300
        repositories on hollow nodes, reads every ``stale_after`` made 3,375 extra requests in
        four minutes."""
        now = self.clock()
        fresh: dict[str, context.Body] = {}
        for name, pod in by_pod.items():
            if not self._doubtful(pod, memory, now):
                memory.doubted_since.pop(name, None)
                memory.reread_every.pop(name, None)
                continue
            since = memory.doubted_since.setdefault(name, now)
            every = memory.reread_every.get(name, self.settings.stale_after)
            due = now - memory.reread_at.get(name, float("-inf")) >= every
            if now - since < self.settings.stale_after or not due:
                continue
            memory.reread_at[name] = now
            current = await asyncio.to_thread(
                self.kube.read_pod, pod["metadata"]["namespace"], name
            )
            if current is None:
                continue
            newer = current["metadata"].get("resourceVersion") != pod["metadata"].get(
                "resourceVersion"
            )
            self.metrics.stale_cache.inc((str(newer).lower(),))
            memory.reread_every[name] = (
                self.settings.stale_after if newer else min(2 * every, REREAD_MAX)
            )
            if newer:
                log.warning(
                    "%s/%s: the watch cache held an old version of pod %s; using the API server's",
                    pod["metadata"]["namespace"],
                    name,
                    name,
                )
                fresh[name] = current
        return fresh

    def _doubtful(self, pod: context.Body, memory: context.Memory, now: float) -> bool:
        metadata, spec = pod["metadata"], pod.get("spec") or {}
        if metadata.get("deletionTimestamp") or not spec.get("nodeName"):
            return False
        if not (pod.get("status") or {}).get("podIP"):
            return True
        silent = now - memory.last_answer.get(metadata["name"], self.started)
        return silent >= self.settings.stale_after

    def _object_view(
        self,
        name: str,
        pod: context.Body | None,
        claim: context.Body | None,
        nodes: Mapping[str, context.Body],
    ) -> planning.Observed:
        node = None
        if pod is not None:
            node = (pod.get("spec") or {}).get("nodeName")
        if node is None and claim is not None:
            node = ((claim["metadata"].get("annotations")) or {}).get(views.SELECTED_NODE)
        pod_status = (pod or {}).get("status") or {}
        conditions = {c.get("type"): c for c in pod_status.get("conditions") or ()}
        scheduled = conditions.get("PodScheduled") or {}
        unschedulable = (
            scheduled.get("message") or "unschedulable"
            if scheduled.get("reason") == "Unschedulable"
            else None
        )
        annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
        return planning.Observed(
            name=name,
            revision=str(annotations.get(names.REVISION, "")),
            pod=pod is not None,
            deleting=bool(pod and pod["metadata"].get("deletionTimestamp")),
            phase=pod_status.get("phase"),
            ip=pod_status.get("podIP") if pod_status.get("phase") == "Running" else None,
            node=node,
            ready=(conditions.get("Ready") or {}).get("status") == "True",
            unschedulable=unschedulable,
            claim=claim is not None,
            node_lost=node is not None and self._node_lost(nodes.get(node)),
        )

    def _cordon_view(
        self,
        item: planning.Observed,
        nodes: Mapping[str, context.Body],
        memory: context.Memory,
        spec: RepositorySpec,
    ) -> planning.Observed:
        """A replica that cannot run because its volume's node is cordoned (a drain evicted
        it) waits ``cordonedNodeGraceSeconds``, then counts as lost: rebuilt elsewhere."""
        node = nodes.get(item.node or "")
        waiting = (
            node is not None
            and not item.node_lost
            and bool((node.get("spec") or {}).get("unschedulable"))
            and (not item.pod or item.phase in (None, "Pending") or item.unschedulable is not None)
        )
        if not waiting:
            memory.cordoned_since.pop(item.name, None)
            return item
        since = memory.cordoned_since.setdefault(item.name, time.time())
        grace = spec.cordoned_node_grace
        if grace == WAIT_FOREVER:
            why = (
                f"replica {item.name} waits for cordoned node {item.node} (its volume is "
                "there); cordonedNodeGraceSeconds is -1: it waits until the node is uncordoned"
            )
            return dataclasses.replace(item, cordoned=why)
        deadline = datetime.datetime.fromtimestamp(since + grace, datetime.UTC)
        if time.time() - since >= grace:
            why = f"replica {item.name} waited {grace} s for cordoned node {item.node}"
            return dataclasses.replace(item, cordoned=why, node_lost=True)
        why = (
            f"replica {item.name} waits for cordoned node {item.node} (its volume is there); "
            f"unless the node is uncordoned it is rebuilt on another node from "
            f"{deadline:%Y-%m-%dT%H:%M:%SZ} (cordonedNodeGraceSeconds {grace})"
        )
        return dataclasses.replace(item, cordoned=why)

    def _node_lost(self, node: context.Body | None) -> bool:
        if node is None:
            return True
        ready = next(
            (
                c
                for c in (node.get("status") or {}).get("conditions") or ()
                if c.get("type") == "Ready"
            ),
            None,
        )
        if ready is None or ready.get("status") == "True":
            return False
        since = _timestamp(ready.get("lastTransitionTime"))
        if since is None:
            return True
        age = (datetime.datetime.now(datetime.UTC) - since).total_seconds()
        return age >= self.settings.node_loss_grace

    async def _report(
        self, item: planning.Observed, memory: context.Memory
    ) -> reports.ReplicaStatus | None:
        if item.ip is None or item.node_lost or memory.peers is None:
            return None
        try:
            answer = await memory.peers.call(
                f"http://{item.ip}:{names.PEER_PORT}",
                "/admin/status",
                timeout=self.settings.status_timeout,
            )
        except peerclient.PeerError as error:
            log.debug("replica %s did not answer: %s", item.name, error)
            return None
        try:
            return reports.ReplicaStatus.from_json(answer)
        except ValueError as error:
            # Decisions rest on these fields: an answer without them counts as none.
            log.warning("replica %s answered a malformed status: %s", item.name, error)
            return None


def _timestamp(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
