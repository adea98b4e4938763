"""Where the testbed keeps its state and which addresses it uses.

Every address the testbed hands out lies in two ranges that are also blackholed on the host:
pods in ``POD_RANGE`` (one /24 per node) and services in ``SERVICE_RANGE``. Nothing the testbed
starts can reach any other non-loopback address: pod namespaces only have routes to these
ranges, and the host never forwards.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path

POD_RANGE = ipaddress.ip_network("10.244.0.0/16")
SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/16")
# The host's address on the pod bridge: the next hop to services and the apiserver's
# advertised address (EndpointSlices refuse loopback, so the `kubernetes` Service needs it).
BRIDGE_ADDRESS = ipaddress.ip_address("10.244.0.1")
BRIDGE_NAME = "gqbr0"
# Set once on the bridge: left to itself a bridge takes the lowest MAC among its ports, which
# changes as pods come and go, and every pod's cached MAC for its gateway goes stale.
BRIDGE_MAC = "02:67:71:00:00:01"
KUBERNETES_SERVICE_IP = ipaddress.ip_address("10.96.0.1")
# The object store's fixed ClusterIP: in the low part of the range, which the apiserver hands
# out on its own only once the rest is used up, so it stays free for a Service that names it.
OBJECT_STORE_SERVICE_IP = SERVICE_RANGE.network_address + 250
ZONES_DEFAULT = ("zone-a", "zone-b", "zone-c")
REGION = "testbed"
# What a hollow node advertises: room for a benchmark's pods, since none of them will run (see
# agent.py): a replica of each of 1,000 repositories at the default requests (100m, 128Mi), as
# ``bench operator-scale`` places them (three hollow nodes, three replicas each). With 500 pods,
# half of that benchmark's pods were never scheduled.
HOLLOW_CPU = "128"
HOLLOW_MEMORY = "256Gi"
HOLLOW_MAX_PODS = 1100


@dataclasses.dataclass(frozen=True)
class Ports:
    """Host ports of the testbed's own processes: the control plane on loopback, the object
    store on the bridge address."""

    etcd_client: int = 12379
    """etcd client port (default 12379: away from a system etcd on 2379)."""
    etcd_peer: int = 12380
    """etcd peer port, used only by its own single-member cluster."""
    apiserver: int = 6443
    """kube-apiserver secure port."""
    controller_manager: int = 10257
    """kube-controller-manager's health port."""
    scheduler: int = 10259
    """kube-scheduler's health port."""
    object_store: int = 17070
    """versitygw's S3 port on ``BRIDGE_ADDRESS`` (default 17070: away from its own 7070);
    clients use the Service's port 80 instead."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Paths of the testbed's state under its root directory (default ``.testbed/``)."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def object_store(self) -> Path:
        return self.root / "objectstore"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def nodes(self) -> Path:
        return self.root / "nodes"

    @property
    def cluster_file(self) -> Path:
        return self.root / "cluster.json"

    def node_dir(self, name: str) -> Path:
        return self.nodes / name


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    """A simulated node's identity, persisted so that it survives stop and start."""

    name: str
    """Node name, also its kubernetes.io/hostname label."""
    index: int
    """1-based; the node's pods take addresses from 10.244.<index>.0/24."""
    zone: str
    """Value of topology.kubernetes.io/zone."""
    cpu: str = "4"
    """Allocatable CPU the node advertises to the scheduler."""
    memory: str = "8Gi"
    """Allocatable memory the node advertises."""
    max_pods: int = 110
    """Pod capacity, as a kubelet's --max-pods."""

    @property
    def pod_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.244.{self.index}.0/24")

    @property
    def address(self) -> str:
        """The node's InternalIP: the first address of its pod range (never assigned to a pod)."""
        return str(self.pod_network.network_address + 1)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        return cls(**json.loads(path.read_text()))
