"""Scale: hundreds of GitRepositories on hollow nodes, against the same objects made directly.

Three hollow nodes (pods bound there never run: see gitquorum_testbed.agent) join, labelled
``gitquorum.io/pool=bench-hollow``; 8 threads create the GitRepositories (3 replicas each,
placed on that pool, tolerating the hollow taint) as fast as the API takes them. Measured: the
time until every pod and claim exists (target 120 s for 300 repositories), then until every
pod is scheduled and claim bound (no target: that is the scheduler's and the volume binder's
work), and the operator's resident memory from its ``/metrics`` when everything existed, at the
end, and at its peak (target 200 MB). Reference in the same run: the same pods and claims
(copied from what the operator made, label keys renamed so that its watches ignore them)
created directly by 8 threads in another namespace, until all exist.

Pods and claims are followed by watch (gitquorum_testbed.mirrors): polling lists of 900 pods
would load the API server as much as what is measured.
"""

import contextlib
import dataclasses
import functools
import json
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

from kubernetes.client import exceptions

from bench import kube
from gitquorum.kube import api as operator_api
from gitquorum_testbed import agent, cluster, mirrors

TARGET_300 = 120.0
"""Seconds until the pods and claims of 300 repositories exist; scaled for other counts."""
RSS_TARGET_MB = 200.0
HOLLOW_NODES = 3
POOL_LABEL = "gitquorum.io/pool"
POOL = "bench-hollow"
THREADS = 8
SCALE_TIMEOUT = 900.0
SETTLE_TIMEOUT = 300.0
"""Seconds to wait, after everything exists, for every pod to be scheduled and claim bound."""
Body = dict[str, Any]


@dataclasses.dataclass
class Scale:
    repositories: int
    created: float
    """Seconds until the API had taken every GitRepository."""
    exist: float
    """Seconds until every pod and every claim existed."""
    settled: float | None
    """Seconds until every pod was scheduled and every claim bound (None: not within limit)."""
    rss_before_mb: float
    """The operator's resident memory before the first create."""
    rss_mb: float
    """The operator's resident memory when everything existed."""
    rss_settled_mb: float
    peak_mb: float
    """process_max_resident_memory_bytes at the end (the operator's lifetime peak)."""
    cpu_seconds: float
    """Operator CPU time spent from the first create to the end."""
    passes: float
    pass_seconds: float
    reference: float
    """Seconds until the same pods and claims, created directly, all existed."""


def measure(
    bed: cluster.Testbed,
    api: kube.Kube,
    count: int,
    while_present: Callable[[str], None] | None = None,
) -> Scale:
    """``while_present(namespace)``, if given, runs once the operator's repositories all have
    their pods and claims, before they are deleted."""
    print(f"   scale: {count} GitRepositories on {HOLLOW_NODES} hollow nodes", flush=True)
    # Hollow nodes of a run that was interrupted would take part of the pods.
    left = api.core.list_node(label_selector=f"{POOL_LABEL}={POOL}").items
    remove_hollow(bed, api, [n.metadata.name for n in left if bed.is_hollow(n.metadata.name)])
    hollow = [bed.node_add(None, hollow=True).name for _ in range(HOLLOW_NODES)]
    for name in hollow:
        api.core.patch_node(name, {"metadata": {"labels": {POOL_LABEL: POOL}}})
    print(f"     hollow nodes: {', '.join(hollow)}", flush=True)
    try:
        with api.namespace("scale") as namespace:
            ours, objects = _operator_creates(api, namespace, count)
            if while_present is not None:
                while_present(namespace)
        with api.namespace("direct") as namespace:
            reference = _direct_creates(api, namespace, objects)
    finally:
        remove_hollow(bed, api, hollow)
    return dataclasses.replace(ours, reference=reference)


def create_hollow(api: kube.Kube, namespace: str, count: int, prefix: str = "r") -> int:
    """``count`` 3-replica GitRepositories placed on the hollow pool, by THREADS threads;
    returns how many the API took."""
    spec = {
        "placement": {
            "nodeSelector": {POOL_LABEL: POOL},
            "tolerations": [
                {"key": agent.HOLLOW_KEY, "operator": "Exists", "effect": "NoSchedule"}
            ],
        }
    }
    with futures.ThreadPoolExecutor(THREADS) as pool:
        created = pool.map(
            lambda i: api.custom.create_namespaced_custom_object(
                kube.GROUP,
                kube.VERSION,
                namespace,
                kube.PLURAL,
                kube.repository_manifest(f"{prefix}{i:04d}", spec),
            ),
            range(count),
        )
        return len(list(created))


def _operator_creates(api: kube.Kube, namespace: str, count: int) -> tuple[Scale, list[Body]]:
    before = api.operator_metrics()
    sampler = RssSampler(api)
    with Watched(api, namespace) as watched:
        sampler.start()
        started = time.monotonic()
        created = create_hollow(api, namespace, count)
        took = time.monotonic() - started
        print(f"     {created} GitRepositories taken by the API in {took:.1f} s", flush=True)
        exist = watched.wait_all(3 * count, started, sampler)
        at_exist = api.operator_metrics()
        settled = watched.wait_settled(3 * count, started, sampler)
        at_end = api.operator_metrics()
        objects = [*watched.claims.items(), *watched.pods.items()]
    sampler.stop()

    def delta(metric: str) -> float:
        return at_end.get(metric, 0.0) - before.get(metric, 0.0)

    scale = Scale(
        repositories=count,
        created=took,
        exist=exist,
        settled=settled,
        rss_before_mb=before["process_resident_memory_bytes"] / 1e6,
        rss_mb=at_exist["process_resident_memory_bytes"] / 1e6,
        rss_settled_mb=at_end["process_resident_memory_bytes"] / 1e6,
        peak_mb=max(at_end["process_max_resident_memory_bytes"] / 1e6, sampler.peak_mb),
        cpu_seconds=delta("process_cpu_seconds_total"),
        passes=delta("gitquorum_operator_reconcile_seconds_count"),
        pass_seconds=delta("gitquorum_operator_reconcile_seconds_sum"),
        reference=0.0,
    )
    return scale, [_copy(o) for o in objects]


def _direct_creates(api: kube.Kube, namespace: str, objects: list[Body]) -> float:
    claims = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    pods = [o for o in objects if o["kind"] == "Pod"]
    print(f"     reference: {len(pods)} pods and {len(claims)} claims created directly", flush=True)

    def create(body: Body) -> None:
        # Created as the operator creates (``gitquorum.kube.api``): answer not decoded, its
        # connection given back to the pool.
        if body["kind"] == "Pod":
            answer = api.core.create_namespaced_pod(namespace, body, _preload_content=False)
        else:
            answer = api.core.create_namespaced_persistent_volume_claim(
                namespace, body, _preload_content=False
            )
        operator_api.discard(answer)

    # Claims first, then pods, repository by repository: the order the operator creates them.
    ordered = sorted(objects, key=lambda o: (o["metadata"]["name"], o["kind"] == "Pod"))
    with Watched(api, namespace) as watched:
        started = time.monotonic()
        with futures.ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(create, ordered))
        took = watched.wait_all(len(pods), started, None)
    return took


def _copy(body: Body) -> Body:
    """A pod or claim as the operator created it, for another namespace and not the operator's.

    The repository and replica label keys are renamed (in selectors too) so that the
    operator's watches ignore the copies; everything the API server or the scheduler added
    (status, node name, bound volume, owner) is dropped.
    """
    text = json.dumps(body)
    for key in ("gitquorum.io/repository", "gitquorum.io/replica"):
        text = text.replace(f'"{key}"', f'"bench.{key}"')
    source = json.loads(text)
    metadata = {
        key: source["metadata"][key]
        for key in ("name", "labels", "annotations")
        if key in source["metadata"]
    }
    if "containers" not in source["spec"]:
        metadata.pop("annotations", None)  # the scheduler's selected node, the binder's marks
    spec = dict(source["spec"])
    for key in ("nodeName", "volumeName", "priority"):
        spec.pop(key, None)
    kind = "Pod" if "containers" in spec else "PersistentVolumeClaim"
    return {"apiVersion": "v1", "kind": kind, "metadata": metadata, "spec": spec}


class Watched:
    """The pods and claims of a namespace, followed by watch (listing 900 pods costs)."""

    def __init__(self, api: kube.Kube, namespace: str) -> None:
        self.pods = mirrors.Mirror(
            functools.partial(api.core.list_namespaced_pod, namespace),
            what="pods",
            watch_seconds=5,
        )
        self.claims = mirrors.Mirror(
            functools.partial(api.core.list_namespaced_persistent_volume_claim, namespace),
            what="claims",
            watch_seconds=5,
        )

    def __enter__(self) -> "Watched":
        for mirror in (self.pods, self.claims):
            mirror.start()
            mirror.synced.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        stoppers = [threading.Thread(target=m.stop) for m in (self.pods, self.claims)]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()

    def wait_all(self, expected: int, started: float, sampler: "RssSampler | None") -> float:
        """Seconds from ``started`` until ``expected`` pods and as many claims exist."""
        return self._until(
            f"{expected} pods and {expected} claims",
            lambda: len(self.pods.items()) >= expected and len(self.claims.items()) >= expected,
            started,
            sampler,
            SCALE_TIMEOUT,
        )

    def wait_settled(self, expected: int, started: float, sampler: "RssSampler") -> float | None:
        def settled() -> bool:
            scheduled = sum(1 for p in self.pods.items() if p["spec"].get("nodeName"))
            bound = sum(1 for c in self.claims.items() if c["status"].get("phase") == "Bound")
            return scheduled >= expected and bound >= expected

        try:
            return self._until(
                "every pod scheduled and claim bound", settled, started, sampler, SETTLE_TIMEOUT
            )
        except RuntimeError as error:
            print(f"     {error}", flush=True)
            return None

    def _until(
        self,
        what: str,
        done: Callable[[], bool],
        started: float,
        sampler: "RssSampler | None",
        timeout: float,
    ) -> float:
        deadline = time.monotonic() + timeout
        shown = time.monotonic()
        while not done():
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"no {what} within {timeout:.0f} s: {self.progress()}")
            if now - shown >= 10:
                rss = f", operator RSS {sampler.last_mb:.0f} MB" if sampler else ""
                print(f"     +{now - started:5.0f} s  {self.progress()}{rss}", flush=True)
                shown = now
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        print(f"     +{elapsed:5.1f} s  {what}: {self.progress()}", flush=True)
        return elapsed

    def progress(self) -> str:
        pods, claims = self.pods.items(), self.claims.items()
        scheduled = sum(1 for p in pods if p["spec"].get("nodeName"))
        bound = sum(1 for c in claims if c["status"].get("phase") == "Bound")
        return f"pods {len(pods)} ({scheduled} scheduled), claims {len(claims)} ({bound} bound)"


class RssSampler:
    """The operator's resident memory, read from its /metrics every second."""

    def __init__(self, api: kube.Kube) -> None:
        self.api = api
        self.last_mb = self.peak_mb = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()

    def _loop(self) -> None:
        while not self.stopping.wait(1.0):
            # A slow scrape under load keeps the last figure.
            with contextlib.suppress(OSError, KeyError):
                self.last_mb = self.api.operator_metrics()["process_resident_memory_bytes"] / 1e6
                self.peak_mb = max(self.peak_mb, self.last_mb)


def remove_hollow(bed: cluster.Testbed, api: kube.Kube, names: list[str]) -> None:
    """Removes hollow nodes once their released volumes are gone (no agent would delete them)."""
    if not names:
        return

    def leftovers() -> list[str]:
        prefixes = tuple(str(bed.layout.node_dir(n)) for n in names)
        return [
            v.metadata.name
            for v in api.core.list_persistent_volume().items
            if v.spec.local and v.spec.local.path.startswith(prefixes)
        ]

    try:
        kube.wait("the hollow nodes' volumes to be released", lambda: not leftovers(), timeout=120)
    except RuntimeError as error:
        print(f"     {error}; deleting them", flush=True)
        for volume in leftovers():
            # The volume controller may delete it between the list and this call.
            with contextlib.suppress(exceptions.NotFoundException):
                api.core.delete_persistent_volume(volume)
    for name in names:
        bed.node_remove(name)
    print(f"     removed hollow nodes {', '.join(names)}", flush=True)
