"""kopf wiring: watches, caches and one reconcile loop per GitRepository.

Pods, volume claims and nodes are kept in kopf indexes (watch caches), slimmed to what a pass
reads (``views``), so a pass reads no list from the API server; their events wake the owning
repository's loop, which otherwise runs every few seconds (every second while replicas run,
to notice a silent leader fast; ``polling`` keeps such a pass to one request).
Deleting a GitRepository stops its loop, then the delete handler applies ``reclaimPolicy``
behind kopf's finalizer.
"""

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from gitquorum.kube import api, backingup, names, reconciler, scheduling, views
from gitquorum.kube.spec import RepositorySpec

log = logging.getLogger(__name__)

Key = tuple[str, str]
FINALIZER = "gitquorum.io/finalizer"
SETTLE = 0.5
"""Seconds a pass woken by an event waits for the events that come with it."""


class Wakeups:
    """One event per repository; set when something it depends on changed."""

    def __init__(self) -> None:
        self.events: dict[Key, asyncio.Event] = {}

    def get(self, key: Key) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    def wake(self, key: Key) -> None:
        if key in self.events:
            self.events[key].set()

    def wake_all(self) -> None:
        for event in self.events.values():
            event.set()

    def forget(self, key: Key) -> None:
        self.events.pop(key, None)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A pass's own copy of kopf's live body, without ``metadata.managedFields`` (half of a
    GitRepository, never read). Copied as JSON data, not by ``copy.deepcopy``: a pass per
    repository every second made deepcopy the operator's largest cost (py-spy: 42% of the event
    loop at 1,000 repositories)."""
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {
        **_copied({k: v for k, v in body.items() if k != "metadata"}),
        "metadata": _copied(metadata),
    }


def _copied(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value  # str, int, float, bool, None: immutable


def _ready(node: Mapping[str, Any]) -> str:
    """Readiness and whether the node is cordoned: what replicas' fate depends on."""
    conditions = (node.get("status") or {}).get("conditions") or ()
    ready = next((c.get("status", "") for c in conditions if c.get("type") == "Ready"), "")
    cordoned = bool((node.get("spec") or {}).get("unschedulable"))
    return f"{ready}/{'cordoned' if cordoned else 'schedulable'}"


def register(
    registry: kopf.OperatorRegistry,
    work: reconciler.Reconciler,
    kube: api.Api,
    wakeups: Wakeups,
    namespaces: frozenset[str] = frozenset(),
) -> None:
    """Adds the operator's handlers to ``registry``.

    kopf always watches cluster-wide here; ``namespaces`` (empty: all) filters in the
    handlers. kopf's own namespace-restricted mode stops watching a namespace as soon as it
    is being deleted, before the delete handlers of what is in it have run, which would leave
    our finalizers behind and the namespace Terminating for ever.
    """
    replica = {names.REPOSITORY_LABEL: kopf.PRESENT}

    def ours(namespace: str | None, **_: Any) -> bool:
        return not namespaces or namespace in namespaces

    node_readiness: dict[str, str] = {}

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Every handled watch event would be logged at INFO: the decisions are what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # Our own Lease decides which instance acts; kopf's peering is not needed.
        settings.peering.standalone = True
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="gitquorum.io"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="gitquorum.io", key="last-handled-configuration"
        )
        settings.posting.level = logging.INFO
        # A watch that stalls without an error is only noticed at its timeout: keep it short
        # (the reconciler also reads doubtful pods again, see Settings.stale_after).
        settings.watching.server_timeout = 120
        settings.watching.client_timeout = 150
        # A worker idle for a second lets go of the last event it held. kopf's initial lists
        # stay whole: read in pages, a page processed more slowly than its continue token
        # lives (a restart over 1,000 repositories, traced) ended the process with
        # "continue parameter is too old".
        settings.queueing.idle_timeout = 1.0

    @kopf.index("pods", labels=replica, registry=registry, id="replica_pods", when=ours)
    def replica_pods(namespace: str, labels: Mapping[str, str], body: Any, **_: Any) -> Any:
        return {(namespace, labels[names.REPOSITORY_LABEL]): views.pod(body)}

    @kopf.index(
        "persistentvolumeclaims", labels=replica, registry=registry, id="replica_claims", when=ours
    )
    def replica_claims(namespace: str, labels: Mapping[str, str], body: Any, **_: Any) -> Any:
        return {(namespace, labels[names.REPOSITORY_LABEL]): views.claim(body)}

    @kopf.index("nodes", registry=registry, id="cluster_nodes")
    def cluster_nodes(name: str, body: Any, **_: Any) -> Any:
        return {name: views.node(body)}

    @kopf.on.event("pods", labels=replica, registry=registry, id="pod_changed", when=ours)
    def pod_changed(namespace: str, labels: Mapping[str, str], **_: Any) -> None:
        wakeups.wake((namespace, labels[names.REPOSITORY_LABEL]))

    @kopf.on.event(
        "persistentvolumeclaims", labels=replica, registry=registry, id="claim_changed", when=ours
    )
    def claim_changed(namespace: str, labels: Mapping[str, str], **_: Any) -> None:
        wakeups.wake((namespace, labels[names.REPOSITORY_LABEL]))

    @kopf.on.event("nodes", registry=registry, id="node_changed")
    def node_changed(name: str, body: Any, type: str | None, **_: Any) -> None:
        # Nodes report often; only a change of readiness or of cordoning (or a node going)
        # matters here.
        readiness = "" if type == "DELETED" else _ready(body)
        if node_readiness.get(name) != readiness:
            node_readiness[name] = readiness
            wakeups.wake_all()

    @kopf.daemon(
        names.GROUP,
        names.VERSION,
        names.PLURAL,
        registry=registry,
        id="repository",
        when=ours,
        cancellation_timeout=2.0,
    )
    async def repository(
        body: Any,
        namespace: str,
        name: str,
        replica_pods: kopf.Index[Key, Any],
        replica_claims: kopf.Index[Key, Any],
        cluster_nodes: kopf.Index[str, Any],
        **_: Any,
    ) -> None:
        key = (namespace, name)
        wake = wakeups.get(key)
        # The first pass of each repository waits its turn (an operator restarted over a
        # thousand repositories starts a thousand loops at once): a few in flight, each with
        # its copy of the object, rather than all of them.
        arriving: Any = work.arriving
        try:
            while True:
                wake.clear()
                nodes = {node: next(iter(store)) for node, store in cluster_nodes.items()}
                try:
                    async with arriving:
                        delay = await work.reconcile(
                            _plain(body),
                            list(replica_pods.get(key, [])),
                            list(replica_claims.get(key, [])),
                            nodes,
                        )
                except ApiException as error:
                    # The API server said no (namespace terminating, quota, RBAC): one line
                    # saying what, not a traceback, and the next pass tries again.
                    log.warning(
                        "%s/%s: pass stopped: API %s %s: %s",
                        namespace,
                        name,
                        error.status,
                        error.reason,
                        api.message(error),
                    )
                    work.metrics.errors.inc(())
                    delay = 5.0
                except Exception:
                    log.exception("%s/%s: reconcile pass failed; retrying", namespace, name)
                    work.metrics.errors.inc(())
                    delay = 5.0
                arriving = contextlib.nullcontext()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)
                    # Woken by a change: those that come with it (a pod's creation, binding
                    # and first status, its claim's binding) arrive as events of their own
                    # moments apart, and one pass sees them all.
                    await asyncio.sleep(SETTLE)
        finally:
            wakeups.forget(key)

    backups = backingup.Backups(kube, events=post_event, metrics=work.metrics)

    @kopf.on.resume(
        names.GROUP,
        names.VERSION,
        names.BACKUP_PLURAL,
        registry=registry,
        id="backup_resumed",
        when=ours,
    )
    @kopf.on.create(
        names.GROUP, names.VERSION, names.BACKUP_PLURAL, registry=registry, id="backup", when=ours
    )
    async def backup(body: Any, labels: Mapping[str, str], **_: Any) -> None:
        plain = _plain(body)
        try:
            await backups.run(plain)
        except backingup.Wait as wait:
            raise kopf.TemporaryError(str(wait), delay=wait.delay) from wait
        if labels.get(backingup.SCHEDULED_LABEL) == "true":
            try:
                await backups.prune(plain)
            except Exception as error:  # retention is tried again after the next backup
                log.warning("%s: retention not applied: %s", plain["spec"]["repository"], error)
                post_event(plain, "Warning", "RetentionFailed", str(error))

    @kopf.timer(
        names.GROUP,
        names.VERSION,
        names.PLURAL,
        registry=registry,
        id="backup_schedule",
        interval=30.0,
        when=lambda spec, namespace, **_: (
            bool((spec.get("backup") or {}).get("schedule")) and ours(namespace)
        ),
    )
    async def backup_schedule(body: Any, namespace: str, name: str, **_: Any) -> None:
        created = await scheduling.tick(kube, _plain(body))
        if created is not None:
            log.info("%s/%s: scheduled backup %s created", namespace, name, created)

    @kopf.on.delete(
        names.GROUP, names.VERSION, names.PLURAL, registry=registry, id="deleted", when=ours
    )
    async def deleted(body: Any, namespace: str, name: str, **_: Any) -> None:
        spec = RepositorySpec.from_body(body.get("spec") or {})
        await work.forget(body["metadata"]["uid"])
        claims = await asyncio.to_thread(kube.repository_claims, namespace, name)
        if spec.reclaim_policy == "Delete":
            for claim in claims:
                await asyncio.to_thread(kube.delete_claim, namespace, claim)
            kopf.info(body, reason="VolumesDeleted", message=f"deleted {len(claims)} volume(s)")
        else:
            kopf.info(
                body,
                reason="VolumesRetained",
                message=f"kept {len(claims)} volume(s) ({', '.join(claims) or 'none'}); "
                "a GitRepository of the same name adopts them",
            )
        # Pods, Service, Secrets, budget and policy carry owner references: the garbage
        # collector removes them.


def post_event(body: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
    """Events for decisions, through kopf's queue (never blocks a pass)."""
    kopf.event(dict(body), type=kind, reason=reason, message=message)
