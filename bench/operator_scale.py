"""Scale: hundreds of GitRepositories on hollow nodes, against the same objects made directly.

Three hollow nodes (pods bound there never run: see gitquorum_testbed.agent) join, labelled
``gitquorum.io/pool=bench-hollow``; 8 threads create the GitRepositories (3 replicas each,
placed on that pool, tolerating the hollow taint) as fast as the API takes them. Measured: the
time until every pod and claim exists (target 120 s for 300 repositories) and until every
object the operator makes for them exists (Secrets, Service, PodDisruptionBudget,
NetworkPolicy too), then until every pod is scheduled and claim bound (no target: that is the
scheduler's and the volume binder's work), and the operator's resident memory from its
``/metrics`` when everything existed, at the end, and at its peak (target 200 MB).

References in the same run, each made by 8 threads in a namespace of its own, copied from what
the operator made (label keys renamed so that its watches ignore them): the pods and claims
alone, until all exist; then every object the operator made, in the order it makes them, until
all exist. The second is the issue's "same objects created directly"; the first is stricter
(the operator's Secrets and Service are work the reference then skips).

Objects are followed by watch (gitquorum_testbed.mirrors): polling lists of 900 pods would load
the API server as much as what is measured.
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
PER_REPOSITORY = {
    "Secret": 4,  # credentials, hashed credentials, replication tokens, known_hosts
    "Service": 1,
    "PodDisruptionBudget": 1,
    "NetworkPolicy": 1,
    "PersistentVolumeClaim": 3,
    "Pod": 3,
}
"""What the operator makes for one 3-replica repository, in the order a first pass makes it."""
API_VERSIONS = {
    "PodDisruptionBudget": "policy/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
}
"""apiVersion by kind, where it is not ``v1``."""
DROPPED_SPEC = ("nodeName", "volumeName", "priority", "clusterIP", "clusterIPs")
"""Spec fields the scheduler, the volume binder or the API server filled in."""
LABEL_KEYS = ("gitquorum.io/repository", "gitquorum.io/replica")
COPY_REPOSITORY_LABEL = f"bench.{LABEL_KEYS[0]}"
"""The repository label of a copy (renamed so that the operator ignores it)."""
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
    exist_all: float
    """Seconds until every object the operator makes for them existed."""
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
    reference_all: float
    """Seconds until every object the operator made, created directly, all existed."""


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
        pods_and_claims = [o for o in objects if o["kind"] in ("Pod", "PersistentVolumeClaim")]
        with api.namespace("direct") as namespace:
            reference = _direct_creates(api, namespace, pods_and_claims)
        with api.namespace("direct-all") as namespace:
            reference_all = _direct_creates(api, namespace, objects)
    finally:
        remove_hollow(bed, api, hollow)
    return dataclasses.replace(ours, reference=reference, reference_all=reference_all)


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
        exist = watched.wait_all(count, ("Pod", "PersistentVolumeClaim"), started, sampler)
        exist_all = watched.wait_all(count, tuple(PER_REPOSITORY), started, sampler)
        at_exist = api.operator_metrics()
        settled = watched.wait_settled(3 * count, started, sampler)
        at_end = api.operator_metrics()
        objects = [_copy(kind, o) for kind, o in watched.objects()]
    sampler.stop()

    def delta(metric: str) -> float:
        return at_end.get(metric, 0.0) - before.get(metric, 0.0)

    scale = Scale(
        repositories=count,
        created=took,
        exist=exist,
        exist_all=exist_all,
        settled=settled,
        rss_before_mb=before["process_resident_memory_bytes"] / 1e6,
        rss_mb=at_exist["process_resident_memory_bytes"] / 1e6,
        rss_settled_mb=at_end["process_resident_memory_bytes"] / 1e6,
        peak_mb=max(at_end["process_max_resident_memory_bytes"] / 1e6, sampler.peak_mb),
        cpu_seconds=delta("process_cpu_seconds_total"),
        passes=delta("gitquorum_operator_reconcile_seconds_count"),
        pass_seconds=delta("gitquorum_operator_reconcile_seconds_sum"),
        reference=0.0,
        reference_all=0.0,
    )
    return scale, objects


def _direct_creates(api: kube.Kube, namespace: str, objects: list[Body]) -> float:
    counts = {kind: sum(1 for o in objects if o["kind"] == kind) for kind in PER_REPOSITORY}
    made = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    print(f"     reference: {made} created directly", flush=True)
    # Created as the operator creates (``gitquorum.kube.api``): answer not decoded, its
    # connection given back to the pool.
    creator = operator_api.Api(api.api_client)
    # Repository by repository, each in the order the operator makes its objects.
    order = list(PER_REPOSITORY)
    ordered = sorted(
        objects,
        key=lambda o: (
            o["metadata"]["labels"].get(COPY_REPOSITORY_LABEL, ""),
            order.index(o["kind"]),
            o["metadata"]["name"],
        ),
    )
    repositories = len({o["metadata"]["labels"].get(COPY_REPOSITORY_LABEL) for o in objects})
    kinds = tuple(kind for kind, n in counts.items() if n)
    with Watched(api, namespace, kinds) as watched:
        started = time.monotonic()
        with futures.ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda body: creator.create(namespace, body), ordered))
        took = watched.wait_all(repositories, kinds, started, None)
    return took


def _copy(kind: str, body: Body) -> Body:
    """An object as the operator created it, for another namespace and not the operator's.

    The repository and replica label keys are renamed (in selectors too) so that the
    operator's watches ignore the copies; everything the API server, the scheduler or the
    volume binder added (status, node name, bound volume, cluster IP, owner) is dropped.
    """
    text = json.dumps(body)
    for key in LABEL_KEYS:
        text = text.replace(f'"{key}"', f'"bench.{key}"')
    source = json.loads(text)
    metadata = {
        key: source["metadata"][key]
        for key in ("name", "labels", "annotations")
        if key in source["metadata"]
    }
    if kind == "PersistentVolumeClaim":
        metadata.pop("annotations", None)  # the scheduler's selected node, the binder's marks
    copy: Body = {"apiVersion": API_VERSIONS.get(kind, "v1"), "kind": kind, "metadata": metadata}
    if kind == "Secret":
        return {**copy, "type": source.get("type", "Opaque"), "data": source.get("data") or {}}
    spec = {key: value for key, value in source["spec"].items() if key not in DROPPED_SPEC}
    return {**copy, "spec": spec}


class Watched:
    """The objects of some kinds in a namespace, followed by watch (listing 900 pods costs)."""

    def __init__(
        self, api: kube.Kube, namespace: str, kinds: tuple[str, ...] = tuple(PER_REPOSITORY)
    ) -> None:
        lists = {
            "Secret": api.core.list_namespaced_secret,
            "Service": api.core.list_namespaced_service,
            "PodDisruptionBudget": api.policy.list_namespaced_pod_disruption_budget,
            "NetworkPolicy": api.networking.list_namespaced_network_policy,
            "PersistentVolumeClaim": api.core.list_namespaced_persistent_volume_claim,
            "Pod": api.core.list_namespaced_pod,
        }
        self.mirrors = {
            kind: mirrors.Mirror(
                functools.partial(lists[kind], namespace), what=kind, watch_seconds=5
            )
            for kind in kinds
        }

    @property
    def pods(self) -> mirrors.Mirror:
        return self.mirrors["Pod"]

    @property
    def claims(self) -> mirrors.Mirror:
        return self.mirrors["PersistentVolumeClaim"]

    def objects(self) -> list[tuple[str, Body]]:
        return [(kind, o) for kind, mirror in self.mirrors.items() for o in mirror.items()]

    def __enter__(self) -> "Watched":
        for mirror in self.mirrors.values():
            mirror.start()
            mirror.synced.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        stoppers = [threading.Thread(target=m.stop) for m in self.mirrors.values()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()

    def wait_all(
        self,
        repositories: int,
        kinds: tuple[str, ...],
        started: float,
        sampler: "RssSampler | None",
    ) -> float:
        """Seconds from ``started`` until the objects of ``kinds`` for ``repositories`` exist."""
        wanted = {kind: PER_REPOSITORY[kind] * repositories for kind in kinds}
        return self._until(
            ", ".join(f"{n} {kind}" for kind, n in wanted.items()),
            lambda: all(len(self.mirrors[k].items()) >= n for k, n in wanted.items()),
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
        others = "".join(
            f", {kind} {len(mirror.items())}"
            for kind, mirror in self.mirrors.items()
            if kind not in ("Pod", "PersistentVolumeClaim")
        )
        return (
            f"pods {len(pods)} ({scheduled} scheduled), claims {len(claims)} ({bound} bound)"
            f"{others}"
        )


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
