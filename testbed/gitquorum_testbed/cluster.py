"""Bringing the whole testbed up and down, and the node operations of failure injection."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from kubernetes import client, config

from gitquorum_testbed import (
    agent,
    binaries,
    controlplane,
    network,
    objectstore,
    pods,
    processes,
    settings,
)

PROXY = "proxy"
NODE_READY_TIMEOUT = 60.0
# Marker file of a hollow node, next to ``stopped`` and ``partitioned``; a marker rather than a
# NodeConfig field so that node.json stays readable by a process started from an older checkout.
HOLLOW = "hollow"


class TestbedError(RuntimeError):
    """A testbed operation cannot be carried out; the message says why and what to do."""


class Testbed:
    def __init__(self, root: Path, *, ports: settings.Ports | None = None) -> None:
        self.layout = settings.Layout(root.resolve())
        self.ports = ports or settings.Ports()

    # --- whole cluster ------------------------------------------------------------------------

    def up(self, *, nodes: int, zones: int) -> None:
        _require_root()
        started = time.monotonic()
        bindir = binaries.directory(build=True)
        versitygw = binaries.versitygw(build=True)
        self.layout.root.mkdir(parents=True, exist_ok=True)
        _say("network: bridge, routes and blackholes")
        network.setup_host()
        _say("control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
        controlplane.start(layout=self.layout, bindir=bindir, ports=self.ports)
        self._bootstrap()
        if processes.running(PROXY, pids=self.layout.pids) is None:
            processes.start(
                PROXY,
                [sys.executable, "-m", "gitquorum_testbed.proxy", "--root", str(self.layout.root)],
                pids=self.layout.pids,
                logs=self.layout.logs,
            )
        _say(f"object store: versitygw behind http://{settings.OBJECT_STORE_SERVICE_IP}")
        objectstore.start(layout=self.layout, ports=self.ports, binary=versitygw)
        objectstore.publish(api_client=self._api_client(), ports=self.ports)
        objectstore.ensure_bucket(self.object_store(), layout=self.layout)
        existing = self.node_configs()
        zone_names = (
            settings.ZONES_DEFAULT[: max(1, zones)]
            if zones <= 3
            else tuple(f"zone-{i}" for i in range(zones))
        )
        for i in range(len(existing), nodes):
            self._create_node(f"node-{i + 1}", index=i + 1, zone=zone_names[i % len(zone_names)])
        for node in self.node_configs():
            if not (self.layout.node_dir(node.name) / "stopped").exists():
                self._start_agent(node)
        for node in self.node_configs():
            if not (self.layout.node_dir(node.name) / "stopped").exists():
                self.wait_node_ready(node.name, ready=True)
        _say(
            f"testbed up in {time.monotonic() - started:.1f}s; nodes: "
            + ", ".join(n.name for n in self.node_configs())
        )

    def down(self, *, keep_state: bool) -> None:
        _require_root()
        for name in processes.names(self.layout.pids):
            if name.startswith("node-"):
                processes.stop(name, pids=self.layout.pids, grace=0, sig=signal.SIGKILL)
        processes.stop(PROXY, pids=self.layout.pids, grace=5)
        objectstore.stop(layout=self.layout)
        controlplane.stop(layout=self.layout)
        network.teardown_host()
        shutil.rmtree(pods.STAGING_DIR.parent, ignore_errors=True)
        if not keep_state and self.layout.root.exists():
            shutil.rmtree(self.layout.root)
        _say("testbed down" + (" (state kept)" if keep_state else ""))

    def status(self) -> list[str]:
        lines = []
        for name in (*controlplane.COMPONENTS, PROXY, objectstore.PROCESS):
            pid = processes.running(name, pids=self.layout.pids)
            lines.append(f"{name:24} {'running pid ' + str(pid) if pid else 'stopped'}")
        for node in self.node_configs():
            pid = processes.running(_agent_name(node.name), pids=self.layout.pids)
            flags = [
                f
                for f in (HOLLOW, "stopped", "partitioned")
                if (self.layout.node_dir(node.name) / f).exists()
            ]
            state = "running" if pid else "stopped"
            lines.append(
                f"{node.name:24} agent {state} zone={node.zone} "
                f"pods={node.pod_network} {' '.join(flags)}"
            )
        return lines

    def env(self) -> str:
        bindir = binaries.directory(build=False)
        venv_bin = Path(sys.executable).parent
        exports = {"KUBECONFIG": str(self.layout.kubeconfig), "PATH": f"{venv_bin}:{bindir}:$PATH"}
        with contextlib.suppress(objectstore.ObjectStoreError):
            exports.update(self.object_store().env())
        return "".join(f"export {name}={value}\n" for name, value in exports.items())

    def object_store(self) -> objectstore.Endpoint:
        """The S3 store that ``up`` started: its ClusterIP URL, credentials and bucket."""
        return objectstore.endpoint(self.layout)

    # --- nodes -------------------------------------------------------------------------------

    def node_configs(self) -> list[settings.NodeConfig]:
        files = sorted(self.layout.nodes.glob("*/node.json")) if self.layout.nodes.exists() else []
        return sorted((settings.NodeConfig.load(f) for f in files), key=lambda n: n.index)

    def node(self, name: str) -> settings.NodeConfig:
        for node in self.node_configs():
            if node.name == name:
                return node
        raise TestbedError(
            f"no node {name!r}; nodes: {', '.join(n.name for n in self.node_configs()) or 'none'}"
        )

    def node_add(self, name: str | None, *, hollow: bool = False) -> settings.NodeConfig:
        """A new node joins, in the zone with the fewest nodes.

        A hollow node (see agent.py) registers, stays Ready and provisions volumes but never
        runs its pods; it is named ``hollow-<index>`` unless named here.
        """
        _require_root()
        existing = self.node_configs()
        index = max((n.index for n in existing), default=0) + 1
        if index > 250:
            raise TestbedError("the testbed has room for 250 nodes")
        name = name or f"{'hollow' if hollow else 'node'}-{index}"
        if any(n.name == name for n in existing):
            raise TestbedError(f"node {name} exists already")
        zones = sorted({n.zone for n in existing}) or list(settings.ZONES_DEFAULT)
        counts = {z: sum(1 for n in existing if n.zone == z) for z in zones}
        zone = min(zones, key=lambda z: counts[z])
        node = self._create_node(name, index=index, zone=zone, hollow=hollow)
        self._start_agent(node)
        self.wait_node_ready(name, ready=True)
        return node

    def apiserver_restart(self) -> None:
        """The API server stops (every watch and request fails) and comes back, as in an
        upgrade of the control plane; etcd keeps the state. The stop is compressed like the rest
        of the testbed's timings, so the outage stays shorter than the node-monitor grace, as a
        kubelet's 30 s grace for the API server's pod is shorter than the default 50 s."""
        _require_root()
        processes.stop(
            "kube-apiserver", pids=self.layout.pids, grace=controlplane.APISERVER_STOP_GRACE
        )
        controlplane.start(
            layout=self.layout, bindir=binaries.directory(build=False), ports=self.ports
        )

    def node_stop(self, name: str) -> None:
        """Power loss: the agent is PID 1 of its PID namespace, so SIGKILL takes every pod."""
        _require_root()
        node = self.node(name)
        (self.layout.node_dir(node.name) / "stopped").touch()
        processes.stop(_agent_name(name), pids=self.layout.pids, grace=0, sig=signal.SIGKILL)
        # The kernel removes a namespace's veth when its last process dies; make sure.
        for link in network.host_veths(node.index):
            network.detach_pod(link)

    def node_start(self, name: str) -> None:
        _require_root()
        node = self.node(name)
        (self.layout.node_dir(name) / "stopped").unlink(missing_ok=True)
        self._start_agent(node)
        self.wait_node_ready(name, ready=True)

    def node_remove(self, name: str) -> None:
        """The node leaves for good, as when the autoscaler removes it: agent, disks, Node."""
        _require_root()
        node = self.node(name)
        self.node_stop(name)
        try:
            self.core_api().delete_node(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        shutil.rmtree(self.layout.node_dir(node.name))

    def log_path(self, namespace: str, pod: str, container: str | None) -> Path:
        """Where a container's output is kept (there is no kubelet API for `kubectl logs`)."""
        obj = self.core_api().read_namespaced_pod(pod, namespace)
        names = [c.name for c in obj.spec.containers]
        name = container or names[0]
        if name not in names + [c.name for c in obj.spec.init_containers or []]:
            raise TestbedError(f"pod {namespace}/{pod} has no container {name!r}: {names}")
        if not obj.spec.node_name:
            raise TestbedError(f"pod {namespace}/{pod} is not scheduled yet")
        path = self.layout.node_dir(obj.spec.node_name) / "pods" / obj.metadata.uid / "logs"
        return path / f"{name}.log"

    def leftovers(self) -> list[str]:
        """Anything of a testbed still present on the host: what ``down`` must leave empty."""
        found = [
            f"process {n}"
            for n in processes.names(self.layout.pids)
            if processes.running(n, pids=self.layout.pids) is not None
        ]
        found += [f"link {link}" for link in network.host_veths()]
        if network.link_exists(settings.BRIDGE_NAME):
            found.append(f"link {settings.BRIDGE_NAME}")
        found += [f"route {r}" for r in network.testbed_routes()]
        found += [f"process {p}" for p in network.sandbox_processes()]
        return found

    def node_partition(self, name: str) -> None:
        _require_root()
        node = self.node(name)
        (self.layout.node_dir(name) / "partitioned").touch()
        network.set_links(network.host_veths(node.index), up=False)

    def node_heal(self, name: str) -> None:
        _require_root()
        node = self.node(name)
        network.set_links(network.host_veths(node.index), up=True)
        (self.layout.node_dir(name) / "partitioned").unlink(missing_ok=True)

    def wait_node_ready(
        self, name: str, *, ready: bool, timeout: float = NODE_READY_TIMEOUT
    ) -> None:
        api = self.core_api()

        def check() -> object:
            node = api.read_node(name)
            cond = next((c for c in node.status.conditions or [] if c.type == "Ready"), None)
            return (cond is not None and cond.status == "True") == ready

        processes.wait_until(
            f"node {name} to be {'Ready' if ready else 'NotReady'}",
            check,
            timeout=timeout,
            log=self.layout.logs / f"{_agent_name(name)}.log",
        )

    def core_api(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._api_client())

    def _api_client(self) -> client.ApiClient:
        configuration = client.Configuration()
        config.load_kube_config(str(self.layout.kubeconfig), client_configuration=configuration)
        return client.ApiClient(configuration)

    # --- internals -----------------------------------------------------------------------------

    def is_hollow(self, name: str) -> bool:
        return (self.layout.node_dir(name) / HOLLOW).exists()

    def _create_node(
        self, name: str, *, index: int, zone: str, hollow: bool = False
    ) -> settings.NodeConfig:
        node = settings.NodeConfig(name=name, index=index, zone=zone)
        if hollow:
            node = dataclasses.replace(
                node,
                cpu=settings.HOLLOW_CPU,
                memory=settings.HOLLOW_MEMORY,
                max_pods=settings.HOLLOW_MAX_PODS,
            )
        directory = self.layout.node_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        if hollow:
            (directory / HOLLOW).touch()
        node.save(directory / "node.json")
        return node

    def _start_agent(self, node: settings.NodeConfig) -> None:
        if processes.running(_agent_name(node.name), pids=self.layout.pids) is not None:
            return
        argv = [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            sys.executable,
            "-m",
            "gitquorum_testbed.agent",
            "--root",
            str(self.layout.root),
            "--node",
            node.name,
            *(["--hollow"] if self.is_hollow(node.name) else []),
        ]
        processes.start(
            _agent_name(node.name),
            argv,
            pids=self.layout.pids,
            logs=self.layout.logs,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def _bootstrap(self) -> None:
        """Objects a fresh cluster needs: the default local StorageClass."""
        configuration = client.Configuration()
        config.load_kube_config(str(self.layout.kubeconfig), client_configuration=configuration)
        storage = client.StorageV1Api(client.ApiClient(configuration))
        body = client.V1StorageClass(
            metadata=client.V1ObjectMeta(
                name=agent.STORAGE_CLASS,
                annotations={"storageclass.kubernetes.io/is-default-class": "true"},
            ),
            provisioner=agent.PROVISIONER,
            volume_binding_mode="WaitForFirstConsumer",
            reclaim_policy="Delete",
        )
        try:
            storage.create_storage_class(body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise


def _agent_name(node: str) -> str:
    return f"node-{node}" if not node.startswith("node-") else node


def _require_root() -> None:
    if os.geteuid() != 0:
        raise TestbedError(
            "the testbed needs root: it creates network namespaces, a bridge "
            "and mounts (run it with sudo, or as root in a VM or container)"
        )


def _say(message: str) -> None:
    print(f"testbed: {message}", file=sys.stderr, flush=True)
