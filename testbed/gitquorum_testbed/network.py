"""The testbed's network: one bridge on the host, one network namespace per pod.

Every pod gets a network namespace of its own (held by a sandbox process, as a pause container
holds it) with one veth leg on the host bridge ``gqbr0`` and an address from its node's /24 of
``10.244.0.0/16``. Pods reach each other on the bridge and reach Services through the host,
where the testbed's service proxy listens on every ClusterIP (the whole service range is a
``local`` route on the host, so packets for it are delivered, never routed).

The network rule: nothing here may send a packet to any address outside loopback and these
ranges. Pod namespaces get no default route (a connection anywhere else fails with ENETUNREACH),
the host never forwards, and both ranges are blackholed on the host so that a packet for them
cannot leave the machine even while the bridge is down.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from pathlib import Path

from gitquorum_testbed import settings

# Metric of the safety blackholes: higher than the bridge's own connected route, so they only
# take effect when that route is gone.
BLACKHOLE_METRIC = 4000
# Host-side veth names carry the node index so that a partition can find a node's links.
VETH_PREFIX = "gq"


class NetworkError(RuntimeError):
    """An `ip` command failed."""


def ip(*args: str, netns_pid: int | None = None, check: bool = True) -> str:
    argv: list[str] = ["ip", *args]
    if netns_pid is not None:
        argv = ["nsenter", f"--net=/proc/{netns_pid}/ns/net", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def setup_host() -> None:
    """Create the bridge and the routes; idempotent."""
    for cidr in (settings.POD_RANGE, settings.SERVICE_RANGE):
        if f"blackhole {cidr}" not in ip("route", "show", "table", "main"):
            ip("route", "add", "blackhole", str(cidr), "metric", str(BLACKHOLE_METRIC))
    if not _exists(settings.BRIDGE_NAME):
        ip("link", "add", settings.BRIDGE_NAME, "type", "bridge")
    # Without an address of its own the bridge would take the lowest MAC among the pods' veths,
    # changing whenever one comes or goes: every pod would keep sending to the gateway's old
    # MAC until its neighbour entry is probed again (5-8 s without Services or the API).
    ip("link", "set", settings.BRIDGE_NAME, "address", settings.BRIDGE_MAC)
    prefix = settings.POD_RANGE.prefixlen
    address = f"{settings.BRIDGE_ADDRESS}/{prefix}"
    if address not in ip("-o", "addr", "show", "dev", settings.BRIDGE_NAME):
        ip("addr", "add", address, "dev", settings.BRIDGE_NAME)
    ip("link", "set", settings.BRIDGE_NAME, "up")
    if str(settings.SERVICE_RANGE) not in ip("route", "show", "table", "local", "type", "local"):
        ip("route", "add", "local", str(settings.SERVICE_RANGE), "dev", "lo", "table", "local")


def teardown_host() -> None:
    """Remove everything ``setup_host`` and the pods created; safe when already gone."""
    for link in host_veths():
        ip("link", "del", link, check=False)
    ip("link", "del", settings.BRIDGE_NAME, check=False)
    ip(
        "route",
        "del",
        "local",
        str(settings.SERVICE_RANGE),
        "dev",
        "lo",
        "table",
        "local",
        check=False,
    )
    for cidr in (settings.POD_RANGE, settings.SERVICE_RANGE):
        ip("route", "del", "blackhole", str(cidr), "metric", str(BLACKHOLE_METRIC), check=False)


def host_veths(node_index: int | None = None) -> list[str]:
    """Host-side veth legs of pods, of one node or all."""
    prefix = VETH_PREFIX if node_index is None else f"{VETH_PREFIX}{node_index}x"
    links = []
    for line in ip("-o", "link", "show").splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if name.startswith(prefix) and name != settings.BRIDGE_NAME:
            links.append(name)
    return links


def veth_name(node_index: int, pod_address: str) -> str:
    """At most 15 characters (IFNAMSIZ), unique per pod address: e.g. ``gq3x17``."""
    return f"{VETH_PREFIX}{node_index}x{pod_address.rsplit('.', 1)[1]}"


def attach_pod(*, sandbox_pid: int, node_index: int, address: str) -> str:
    """Give the sandbox's namespace an ``eth0`` on the bridge with ``address``."""
    host_leg = veth_name(node_index, address)
    ip("link", "del", host_leg, check=False)
    # Addresses are reused as pods come and go, and every pod shares one L2 segment: with a
    # random MAC per pod, the host and other pods would keep the previous owner's MAC for the
    # address in their neighbour caches and send into the void until the entry is probed
    # again (30 s and more). A gratuitous ARP does not help: sent as eth0 comes up, before
    # the veth's queue is active, it is dropped. So the MAC follows from the address.
    ip(
        "link",
        "add",
        host_leg,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "address",
        pod_mac(address),
        "netns",
        str(sandbox_pid),
    )
    ip("link", "set", host_leg, "master", settings.BRIDGE_NAME)
    ip("link", "set", host_leg, "up")
    prefix = settings.POD_RANGE.prefixlen
    for args in (
        ("link", "set", "lo", "up"),
        ("addr", "add", f"{address}/{prefix}", "dev", "eth0"),
        ("link", "set", "eth0", "up"),
        ("route", "add", str(settings.SERVICE_RANGE), "via", str(settings.BRIDGE_ADDRESS)),
    ):
        ip(*args, netns_pid=sandbox_pid)
    return host_leg


def pod_mac(address: str) -> str:
    """A locally administered unicast MAC carrying the pod's IPv4 address: ``0a:58:0a:f4:01:02``."""
    return "0a:58:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))


def detach_pod(host_leg: str) -> None:
    ip("link", "del", host_leg, check=False)


def set_links(links: Sequence[str], *, up: bool) -> None:
    for link in links:
        with contextlib.suppress(NetworkError):
            ip("link", "set", link, "up" if up else "down")


def testbed_routes() -> list[str]:
    """Routes for the testbed's ranges, in any table."""
    ranges = (str(settings.POD_RANGE), str(settings.SERVICE_RANGE))
    return [
        line.strip()
        for line in ip("route", "show", "table", "all").splitlines()
        if any(r in line for r in ranges)
    ]


def sandbox_processes() -> list[str]:
    """Pod sandboxes still alive (they would hold a namespace with an address of ours)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[:4] == [b"unshare", b"--net", b"sleep", b"infinity"]:
            found.append(proc.name)
    return found


def link_exists(link: str) -> bool:
    return _exists(link)


def _exists(link: str) -> bool:
    return (
        subprocess.run(["ip", "link", "show", link], capture_output=True, check=False).returncode
        == 0
    )
