"""One pass over one repository: observe, decide one durable step, act, report.

Every pass starts from the GitRepository, its pods, volumes and nodes (kopf's watch caches)
and the replicas' own reports, so a pass can repeat or follow any other, and an operator
restarted at any point carries on. The order inside a pass is what keeps data safe: a durable
decision is written to the status (optimistic concurrency) before replicas are told of it and
before any pod or volume it frees is deleted.
"""

import asyncio
import dataclasses
import datetime
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gitquorum.kube import api, manifests, names, planning, rolling, status, switching
from gitquorum.kube.metrics import OperatorMetrics
from gitquorum.kube.spec import WAIT_FOREVER, RepositorySpec
from gitquorum.replication import peerclient, reports
from gitquorum.server import auth, passwords

log = logging.getLogger(__name__)

Body = Mapping[str, Any]
EventSink = Callable[[Body, str, str, str], None]
"""(object, type Normal|Warning, reason, message)."""

SELECTED_NODE = "volume.kubernetes.io/selected-node"
GENERATED_USER = "gitquorum"


@dataclasses.dataclass(frozen=True)
class Settings:
    image: str
    node_loss_grace: float = 20.0
    """Seconds a node may be NotReady before its replicas count as lost."""
    leader_timeout: float = 3.0
    """Seconds without an answer from the leader before another one is chosen."""
    status_timeout: float = 1.0
    busy_interval: float = 1.0
    idle_interval: float = 10.0
    max_concurrent_updates: int = 2
    """Repositories whose replicas roll at the same time (an operator upgrade outdates all)."""
    stale_after: float = 15.0
    """Seconds a bound replica pod may show no address, or its replica stay silent, before the
    pod is read again from the API server: a watch that stalls silently must not leave the
    operator blind (the cache is then corrected for this pass, and the metric counts it)."""
    resync_interval: float = 60.0
    """Seconds between checks of the objects around the replicas (Secrets, Service, PDB,
    NetworkPolicy) while the spec does not change: a steady pass makes no API request."""


@dataclasses.dataclass(frozen=True)
class Notes:
    """What a pass reports besides the durable state and the replicas."""

    blocked: str | None
    """Why the last decision could not be carried out."""
    revision: str
    """The revision a replica pod is rendered at now."""
    update: rolling.Update = rolling.NO_UPDATE


@dataclasses.dataclass
class _Repository:
    """What a pass keeps between passes: only caches of things stored elsewhere."""

    admin_token: str = ""
    peers: peerclient.Peers | None = None
    ensured: tuple[Any, ...] = ()
    ensured_at: float = float("-inf")
    """When (clock) the objects around the replicas were last checked."""
    credentials_secret: str = ""
    last_answer: dict[str, float] = dataclasses.field(default_factory=dict)
    last_event: str = ""
    cordoned_since: dict[str, float] = dataclasses.field(default_factory=dict)
    """Since when (monotonic) each replica has waited for its cordoned node."""
    replacing: str | None = None
    """The replica a rolling update replaced last, until it is back in sync."""
    doubted_since: dict[str, float] = dataclasses.field(default_factory=dict)
    """Since when (clock) each pod has looked stale in the watch cache."""
    reread_at: dict[str, float] = dataclasses.field(default_factory=dict)


class Reconciler:
    def __init__(
        self,
        kube: api.Api,
        settings: Settings,
        *,
        events: EventSink,
        metrics: OperatorMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.started = clock()
        self.repositories: dict[str, _Repository] = {}
        self.updating = rolling.Slots(settings.max_concurrent_updates)
        """Repositories (uids) in a rolling update."""

    async def close(self) -> None:
        for repository in self.repositories.values():
            if repository.peers is not None:
                await repository.peers.close()

    async def forget(self, uid: str) -> None:
        """Drops what was kept for a deleted repository, closing its connections."""
        repository = self.repositories.pop(uid, None)
        self.updating.release(uid)
        if repository is not None and repository.peers is not None:
            await repository.peers.close()

    async def reconcile(
        self,
        body: Body,
        pods: Iterable[Body],
        claims: Iterable[Body],
        nodes: Mapping[str, Body],
    ) -> float:
        """One pass; returns the seconds until the next one is due (events may come sooner)."""
        started = self.clock()
        try:
            return await self._pass(body, list(pods), list(claims), nodes)
        except api.Conflict as conflict:
            log.info("%s; the next pass reads it again", conflict)
            self.metrics.conflicts.inc(())
            return 0.2
        finally:
            self.metrics.passes.observe((), self.clock() - started)

    async def _pass(
        self, body: Body, pods: list[Body], claims: list[Body], nodes: Mapping[str, Body]
    ) -> float:
        metadata = body["metadata"]
        memory = self.repositories.setdefault(metadata["uid"], _Repository())
        spec = RepositorySpec.from_body(body.get("spec") or {})
        revision = manifests.revision(body, spec, image=self.settings.image)
        problem = await self._ensure_objects(body, spec, memory)
        durable = planning.Durable.from_status(body.get("status") or {})
        if problem is not None:
            # Nothing can run without its credentials; say so where the user looks.
            self._event(body, memory, "Warning", "CredentialsInvalid", problem)
            await self._write(body, durable, {}, spec, memory, Notes(problem, revision))
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
        if durable.leader is not None and durable.term > 0:
            await self._configure(durable, observed, memory)
        self._report_divergence(body, durable, observed, memory)
        self._report_cordoned(body, observed, memory)
        await self._label_serving(body, observed, pods)
        await self._converge(body, durable, observed, pods, claims, spec)
        await self._write(body, durable, observed, spec, memory, Notes(blocked, revision, update))
        busy = any(item.ip for item in observed.values()) or (step is not None)
        return self.settings.busy_interval if busy else self.settings.idle_interval

    async def _decide_membership(
        self,
        body: Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        claims: list[Body],
        spec: RepositorySpec,
        memory: _Repository,
    ) -> tuple[Body, planning.Durable, planning.Step | None, str | None]:
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
            self._event(body, memory, "Warning", step.kind.value, step.message)
            return body, durable, step, step.message
        notes = Notes(None, manifests.revision(body, spec, image=self.settings.image))
        body = await self._write(body, step.durable, observed, spec, memory, notes)
        self.metrics.decisions.inc((step.kind.value,))
        self._event(body, memory, "Normal", step.kind.value, step.message, always=True)
        return body, step.durable, step, None

    # -- planned change: rolling update and switchover -------------------------------------------

    async def _update(
        self,
        body: Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        spec: RepositorySpec,
        memory: _Repository,
        revision: str,
    ) -> tuple[Body, planning.Durable, rolling.Update]:
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
        self, body: Body, durable: planning.Durable, observed: Mapping[str, planning.Observed]
    ) -> tuple[str, str] | None:
        """(target, why) when leadership must move now, not as part of an update."""
        leader = observed.get(durable.leader or "")
        if leader is not None and leader.deleting and leader.report is not None:
            target = rolling.switchover_target(durable, observed)
            return (target, f"leader pod {leader.name} is being deleted") if target else None
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
        body: Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        spec: RepositorySpec,
        memory: _Repository,
        target: str,
        why: str,
    ) -> tuple[Body, planning.Durable]:
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
        notes = Notes(None, manifests.revision(body, spec, image=self.settings.image))
        body = await self._write(body, outcome.durable, observed, spec, memory, notes)
        self.metrics.decisions.inc(("Switchover",))
        self._event(body, memory, "Normal", "Switchover", f"{outcome.message} ({why})", always=True)
        if asked:
            await self._answer_switchover(body, memory, None, "")
        return body, outcome.durable

    async def _answer_switchover(
        self, body: Body, memory: _Repository, kind: str | None, message: str
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
        body: Body,
        replica: str,
        memory: _Repository,
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

    def _report_divergence(
        self,
        body: Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        memory: _Repository,
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

    def _report_cordoned(
        self, body: Body, observed: Mapping[str, planning.Observed], memory: _Repository
    ) -> None:
        for item in observed.values():
            if item.cordoned is not None and not item.node_lost:
                self._event(body, memory, "Warning", "WaitingForNode", item.cordoned)

    # -- objects around the replicas ------------------------------------------------------------

    async def _ensure_objects(
        self, body: Body, spec: RepositorySpec, memory: _Repository
    ) -> str | None:
        """Secrets, Service, PDB, NetworkPolicy; returns a problem to report, if any.

        Checked when the spec's part they depend on changes and otherwise every
        ``resync_interval``: credentials rotated in their Secret reach the replicas then."""
        namespace = body["metadata"]["namespace"]
        repository = body["metadata"]["name"]
        fresh = self.clock() - memory.ensured_at < self.settings.resync_interval
        if fresh and memory.ensured[::2] == (spec.replicas, spec.credentials_secret):
            return None
        credentials = await self._credentials(body, spec)
        if isinstance(credentials, str):
            return credentials
        username, password = credentials
        fingerprint = hashlib.sha256(f"{username}:{password}".encode()).hexdigest()
        wanted = (spec.replicas, fingerprint, spec.credentials_secret)
        if memory.ensured == wanted and memory.admin_token:
            memory.ensured_at = self.clock()
            return None
        await self._ensure_auth(body, username, password, fingerprint)
        tokens = {"peer-token": secrets.token_hex(24), "admin-token": secrets.token_hex(24)}
        replication = manifests.secret(body, names.replication_secret(repository), tokens)
        await asyncio.to_thread(self.kube.create, namespace, replication)
        stored = await asyncio.to_thread(
            self.kube.read_secret, namespace, names.replication_secret(repository)
        )
        if not stored or "admin-token" not in stored:
            return f"Secret {names.replication_secret(repository)} has no admin-token"
        service = manifests.service(body)
        for manifest in (
            service,
            manifests.disruption_budget(body, spec.replicas),
            manifests.network_policy(body),
        ):
            await asyncio.to_thread(self.kube.create, namespace, manifest)
        await asyncio.to_thread(
            self.kube.patch_service_selector,
            namespace,
            service["metadata"]["name"],
            service["spec"]["selector"],
        )
        await asyncio.to_thread(
            self.kube.patch_budget,
            namespace,
            names.disruption_budget(repository),
            manifests.budget(spec.replicas),
        )
        if memory.admin_token != stored["admin-token"]:
            if memory.peers is not None:
                await memory.peers.close()
            memory.admin_token = stored["admin-token"]
            memory.peers = peerclient.Peers(
                token=memory.admin_token, timeout=self.settings.status_timeout
            )
        memory.credentials_secret = spec.credentials_secret or names.credentials_secret(repository)
        memory.ensured = wanted
        memory.ensured_at = self.clock()
        return None

    async def _credentials(self, body: Body, spec: RepositorySpec) -> tuple[str, str] | str:
        """(username, password) that may push, or why there are none."""
        namespace = body["metadata"]["namespace"]
        repository = body["metadata"]["name"]
        if spec.credentials_secret is None:
            generated = {"username": GENERATED_USER, "password": secrets.token_urlsafe(24)}
            manifest = manifests.secret(body, names.credentials_secret(repository), generated)
            await asyncio.to_thread(self.kube.create, namespace, manifest)
            name = names.credentials_secret(repository)
        else:
            name = spec.credentials_secret
        data = await asyncio.to_thread(self.kube.read_secret, namespace, name)
        if data is None:
            return f"credentials Secret {name} does not exist"
        if not data.get("username") or not data.get("password"):
            return f"credentials Secret {name} needs the keys username and password"
        try:
            auth.check_name(data["username"])
        except Exception as error:
            return f"credentials Secret {name}: {error}"
        return data["username"], data["password"]

    async def _ensure_auth(
        self, body: Body, username: str, password: str, fingerprint: str
    ) -> None:
        """The hashed credentials the replicas check; rewritten when the credentials change."""
        namespace = body["metadata"]["namespace"]
        name = names.auth_secret(body["metadata"]["name"])
        annotations = await asyncio.to_thread(self.kube.secret_annotations, namespace, name)
        if annotations is not None and annotations.get(names.AUTH_FINGERPRINT) == fingerprint:
            return
        hashed = await asyncio.to_thread(passwords.hash_token, password.encode())
        manifest = manifests.secret(
            body,
            name,
            {"users": auth.render(username, hashed) + "\n"},
            annotations={names.AUTH_FINGERPRINT: fingerprint},
        )
        if annotations is None:
            await asyncio.to_thread(self.kube.create, namespace, manifest)
        else:
            await asyncio.to_thread(self.kube.patch_secret, namespace, manifest)

    # -- observing ------------------------------------------------------------------------------

    async def _observe(
        self,
        durable: planning.Durable,
        pods: list[Body],
        claims: list[Body],
        nodes: Mapping[str, Body],
        memory: _Repository,
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
        answers = await asyncio.gather(*(self._report(item, memory) for item in observed.values()))
        now = self.clock()
        for item, answer in zip(list(observed.values()), answers, strict=True):
            if answer is not None:
                memory.last_answer[item.name] = now
            silent = now - memory.last_answer.get(item.name, self.started)
            observed[item.name] = dataclasses.replace(item, report=answer, silent=silent)
        return observed

    async def _reread_doubtful(
        self, by_pod: Mapping[str, Body], memory: _Repository
    ) -> dict[str, Body]:
        """Pods whose cached view has looked wrong for ``stale_after``, read again.

        A bound pod without an address, or one whose replica does not answer at the cached
        address, is normal for a few seconds; for longer, the watch may have stalled (a kopf
        watch that stops delivering events is only restarted at its timeout)."""
        now = self.clock()
        fresh: dict[str, Body] = {}
        for name, pod in by_pod.items():
            if not self._doubtful(pod, memory, now):
                memory.doubted_since.pop(name, None)
                continue
            since = memory.doubted_since.setdefault(name, now)
            due = now - memory.reread_at.get(name, float("-inf")) >= self.settings.stale_after
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
            if newer:
                log.warning(
                    "%s/%s: the watch cache held an old version of pod %s; using the API server's",
                    pod["metadata"]["namespace"],
                    name,
                    name,
                )
                fresh[name] = current
        return fresh

    def _doubtful(self, pod: Body, memory: _Repository, now: float) -> bool:
        metadata, spec = pod["metadata"], pod.get("spec") or {}
        if metadata.get("deletionTimestamp") or not spec.get("nodeName"):
            return False
        if not (pod.get("status") or {}).get("podIP"):
            return True
        silent = now - memory.last_answer.get(metadata["name"], self.started)
        return silent >= self.settings.stale_after

    def _object_view(
        self, name: str, pod: Body | None, claim: Body | None, nodes: Mapping[str, Body]
    ) -> planning.Observed:
        node = None
        if pod is not None:
            node = (pod.get("spec") or {}).get("nodeName")
        if node is None and claim is not None:
            node = ((claim["metadata"].get("annotations")) or {}).get(SELECTED_NODE)
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
        nodes: Mapping[str, Body],
        memory: _Repository,
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

    def _node_lost(self, node: Body | None) -> bool:
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
        self, item: planning.Observed, memory: _Repository
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

    # -- acting ---------------------------------------------------------------------------------

    async def _configure(
        self,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        memory: _Repository,
    ) -> None:
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

    async def _label_serving(
        self, body: Body, observed: Mapping[str, planning.Observed], pods: list[Body]
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
        body: Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        pods: list[Body],
        claims: list[Body],
        spec: RepositorySpec,
    ) -> None:
        namespace, repository = body["metadata"]["namespace"], body["metadata"]["name"]
        for member in durable.members:
            item = observed.get(member.name) or planning.Observed(member.name)
            if item.node_lost:
                continue  # replaced once that is safe (planning), never recreated in place
            if not item.claim:
                claim = manifests.volume_claim(repository, member.name, spec)
                await asyncio.to_thread(self.kube.create, namespace, claim)
            if item.pod and item.phase in ("Failed", "Succeeded") and not item.deleting:
                await asyncio.to_thread(self.kube.delete_pod, namespace, member.name, force=False)
            elif not item.pod:
                pod = manifests.replica_pod(body, member.name, spec, image=self.settings.image)
                if await asyncio.to_thread(self.kube.create, namespace, pod):
                    self.metrics.pods_created.inc(())
        present = [p["metadata"]["name"] for p in pods] + [c["metadata"]["name"] for c in claims]
        leftovers = planning.orphans(durable, present)
        if leftovers:
            await self._delete_orphans(body, leftovers, observed)

    async def _delete_orphans(
        self, body: Body, leftovers: list[str], observed: Mapping[str, planning.Observed]
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

    async def _write(
        self,
        body: Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        spec: RepositorySpec,
        memory: _Repository,
        notes: Notes,
    ) -> Body:
        current = body.get("status") or {}
        wanted = status.derive(
            body,
            durable,
            observed,
            replicas=spec.replicas,
            credentials_secret=memory.credentials_secret,
            blocked=notes.blocked,
            revision=notes.revision,
            update=notes.update,
        )
        if {**current, **wanted} == current:
            return body
        updated = {**body, "status": {**current, **wanted}}
        return await asyncio.to_thread(self.kube.replace_status, updated)

    def _event(
        self,
        body: Body,
        memory: _Repository,
        kind: str,
        reason: str,
        message: str,
        *,
        always: bool = False,
    ) -> None:
        """Decisions are always recorded; a condition that holds is recorded once."""
        if not always and memory.last_event == message:
            return
        memory.last_event = message
        log.info(
            "%s/%s: %s: %s",
            body["metadata"]["namespace"],
            body["metadata"]["name"],
            reason,
            message,
        )
        self.events(body, kind, reason, message)


def _timestamp(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
