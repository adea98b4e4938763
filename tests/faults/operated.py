"""Faults through the operator: a GitRepository on the testbed under the harness's clients and
checker, while a nemesis stops and starts nodes, partitions them, kills the operator, deletes
replica pods and restarts the API server.

:class:`OperatedCluster` is what the harness needs of a cluster (``localcluster.LocalCluster`` has
the same methods), for one GitRepository: clients reach it only through its Service, as
users do; the replicas' own admin status (through the repository's admin token, at the pods'
addresses) and the GitRepository's status say when it has converged; the refs on each
replica's volume (the testbed's local volumes are directories on this machine) are what the
checker compares. A scenario is a fault (:data:`SCENARIOS`) repeated for some rounds, each
seeded, logged and checked: every acknowledged push present, no ref going backwards,
read-your-writes, and convergence within ``CONVERGE_SECONDS`` of the last fault, with the
status saying so.
"""

from __future__ import annotations

import base64
import json
import pathlib
import random
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from kubernetes import client

from gitquorum_testbed import cluster as testbed_cluster
from tests import waiting
from tests.faults import checking, clients, localcluster, scenarios

GROUP, VERSION, PLURAL = "gitquorum.io", "v1alpha1", "gitrepositories"
CONVERGE_SECONDS = 90.0
"""After the last fault: 60 s plus the time to copy a small repository, as the issue asks."""
FAULT_SECONDS = 12.0
"""How long a node stays off or cut: past the node-monitor grace (8 s), so the control plane
sees it, and short of the node-loss grace, so the replica comes back rather than being
replaced."""
PEER_PORT, GIT_PORT = 8081, 8080


class OperatedCluster:
    """One 3-replica GitRepository, as the fault harness sees a cluster."""

    def __init__(
        self,
        *,
        testbed: testbed_cluster.Testbed,
        api: client.ApiClient,
        namespace: str,
        name: str,
        directory: pathlib.Path,
        operator_namespace: str,
        operator_selector: str,
    ) -> None:
        self.testbed = testbed
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.name = name
        self.directory = directory
        self.operator_namespace = operator_namespace
        self.operator_selector = operator_selector
        self.keep = False
        directory.mkdir(parents=True, exist_ok=True)
        username, password = self._secret(f"{name}-credentials", "username", "password")
        self.admin_token = self._secret(f"{name}-replication", "admin-token")[0]
        ip = self.core.read_namespaced_service(name, namespace).spec.cluster_ip
        self.service_url = f"http://{username}:{password}@{ip}/{name}.git"

    # -- what the harness asks -------------------------------------------------------------------

    def urls(self) -> dict[str, str]:
        return {"service": self.service_url}

    def url(self, replica_id: str) -> str:
        return self.service_url

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name
        )
        return body

    def ids(self) -> list[str]:
        return sorted(m["name"] for m in (self.body().get("status") or {}).get("members") or [])

    def leader(self) -> tuple[str, int]:
        status = self.body().get("status") or {}
        return str(status.get("leader") or ""), int(status.get("term") or 0)

    def followers(self) -> list[str]:
        leader, _ = self.leader()
        return [replica for replica in self.ids() if replica != leader]

    def pod(self, replica: str) -> client.V1Pod:
        return self.core.read_namespaced_pod(replica, self.namespace)

    def node_of(self, replica: str) -> str:
        return str(self.pod(replica).spec.node_name)

    def status(self, replica: str) -> dict[str, Any]:
        ip = self.pod(replica).status.pod_ip
        request = urllib.request.Request(
            f"http://{ip}:{PEER_PORT}/admin/status",
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        with urllib.request.urlopen(request, timeout=localcluster.STATUS_TIMEOUT) as answer:
            found: dict[str, Any] = json.loads(answer.read())
            return found

    def statuses(self) -> dict[str, dict[str, Any] | str]:
        found: dict[str, dict[str, Any] | str] = {}
        for replica in self.ids():
            try:
                found[replica] = self.status(replica)
            except Exception as error:  # down, cut off, not scheduled: say so in the report
                found[replica] = f"{type(error).__name__}: {error}"
        return found

    def summary(self) -> str:
        status = self.body().get("status") or {}
        replicas = "; ".join(
            f"{e.get('name')} on {e.get('node') or '-'} {e.get('role') or '-'} {e.get('state')} "
            f"gen={e.get('generation')}"
            for e in status.get("replicaStatuses") or []
        )
        conditions = ", ".join(
            f"{c.get('type')}={c.get('status')}" for c in status.get("conditions") or []
        )
        return (
            f"leader={status.get('leader')} term={status.get('term')} ready="
            f"{status.get('readyReplicas')}; {conditions}; {replicas}"
        )

    def converged_status(self) -> bool:
        """The GitRepository's status says every replica is in sync."""
        status = self.body().get("status") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        entries = status.get("replicaStatuses") or []
        return (
            conditions.get("ReplicasInSync") == "True"
            and conditions.get("Ready") == "True"
            and status.get("readyReplicas") == 3
            and len(entries) == 3
            and len({(e.get("generation"), e.get("checksum")) for e in entries}) == 1
        )

    def wait_converged(self, *, timeout: float = CONVERGE_SECONDS) -> dict[str, dict[str, Any]]:
        """Every replica InSync at one term, leader, generation and checksum, and the
        GitRepository's status saying so."""
        last: dict[str, dict[str, Any] | str] = {}

        def converged() -> dict[str, dict[str, Any]] | None:
            last.clear()
            last.update(self.statuses())
            answered = {r: s for r, s in last.items() if isinstance(s, dict)}
            if len(answered) != 3 or len(answered) != len(last):
                return None
            views = {
                (s["term"], s["leader"], s["generation"], s["checksum"], s["state"])
                for s in answered.values()
            }
            if len(views) != 1 or next(iter(views))[4] != "InSync":
                return None
            return answered if self.converged_status() else None

        found: dict[str, dict[str, Any]] = waiting.until(
            "every replica InSync at one term, leader, generation and checksum, and the "
            "GitRepository's status saying so",
            converged,
            timeout=timeout,
            interval=0.5,
            seen=lambda: f"{self.summary()} | replicas: {last}",
        )
        return found

    def repository(self, replica: str) -> pathlib.Path:
        claim = self.core.read_namespaced_persistent_volume_claim(replica, self.namespace)
        volume = self.core.read_persistent_volume(claim.spec.volume_name)
        return pathlib.Path(volume.spec.local.path) / "repositories" / f"{self.name}.git"

    def replica_logs(self) -> list[tuple[str, pathlib.Path]]:
        found = []
        for replica in self.ids():
            try:
                found.append((replica, self.testbed.log_path(self.namespace, replica, None)))
            except Exception:  # not scheduled: no log yet
                continue
        return [(name, path) for name, path in found if path.exists()]

    def report(self, lines: int = 40) -> str:
        parts = [self.summary()]
        logs = list(self.replica_logs())
        for pod in self.core.list_namespaced_pod(
            self.operator_namespace, label_selector=self.operator_selector
        ).items:
            try:
                logs.append(
                    (
                        pod.metadata.name,
                        self.testbed.log_path(self.operator_namespace, pod.metadata.name, None),
                    )
                )
            except Exception:
                continue
        for name, path in logs:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError as error:
                tail = [f"(unreadable: {error})"]
            parts.append(f"---- {name}: {path}\n" + "\n".join(tail))
        return "\n".join(parts)

    def _secret(self, name: str, *keys: str) -> list[str]:
        data = self.core.read_namespaced_secret(name, self.namespace).data or {}
        return [base64.b64decode(data[key]).decode() for key in keys]

    # -- the nemesis ----------------------------------------------------------------------------

    def operator_pods(self) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(
            self.operator_namespace, label_selector=self.operator_selector
        ).items


Nemesis = Callable[[OperatedCluster, clients.Workload], None]


def _during(workload: clients.Workload, what: str, seconds: float) -> None:
    """Clients keep going for ``seconds`` (a fault's duration); fails on a client error."""
    deadline = time.monotonic() + seconds
    waiting.until(
        f"{seconds:.0f}s of load {what}",
        lambda: workload.records.errors or time.monotonic() >= deadline,
        timeout=seconds + 5,
        interval=0.2,
    )
    if workload.records.errors:
        raise AssertionError(f"a client failed {what}: {workload.records.errors[-3:]}")


def _recovered(cluster: OperatedCluster, workload: clients.Workload, what: str) -> None:
    since = time.monotonic()
    workload.wait_for_pushes(
        scenarios.PUSHES_PER_PHASE, since=since, what=f"after {what}", timeout=CONVERGE_SECONDS
    )
    cluster.wait_converged()
    workload.records.event(f"converged after {what} in {time.monotonic() - since:.1f}s")


def _pick(workload: clients.Workload, cluster: OperatedCluster, *, leader: bool) -> str:
    if leader:
        return cluster.leader()[0]
    return workload.rng.choice(cluster.followers())


def _node_fault(*, leader: bool, stopped: bool) -> Nemesis:
    """The node of the leader (or of a follower) stopped, or cut off, for FAULT_SECONDS."""
    verb, undo, state = (
        ("stop", "started", "off") if stopped else ("partition", "healed", "cut off")
    )

    def fault(cluster: OperatedCluster, workload: clients.Workload) -> None:
        victim = _pick(workload, cluster, leader=leader)
        node = cluster.node_of(victim)
        workload.records.event(f"{verb} {node} (replica {victim}, leader={leader})")
        (cluster.testbed.node_stop if stopped else cluster.testbed.node_partition)(node)
        try:
            _during(workload, f"while {node} is {state}", FAULT_SECONDS)
        finally:
            (cluster.testbed.node_start if stopped else cluster.testbed.node_heal)(node)
            workload.records.event(f"{undo} {node}")
        _recovered(cluster, workload, f"{node} {undo}")

    role = "leader" if leader else "follower"
    fault.__name__ = f"{role}_node_{'stopped' if stopped else 'partitioned'}"
    return fault


def node_stop_start(*, leader: bool) -> Nemesis:
    return _node_fault(leader=leader, stopped=True)


def node_partition(*, leader: bool) -> Nemesis:
    return _node_fault(leader=leader, stopped=False)


def operator_killed(cluster: OperatedCluster, workload: clients.Workload) -> None:
    for pod in cluster.operator_pods():
        workload.records.event(f"kill operator pod {pod.metadata.name}")
        cluster.core.delete_namespaced_pod(
            pod.metadata.name, cluster.operator_namespace, grace_period_seconds=0
        )
    _during(workload, "while the operator restarts", 5)
    _recovered(cluster, workload, "the operator was killed")


def replica_pod_deleted(cluster: OperatedCluster, workload: clients.Workload) -> None:
    victim = workload.rng.choice(cluster.ids())
    workload.records.event(f"delete pod {victim}")
    cluster.core.delete_namespaced_pod(victim, cluster.namespace)
    _recovered(cluster, workload, f"{victim}'s pod was deleted")


def apiserver_restarted(cluster: OperatedCluster, workload: clients.Workload) -> None:
    workload.records.event("restart kube-apiserver")
    cluster.testbed.apiserver_restart()
    workload.records.event("kube-apiserver back")
    _recovered(cluster, workload, "the API server restarted")


def operator_killed_and_follower_node_stopped(
    cluster: OperatedCluster, workload: clients.Workload
) -> None:
    victim = _pick(workload, cluster, leader=False)
    node = cluster.node_of(victim)
    workload.records.event(f"stop {node} (replica {victim}) and kill the operator")
    cluster.testbed.node_stop(node)
    try:
        for pod in cluster.operator_pods():
            cluster.core.delete_namespaced_pod(
                pod.metadata.name, cluster.operator_namespace, grace_period_seconds=0
            )
        _during(workload, f"while {node} is off and the operator restarts", FAULT_SECONDS)
    finally:
        cluster.testbed.node_start(node)
        workload.records.event(f"started {node}")
    _recovered(cluster, workload, f"{node} came back under a new operator")


SCENARIOS: dict[str, Nemesis] = {
    "follower-node-stopped": node_stop_start(leader=False),
    "leader-node-stopped": node_stop_start(leader=True),
    "follower-node-partitioned": node_partition(leader=False),
    "leader-node-partitioned": node_partition(leader=True),
    "operator-killed": operator_killed,
    "replica-pod-deleted": replica_pod_deleted,
    "apiserver-restarted": apiserver_restarted,
    "operator-killed-and-follower-node-stopped": operator_killed_and_follower_node_stopped,
}


def run_scenario(
    cluster: OperatedCluster,
    fault: Nemesis,
    *,
    rounds: int,
    seed: int | None = None,
    progress: Callable[[int, checking.Verdict, float], None] | None = None,
) -> checking.Verdict:
    """``rounds`` rounds of ``fault`` under two clients on ``main`` and two on their own
    branches, all through the Service, checked after each; stops at the first broken one."""
    seed = random.randrange(2**32) if seed is None else seed
    workload = clients.Workload(cluster, shared=2, own=2, seed=seed)  # type: ignore[arg-type]
    workload.records.event(f"workload seed {seed} ({fault.__name__}, {rounds} rounds)")
    checker = checking.Checker(cluster, workload)  # type: ignore[arg-type]
    verdict = checking.Verdict()
    try:
        for index in range(rounds):
            with workload.running():
                workload.wait_for_pushes(
                    scenarios.PUSHES_PER_PHASE,
                    since=time.monotonic(),
                    what=f"before round {index + 1}",
                    timeout=CONVERGE_SECONDS,
                )
                workload.records.event(f"round {index + 1}")
                started = time.monotonic()
                fault(cluster, workload)
                converged_after = time.monotonic() - started
            verdict = checker.check(timeout=CONVERGE_SECONDS)
            if progress is not None:
                progress(index, verdict, converged_after)
            if not verdict.ok:
                break
    except BaseException:
        print("timeline (since the workload started):\n" + workload.records.timeline())
        print(cluster.report(), flush=True)
        raise
    if not verdict.ok:
        print(cluster.report(), flush=True)
    return verdict
