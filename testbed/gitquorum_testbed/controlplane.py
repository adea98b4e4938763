"""Starting and stopping the real control plane: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, each a background process on loopback.
"""

from __future__ import annotations

import socket
import ssl
import urllib.request
from pathlib import Path

from gitquorum_testbed import pki, processes, settings

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# Short tolerations make node-loss tests finish in seconds: pods on a NotReady or unreachable
# node are evicted after this long instead of the default five minutes.
EVICTION_TOLERATION_SECONDS = 10
# How long the node-lifecycle controller waits for a heartbeat before marking a node NotReady
# (the default is 50 s; the issue asks for NotReady within 20 s of a node stop).
NODE_MONITOR_GRACE_SECONDS = 12
# How long a restarting API server gets to stop before it is killed. An API server being shut
# down stops listening at once but may wait a minute for its connections; a kubelet kills it
# after its pod's grace (30 s under kubeadm). Real defaults keep that outage inside the
# node-monitor grace, so a control-plane restart marks no node NotReady; the testbed keeps
# that order: this stop, the start and a client's reconnect back-off fit within the grace.
APISERVER_STOP_GRACE = 2.0


def start(*, layout: settings.Layout, bindir: Path, ports: settings.Ports) -> None:
    """Start every component that is not running and wait until each is healthy."""
    files = pki.ensure(layout.pki)
    write_kubeconfig(layout.kubeconfig, files=files, port=ports.apiserver)
    argvs = {
        "etcd": _etcd(layout, bindir, ports),
        "kube-apiserver": _apiserver(files, bindir, ports),
        "kube-controller-manager": _controller_manager(layout, files, bindir),
        "kube-scheduler": _scheduler(layout, bindir),
    }
    addresses = {
        "etcd": ("127.0.0.1", ports.etcd_client),
        "kube-apiserver": (str(settings.BRIDGE_ADDRESS), ports.apiserver),
        "kube-controller-manager": ("127.0.0.1", ports.controller_manager),
        "kube-scheduler": ("127.0.0.1", ports.scheduler),
    }
    for name in COMPONENTS:
        if processes.running(name, pids=layout.pids) is None:
            _require_free(name, *addresses[name])
            processes.start(name, argvs[name], pids=layout.pids, logs=layout.logs)
        _wait_healthy(name, layout=layout, files=files, ports=ports)


def stop(*, layout: settings.Layout) -> None:
    for name in reversed(COMPONENTS):
        processes.stop(name, pids=layout.pids, grace=10)


def _require_free(name: str, host: str, port: int) -> None:
    """Fail clearly when another testbed (another checkout's, say) holds our ports."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise processes.ProcessError(
                f"cannot start {name}: {host}:{port} is in use ({exc.strerror}). Another "
                "testbed may be running from another directory: stop it there with "
                "`gitquorum-testbed down`."
            ) from exc


def write_kubeconfig(path: Path, *, files: pki.Files, port: int) -> None:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: https://{settings.BRIDGE_ADDRESS}:{port}
    certificate-authority: {files.ca_cert}
users:
- name: admin
  user:
    client-certificate: {files.admin_cert}
    client-key: {files.admin_key}
contexts:
- name: testbed
  context: {{cluster: testbed, user: admin}}
current-context: testbed
"""
    )


def _etcd(layout: settings.Layout, bindir: Path, ports: settings.Ports) -> list[str]:
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        str(bindir / "etcd"),
        "--name=testbed",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=testbed={peer}",
        "--listen-metrics-urls=",
        # The testbed trades durability of its own etcd for speed: a crash loses the cluster,
        # which a test bed can afford. gitquorum's own durability is tested in its replicas.
        "--unsafe-no-fsync",
        "--quota-backend-bytes=4294967296",
        "--log-level=warn",
    ]


def _apiserver(files: pki.Files, bindir: Path, ports: settings.Ports) -> list[str]:
    return [
        str(bindir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        f"--secure-port={ports.apiserver}",
        # Only on the bridge address: a wildcard bind would also take <any ClusterIP>:6443,
        # since the whole service range is local on the host.
        f"--bind-address={settings.BRIDGE_ADDRESS}",
        f"--advertise-address={settings.BRIDGE_ADDRESS}",
        f"--tls-cert-file={files.apiserver_cert}",
        f"--tls-private-key-file={files.apiserver_key}",
        f"--client-ca-file={files.ca_cert}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={files.sa_pub}",
        f"--service-account-signing-key-file={files.sa_key}",
        "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={settings.SERVICE_RANGE}",
        f"--default-not-ready-toleration-seconds={EVICTION_TOLERATION_SECONDS}",
        f"--default-unreachable-toleration-seconds={EVICTION_TOLERATION_SECONDS}",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def _controller_manager(layout: settings.Layout, files: pki.Files, bindir: Path) -> list[str]:
    return [
        str(bindir / "kube-controller-manager"),
        f"--kubeconfig={layout.kubeconfig}",
        f"--authentication-kubeconfig={layout.kubeconfig}",
        f"--authorization-kubeconfig={layout.kubeconfig}",
        f"--service-account-private-key-file={files.sa_key}",
        f"--root-ca-file={files.ca_cert}",
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--node-monitor-period=1s",
        f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
        "--profiling=false",
        "--v=1",
    ]


def _scheduler(layout: settings.Layout, bindir: Path) -> list[str]:
    return [
        str(bindir / "kube-scheduler"),
        f"--kubeconfig={layout.kubeconfig}",
        f"--authentication-kubeconfig={layout.kubeconfig}",
        f"--authorization-kubeconfig={layout.kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--profiling=false",
        "--v=1",
    ]


def _wait_healthy(
    name: str, *, layout: settings.Layout, files: pki.Files, ports: settings.Ports
) -> None:
    urls = {
        "etcd": f"http://127.0.0.1:{ports.etcd_client}/health",
        "kube-apiserver": f"https://{settings.BRIDGE_ADDRESS}:{ports.apiserver}/readyz",
        "kube-controller-manager": f"https://127.0.0.1:{ports.controller_manager}/healthz",
        "kube-scheduler": f"https://127.0.0.1:{ports.scheduler}/healthz",
    }
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    context.load_cert_chain(str(files.admin_cert), str(files.admin_key))
    if name in ("kube-controller-manager", "kube-scheduler"):
        # Their health ports serve self-signed certificates.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def healthy() -> bool:
        if processes.running(name, pids=layout.pids) is None:
            raise processes.ProcessError(f"{name} exited")
        with urllib.request.urlopen(urls[name], context=context, timeout=2) as response:
            return bool(response.status == 200)

    processes.wait_until(
        f"{name} to be healthy", healthy, timeout=90, log=layout.logs / f"{name}.log"
    )
