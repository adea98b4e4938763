"""Only one operator instance acts: it holds a coordination.k8s.io Lease, renewing it.

The chart may run two operator pods for a fast handover; the second waits. An instance that
cannot renew its lease in time stops acting before another may take it over (the lease runs
``duration`` seconds; we give up after ``duration - margin`` without a renewal), and exits so
that it restarts as a waiting instance. Taking a lease is a write with the resourceVersion
read, so two instances never both win.
"""

import asyncio
import concurrent.futures
import datetime
import logging
import threading
import time

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


class Lease:
    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
        renew_every: float = 3.0,
    ) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew_every = duration, renew_every
        self.held = False
        # Its own threads: in the pool the passes share, a renewal waited behind a restart's
        # burst of calls. Three: one times the renewals (``keep``), and an attempt stuck on a
        # dead connection leaves another for the next.
        self.threads = concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="lease")

    def try_take(self) -> bool:
        """Takes or renews the lease; False when another live holder has it."""
        now = datetime.datetime.now(datetime.UTC)
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(now, transitions=0, acquired=now),
            )
            try:
                self.api.create_namespaced_lease(self.namespace, body)
            except ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        mine = spec.holder_identity == self.identity
        if not mine and spec.holder_identity and not self._expired(spec, now):
            return False
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        acquired = spec.acquire_time if mine and spec.acquire_time else now
        lease.spec = self._spec(now, transitions=transitions, acquired=acquired)
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def release(self) -> None:
        """Hands the lease over at once on a clean stop, instead of letting it run out."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is not None and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            log.warning("lease %s not released: %s", self.name, error.reason)
        self.held = False

    async def acquire(self) -> None:
        """Waits until this instance holds the lease."""
        waiting_logged = False
        while not await self._attempting(self.duration):
            if not waiting_logged:
                log.info(
                    "waiting for lease %s/%s held by another instance", self.namespace, self.name
                )
                waiting_logged = True
            await asyncio.sleep(self.renew_every)
        self.held = True
        log.info("holding lease %s/%s as %s", self.namespace, self.name, self.identity)

    async def keep(self) -> None:
        """Renews the lease; returns when it could not be renewed in time (lost).

        The renewals are timed and made on the lease's own threads, not by the event loop:
        kopf decodes each initial list in the event loop, and a restart over 1,000 repositories
        (with memory tracing) held it for over 10 s at a time, so a healthy process lost its
        lease at every start. A loop wedged for good is the liveness probe's to catch: it is
        answered by that loop."""
        stopping = threading.Event()
        try:
            await asyncio.wrap_future(self.threads.submit(self._keep, stopping))
        finally:
            stopping.set()

    def _keep(self, stopping: threading.Event) -> None:
        last = time.monotonic()
        margin = min(5.0, self.duration / 3)
        while not stopping.wait(self.renew_every):
            # An attempt may take no longer than the lease has left: one that hangs must not
            # keep this instance acting after another may have taken over.
            since = time.monotonic() - last
            left = self.duration - margin - since
            if left > 0 and self._attempted(left):
                last = time.monotonic()
                continue
            if time.monotonic() - last > self.duration - margin:
                self.held = False
                log.error(
                    "lease %s/%s lost (%.1f s since the last renewal): stopping",
                    self.namespace,
                    self.name,
                    time.monotonic() - last,
                )
                return

    def _attempted(self, within: float) -> bool:
        """An attempt on another of the lease's threads; False when it failed or took over
        ``within`` seconds (it may go on in its thread: a call stuck on a dead connection)."""
        attempt = self.threads.submit(self._attempt)
        try:
            return attempt.result(timeout=within)
        except concurrent.futures.TimeoutError:
            log.warning("lease %s: no answer within %.1f s", self.name, within)
            return False

    async def _attempting(self, within: float) -> bool:
        """:meth:`_attempted`, awaited from the event loop (taking the lease)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.threads, self._attempted, within)

    def _attempt(self) -> bool:
        try:
            return self.try_take()
        except Exception as error:  # the API server unreachable is a failed attempt
            log.warning("lease %s: %s", self.name, error)
            return False

    def _spec(
        self, now: datetime.datetime, *, transitions: int, acquired: datetime.datetime
    ) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.duration),
            acquire_time=acquired,
            renew_time=now,
            lease_transitions=transitions,
        )

    @staticmethod
    def _expired(spec: client.V1LeaseSpec, now: datetime.datetime) -> bool:
        if spec.renew_time is None:
            return True
        renewed = spec.renew_time
        if renewed.tzinfo is None:
            renewed = renewed.replace(tzinfo=datetime.UTC)
        return (now - renewed).total_seconds() > (spec.lease_duration_seconds or 15)
