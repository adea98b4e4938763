"""What every part of a pass shares: the settings, what a pass keeps between passes, and
how a pass reports (the status it writes, the events it records).

A pass (``reconciler``) is made of parts by role, each a class of its own module that works on
this context: observing the replicas (``observing``), ensuring the objects around them
(``ensuring``), planned change (``updating``).
"""

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from gitquorum.kube import api, names, planning, polling, rolling, sshaccess, status
from gitquorum.kube.metrics import OperatorMetrics
from gitquorum.kube.spec import RepositorySpec
from gitquorum.replication import peerclient

log = logging.getLogger("gitquorum.kube.reconciler")

Body = Mapping[str, Any]
EventSink = Callable[[Body, str, str, str], None]
"""(object, type Normal|Warning, reason, message)."""


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
    max_maintenance_per_node: int = 1
    """Replicas (of all repositories) that maintain or scrub on one node at a time, for
    repositories with a maintenance window."""
    follower_poll_interval: float = 10.0
    """Seconds a steady follower's last report may stand, confirmed by its leader's view of it,
    before it is asked again (``polling``): a steady pass asks the leader alone."""
    concurrent_arrivals: int = 16
    """Repositories making their first pass in this process at the same time."""
    concurrent_ensures: int = 8
    """Repositories whose surrounding objects are made or checked at the same time."""
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
class Memory:
    """What a pass keeps between passes: only caches of things stored elsewhere."""

    admin_token: str = ""
    peers: peerclient.Peers | None = None
    ensured: tuple[Any, ...] = ()
    ensured_at: float = float("-inf")
    """When (clock) the objects around the replicas were last checked."""
    credentials_secret: str = ""
    known_hosts: str = ""
    """The known_hosts line of the repository's SSH host key, for the status."""
    last_answer: dict[str, float] = dataclasses.field(default_factory=dict)
    asked: dict[str, polling.Asked] = dataclasses.field(default_factory=dict)
    """Each replica's report as it last gave it itself (``polling``)."""
    settled: bool = False
    """The previous pass decided nothing: steady followers need not be asked (``polling``)."""
    last_event: str = ""
    cordoned_since: dict[str, float] = dataclasses.field(default_factory=dict)
    """Since when (monotonic) each replica has waited for its cordoned node."""
    replacing: str | None = None
    """The replica a rolling update replaced last, until it is back in sync."""
    doubted_since: dict[str, float] = dataclasses.field(default_factory=dict)
    """Since when (clock) each pod has looked stale in the watch cache."""
    reread_at: dict[str, float] = dataclasses.field(default_factory=dict)
    reread_every: dict[str, float] = dataclasses.field(default_factory=dict)
    """Seconds between two reads of a doubtful pod: doubled each time the cache was right."""
    restoring: "asyncio.Future[None] | None" = None
    """The restore of ``spec.bootstrap.fromBackup`` the leader works on (``bootstrapping``)."""
    revision: tuple[tuple[Any, ...], str] | None = None
    """The revision replica pods are rendered at, and what it was rendered from (``reconciler``)."""
    written: "Written | None" = None
    """This operator's last status write, until the watch cache shows it."""

    def latest(self, body: Body) -> Body:
        """``body`` from the watch cache, or the object as this operator last wrote it when the
        cache still shows the version that write replaced: a pass from the older one would
        only be refused (409), and under load the cache lags by seconds."""
        written, self.written = self.written, None
        if written is None or body["metadata"].get("resourceVersion") != written.replaced:
            return body
        self.written = written
        metadata = {**body["metadata"], "resourceVersion": written.version}
        return {**body, "metadata": metadata, "status": written.status}


@dataclasses.dataclass(frozen=True)
class Written:
    replaced: str
    """The resourceVersion the write replaced."""
    version: str
    status: Mapping[str, Any]


class Context:
    """The collaborators of a pass and how it reports; the parts of a pass extend it."""

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
        self.updating = rolling.Slots(settings.max_concurrent_updates)
        """Repositories (uids) in a rolling update."""
        self.arriving = asyncio.Semaphore(settings.concurrent_arrivals)
        """Held by a repository's first pass in this process (``handlers``)."""
        self.ensuring = asyncio.Semaphore(settings.concurrent_ensures)
        """Held while a repository's Secrets, Service and policies are made or checked."""
        self.upkeep_permits: dict[str, dict[str, float]] = {}
        """Per node: the replicas (``uid/name``) holding a maintenance permit, until when."""

    async def _write(
        self,
        body: Body,
        durable: planning.Durable,
        observed: Mapping[str, planning.Observed],
        spec: RepositorySpec,
        memory: Memory,
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
        if memory.known_hosts:
            metadata = body["metadata"]
            wanted["ssh"] = {
                "url": sshaccess.clone_url(metadata["name"], metadata["namespace"]),
                "knownHosts": memory.known_hosts.strip(),
                "knownHostsSecret": names.known_hosts_secret(metadata["name"]),
            }
        if {**current, **wanted} == current:
            return body
        updated = {**body, "status": {**current, **wanted}}
        result = await asyncio.to_thread(self.kube.replace_status, updated)
        memory.written = Written(
            replaced=body["metadata"].get("resourceVersion", ""),
            version=result["metadata"]["resourceVersion"],
            status=result.get("status") or {},
        )
        return result

    def _event(
        self,
        body: Body,
        memory: Memory,
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
