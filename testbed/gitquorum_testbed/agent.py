"""The node agent: what a kubelet does for one simulated node.

It registers the Node, renews its Lease, runs every pod bound to it (see ``pods``), provisions
local volumes for claims the scheduler placed on it, and deletes the volumes of released claims.
It runs as PID 1 of a PID namespace of its own, so killing it is a power loss: the kernel kills
every process of its pods at once.

A file ``partitioned`` in the node's directory makes it behave as a node cut off from the
network: no heartbeats, no status, no reaction to the API; its processes keep running.

A hollow node (``--hollow``, as kubemark's hollow nodes) does everything above except run pods:
its Node, Lease, status and volumes are real, so the scheduler places pods on it and
WaitForFirstConsumer claims bind, but pods bound to it keep the status the scheduler left them
(Pending, PodScheduled): no process, no address, no status write. It only completes their
deletion. It is labelled and tainted ``node.gitquorum.io/hollow``, so only pods that tolerate
the taint land there (a replica that would never start must not replace a lost one by
accident), and it advertises a large capacity. What it costs is one Python process that
follows the API by watch (``mirrors``): a few tens of MiB and nearly no CPU, whatever the
number of pods bound to it.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from gitquorum_testbed import mirrors, pods, settings

log = logging.getLogger("gitquorum_testbed.agent")

PROVISIONER = "testbed.gitquorum.io/local"
STORAGE_CLASS = "local"
LEASE_SECONDS = 10
HEARTBEAT_SECONDS = 2.0
STATUS_SECONDS = 10.0
SYNC_SECONDS = 0.5
SELECTED_NODE = "volume.kubernetes.io/selected-node"
PROVISION_RETRY_SECONDS = 60.0
"""A volume created but never seen in the mirror is created again after this long."""
HOLLOW_KEY = "node.gitquorum.io/hollow"
"""Label and NoSchedule taint of hollow nodes."""


class Agent:
    def __init__(
        self, node: settings.NodeConfig, layout: settings.Layout, *, hollow: bool = False
    ) -> None:
        self.node = node
        self.hollow = hollow
        self.layout = layout
        self.dir = layout.node_dir(node.name)
        configuration = client.Configuration()
        config.load_kube_config(str(layout.kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = 64
        api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.runtimes: dict[str, pods.PodRuntime] = {}
        self.paused = threading.Event()
        self.ca_cert = layout.pki / "ca.crt"
        self.claims = mirrors.Mirror(
            self.core.list_persistent_volume_claim_for_all_namespaces, what="claims"
        )
        self.volumes = mirrors.Mirror(self.core.list_persistent_volume, what="volumes")
        self.provisioned: dict[str, float] = {}
        """Volumes this agent created (name -> when) that its volume mirror does not show yet."""
        # A hollow node may hold hundreds of pods and only needs to see their deletion.
        self.bound_pods = mirrors.Mirror(
            self.core.list_pod_for_all_namespaces,
            what=f"pods of {node.name}",
            field_selector=f"spec.nodeName={node.name}",
        )

    # --- main loops ------------------------------------------------------------------------

    def run(self) -> None:
        self.register()
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        for mirror in (self.claims, self.volumes, *([self.bound_pods] if self.hollow else [])):
            mirror.start()
        while True:
            partitioned = (self.dir / "partitioned").exists()
            if partitioned != self.paused.is_set():
                log.info("node %s: %s", self.node.name, "partitioned" if partitioned else "healed")
                (self.paused.set if partitioned else self.paused.clear)()
            if not partitioned:
                try:
                    if self.hollow:
                        self.complete_deletions()
                    else:
                        self.sync_pods()
                    self.provision_volumes()
                    self.release_volumes()
                except client.ApiException as exc:
                    log.warning("node %s: sync failed: %s", self.node.name, exc.reason)
                except Exception:
                    log.exception("node %s: sync failed", self.node.name)
            time.sleep(SYNC_SECONDS)

    def _heartbeat_loop(self) -> None:
        last_status = 0.0
        while True:
            if not self.paused.is_set():
                try:
                    self.renew_lease()
                    if time.monotonic() - last_status >= STATUS_SECONDS or not self._ready():
                        self.report_node_status()
                        last_status = time.monotonic()
                except Exception as exc:
                    log.warning("node %s: heartbeat failed: %s", self.node.name, exc)
            time.sleep(HEARTBEAT_SECONDS)

    # --- the Node and its Lease ----------------------------------------------------------------

    def register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": self.node.zone,
            "topology.kubernetes.io/region": settings.REGION,
            "node.gitquorum.io/testbed": "true",
        }
        taints = []
        if self.hollow:
            labels[HOLLOW_KEY] = "true"
            taints.append(client.V1Taint(key=HOLLOW_KEY, value="true", effect="NoSchedule"))
        body = client.V1Node(
            metadata=client.V1ObjectMeta(name=self.node.name, labels=labels),
            spec=client.V1NodeSpec(
                pod_cidr=str(self.node.pod_network),
                pod_cidrs=[str(self.node.pod_network)],
                taints=taints or None,
            ),
        )
        try:
            self.core.create_node(body)
            log.info("node %s: registered", self.node.name)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_node(self.node.name, {"metadata": {"labels": labels}})
        self.report_node_status()

    def report_node_status(self) -> None:
        now = _now()
        resources = {
            "cpu": self.node.cpu,
            "memory": self.node.memory,
            "pods": str(self.node.max_pods),
            "ephemeral-storage": "100Gi",
        }
        conditions = [
            _condition(
                "Ready", "True", "KubeletReady", "testbed agent is posting ready status", now
            ),
            _condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "", now),
            _condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "", now),
            _condition("PIDPressure", "False", "KubeletHasSufficientPID", "", now),
        ]
        current = self.core.read_node_status(self.node.name)
        previous = {c.type: c for c in (current.status.conditions or [])}
        for cond in conditions:
            old = previous.get(cond["type"])
            if old is not None and old.status == cond["status"] and old.last_transition_time:
                cond["lastTransitionTime"] = old.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": self.node.address},
                {"type": "Hostname", "address": self.node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": self.node.name,
                "systemUUID": self.node.name,
                "bootID": "",
                "kernelVersion": "",
                "osImage": "gitquorum testbed",
                "containerRuntimeVersion": "testbed://1",
                "kubeletVersion": "v1.36.3",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self.core.patch_node_status(self.node.name, {"status": status})

    def _ready(self) -> bool:
        node = self.core.read_node_status(self.node.name)
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    def renew_lease(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        name, namespace = self.node.name, "kube-node-lease"
        try:
            lease = self.coordination.read_namespaced_lease(name, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            node = self.core.read_node(name)
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(
                    name=name,
                    namespace=namespace,
                    owner_references=[
                        client.V1OwnerReference(
                            api_version="v1", kind="Node", name=name, uid=node.metadata.uid
                        )
                    ],
                ),
                spec=client.V1LeaseSpec(
                    holder_identity=name, lease_duration_seconds=LEASE_SECONDS, renew_time=now
                ),
            )
            self.coordination.create_namespaced_lease(namespace, body)
            return
        lease.spec.renew_time = now
        self.coordination.replace_namespaced_lease(name, namespace, lease)

    # --- pods ----------------------------------------------------------------------------------

    def sync_pods(self) -> None:
        listed = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node.name}"
        ).items
        seen = set()
        for pod in listed:
            uid = pod.metadata.uid
            seen.add(uid)
            runtime = self.runtimes.get(uid)
            if pod.metadata.deletion_timestamp is not None:
                grace = float(pod.metadata.deletion_grace_period_seconds or 0)
                if runtime is None:
                    self._delete_now(pod.metadata.name, pod.metadata.namespace, uid)
                else:
                    runtime.terminate(grace)
                continue
            if runtime is not None:
                runtime.update(pod)
                continue
            if pod.status and pod.status.phase in ("Succeeded", "Failed"):
                continue
            self._start(pod, used={p.status.pod_ip for p in listed if p.status})
        for uid, runtime in list(self.runtimes.items()):
            if runtime.finished.is_set():
                del self.runtimes[uid]
            elif uid not in seen:
                # Force-deleted behind our back: nobody is waiting for a graceful exit.
                runtime.kill_now()
                del self.runtimes[uid]

    def complete_deletions(self) -> None:
        """A hollow node's pod sync: nothing runs, so a deleted pod can go at once."""
        for pod in self.bound_pods.items():
            metadata = pod["metadata"]
            if metadata.get("deletionTimestamp"):
                self._delete_now(metadata["name"], metadata["namespace"], metadata["uid"])

    def _start(self, pod: client.V1Pod, *, used: set[str | None]) -> None:
        in_use = used | {r.address for r in self.runtimes.values()}
        address = next(
            str(a)
            for a in self.node.pod_network.hosts()
            if a != ipaddress.ip_address(self.node.address) and str(a) not in in_use
        )
        runtime = pods.PodRuntime(
            pod,
            node=self.node,
            layout=self.layout,
            api=self.core,
            address=address,
            ca_cert=self.ca_cert,
            paused=self.paused,
        )
        self.runtimes[pod.metadata.uid] = runtime
        runtime.start()

    def _delete_now(self, name: str, namespace: str, uid: str) -> None:
        try:
            self.core.delete_namespaced_pod(
                name,
                namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)
                ),
            )
        except client.ApiException as exc:
            if exc.status not in (404, 409):
                raise
        shutil.rmtree(self.dir / "pods" / uid, ignore_errors=True)

    # --- local volumes -------------------------------------------------------------------------

    def provision_volumes(self) -> None:
        """Create a PV for every claim of the local class that the scheduler put on this node.

        Once per claim, as a provisioner does: the claim stays Pending until the PV controller
        binds it, seconds later under load, and creating its volume again on every sync (each
        answered 409) made most of the API server's requests with a thousand claims arriving.
        """
        existing = {pv["metadata"]["name"] for pv in self.volumes.items()}
        now = time.monotonic()
        self.provisioned = {
            name: when
            for name, when in self.provisioned.items()
            if name not in existing and now - when < PROVISION_RETRY_SECONDS
        }
        for pvc in self.claims.items():
            metadata, spec = pvc["metadata"], pvc["spec"]
            annotations = metadata.get("annotations") or {}
            if (
                annotations.get(SELECTED_NODE) != self.node.name
                or spec.get("volumeName")
                or (pvc.get("status") or {}).get("phase") != "Pending"
                or metadata.get("deletionTimestamp")
            ):
                continue
            if spec.get("storageClassName") != STORAGE_CLASS:
                continue
            name = f"pvc-{metadata['uid']}"
            if name in existing or name in self.provisioned:
                continue
            path = self.dir / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            pv = client.V1PersistentVolume(
                metadata=client.V1ObjectMeta(
                    name=name, annotations={"pv.kubernetes.io/provisioned-by": PROVISIONER}
                ),
                spec=client.V1PersistentVolumeSpec(
                    capacity={"storage": spec["resources"]["requests"]["storage"]},
                    access_modes=spec.get("accessModes"),
                    persistent_volume_reclaim_policy="Delete",
                    storage_class_name=STORAGE_CLASS,
                    volume_mode="Filesystem",
                    local=client.V1LocalVolumeSource(path=str(path)),
                    claim_ref=client.V1ObjectReference(
                        kind="PersistentVolumeClaim",
                        namespace=metadata["namespace"],
                        name=metadata["name"],
                        uid=metadata["uid"],
                        api_version="v1",
                    ),
                    node_affinity=_node_affinity(self.node.name),
                ),
            )
            try:
                self.core.create_persistent_volume(pv)
                self.provisioned[name] = now
                log.info(
                    "node %s: provisioned %s for %s/%s",
                    self.node.name,
                    name,
                    metadata["namespace"],
                    metadata["name"],
                )
            except client.ApiException as exc:
                # 409: created on an earlier pass that the mirror has not caught up with.
                if exc.status != 409:
                    raise

    def release_volumes(self) -> None:
        """Delete released volumes of this node whose reclaim policy is Delete."""
        for pv in self.volumes.items():
            metadata, spec = pv["metadata"], pv["spec"]
            annotations = metadata.get("annotations") or {}
            if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                continue
            phase = (pv.get("status") or {}).get("phase")
            if phase != "Released" or spec.get("persistentVolumeReclaimPolicy") != "Delete":
                continue
            path = Path(spec["local"]["path"])
            if not path.is_relative_to(self.dir):
                continue
            shutil.rmtree(path, ignore_errors=True)
            try:
                self.core.delete_persistent_volume(metadata["name"])
                log.info("node %s: deleted released volume %s", self.node.name, metadata["name"])
            except client.ApiException as exc:
                if exc.status != 404:
                    raise


def _node_affinity(node: str) -> client.V1VolumeNodeAffinity:
    term = client.V1NodeSelectorTerm(
        match_expressions=[
            client.V1NodeSelectorRequirement(
                key="kubernetes.io/hostname", operator="In", values=[node]
            )
        ]
    )
    return client.V1VolumeNodeAffinity(required=client.V1NodeSelector(node_selector_terms=[term]))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="gitquorum-testbed-agent")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--hollow", action="store_true", help="a node that never runs its pods")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    layout = settings.Layout(args.root)
    node = settings.NodeConfig.load(layout.node_dir(args.node) / "node.json")
    Agent(node, layout, hollow=args.hollow).run()


if __name__ == "__main__":
    main()
