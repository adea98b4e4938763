"""The operator on the testbed: time to Ready, healing after node loss, failover, scale.

One run brings the testbed up with at least four worker nodes (a lost replica needs a free
node), installs the chart as ``make demo`` does (the operator alone on the tainted
``node-system``, node-loss grace 10 s), and runs each scenario in a namespace of its own,
deleted afterwards:

- ready (``operator_startup``): ``kubectl apply`` of a 3-replica GitRepository to Ready,
  against a 3-replica StatefulSet of the standalone server to 3 pods Ready; target 30 s;
- heal and failover (``operator_loss``): a follower's node stopped, until its replacement is
  in sync (target 60 s plus the copy time); the leader's node stopped under a push loop, until
  a push succeeds again (target 15 s);
- scale and memory (``operator_scale``): ``--operator-repositories`` GitRepositories on hollow
  nodes until their pods and claims exist (target 120 s for 300), against the same objects
  created directly; the operator's resident memory (target 200 MB).

Ratios: ready and scale are ours / reference; heal, failover and memory are measured /
target, as there is no reference system for them. Lower is better; a ratio against a target
above 1 misses it.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

from bench import kube, operator_loss, operator_scale, operator_startup
from gitquorum_testbed import binaries, cluster, install

NODE_LOSS_GRACE = 10
"""Seconds a node may be NotReady before the operator rebuilds its replicas (as make demo)."""
WORKERS = 4
"""Worker nodes: a lost replica needs a free node to be rebuilt on."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operator")
    group.add_argument(
        "--operator-repositories",
        type=int,
        default=300,
        help="GitRepositories created on hollow nodes (default: %(default)s)",
    )
    group.add_argument(
        "--operator-rounds",
        type=int,
        default=3,
        help="apply-to-Ready measurements, each against a StatefulSet (default: %(default)s)",
    )
    group.add_argument(
        "--operator-data-mib",
        type=int,
        default=4,
        help="MiB pushed before a follower's node is stopped (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    started = time.monotonic()
    bed, api = installed()
    ready = operator_startup.measure(api, args.operator_rounds)
    heal = operator_loss.follower(bed, api, args.operator_data_mib)
    failover = operator_loss.leader(bed, api)
    scale = operator_scale.measure(bed, api, args.operator_repositories)
    return _report(ready, heal, failover, scale, time.monotonic() - started)


def installed() -> tuple[cluster.Testbed, kube.Kube]:
    """The testbed (see ``testbed``), the chart installed as ``make demo`` does, and a fresh
    operator process that holds its Lease."""
    bed = testbed()
    api = kube.Kube(bed)
    print("   installing the chart and restarting the operator (on node-system)", flush=True)
    install.install_chart(bed, node_loss_grace=NODE_LOSS_GRACE)
    api.restart_operator()
    return bed, api


def testbed() -> cluster.Testbed:
    """The testbed up with WORKERS Ready worker nodes (not node-system, not hollow)."""
    root = Path(os.environ.get("GITQUORUM_TESTBED_ROOT", binaries.repo_root() / ".testbed"))
    bed = cluster.Testbed(root)
    bed.up(nodes=WORKERS, zones=3)
    for node in bed.node_configs():
        flags = bed.layout.node_dir(node.name)
        if (flags / "stopped").exists():
            bed.node_start(node.name)
        if (flags / "partitioned").exists():
            bed.node_heal(node.name)
    while len(_workers(bed)) < WORKERS:
        bed.node_add(None)
    print(f"   worker nodes: {', '.join(_workers(bed))}", flush=True)
    return bed


def _workers(bed: cluster.Testbed) -> list[str]:
    return [
        n.name
        for n in bed.node_configs()
        if n.name != install.SYSTEM_NODE and not bed.is_hollow(n.name)
    ]


def _report(
    ready: dict[str, list[float]],
    heal: operator_loss.Heal,
    failover: operator_loss.Failover,
    scale: operator_scale.Scale,
    wall: float,
) -> dict[str, float]:
    ours, reference = statistics.median(ready["operator"]), statistics.median(ready["statefulset"])
    targets = {
        "ready": operator_startup.TARGET,
        "heal": operator_loss.HEAL_TARGET + heal.copy,
        "failover": operator_loss.FAILOVER_TARGET,
        "scale": operator_scale.TARGET_300 * scale.repositories / 300,
        "memory": operator_scale.RSS_TARGET_MB,
    }
    ratios = {
        "ready": ours / reference,
        "heal": heal.seconds / targets["heal"],
        "failover": failover.seconds / targets["failover"],
        "scale": scale.exist / scale.reference,
        "memory": scale.peak_mb / targets["memory"],
    }
    measured = {
        "ready": ours,
        "heal": heal.seconds,
        "failover": failover.seconds,
        "scale": scale.exist,
        "memory": scale.peak_mb,
    }
    verdicts = {key: "meets" if measured[key] <= targets[key] else "MISSES" for key in measured}
    every = ", ".join(
        f"{a:.1f}/{b:.1f}" for a, b in zip(ready["operator"], ready["statefulset"], strict=True)
    )
    rebuilding = f"{heal.rebuilding:.1f} s" if heal.rebuilding is not None else "not seen"
    settled = f"{scale.settled:.1f} s" if scale.settled is not None else "not within the limit"
    lines = [
        "summary (testbed on this machine; medians where several)",
        f"ready     GitRepository {ours:.1f} s, StatefulSet {reference:.1f} s: ratio "
        f"{ratios['ready']:.2f}; target {targets['ready']:.0f} s: {verdicts['ready']} "
        f"(rounds, ours/reference: {every})",
        f"heal      {heal.seconds:.1f} s from the node stop to the replacement InSync: ratio "
        f"{ratios['heal']:.2f} against the target {targets['heal']:.1f} s (60 s + copy): "
        f"{verdicts['heal']}",
        f"          copy of {heal.data_bytes / operator_loss.MIB:.0f} MiB: {heal.copy:.1f} s "
        f"from pod Running to InSync, {rebuilding} from Rebuilding/Behind to InSync",
        f"failover  writes back {failover.seconds:.1f} s after the stop: ratio "
        f"{ratios['failover']:.2f} against the target {targets['failover']:.0f} s: "
        f"{verdicts['failover']} (new leader in the status after {failover.elected:.1f} s, "
        f"{failover.failed_pushes} pushes failed meanwhile)",
        f"scale     {3 * scale.repositories} pods and claims of {scale.repositories} "
        f"GitRepositories exist after {scale.exist:.1f} s, created directly after "
        f"{scale.reference:.1f} s: ratio {ratios['scale']:.2f}; target "
        f"{targets['scale']:.0f} s: {verdicts['scale']}",
        f"          every object the operator makes for them after {scale.exist_all:.1f} s, "
        f"created directly after {scale.reference_all:.1f} s: ratio "
        f"{scale.exist_all / scale.reference_all:.2f}",
        f"          the API took the GitRepositories in {scale.created:.1f} s; every pod "
        f"scheduled and claim bound after {settled}",
        f"memory    operator peak RSS {scale.peak_mb:.0f} MB: ratio {ratios['memory']:.2f} "
        f"against the target {targets['memory']:.0f} MB: {verdicts['memory']} (RSS "
        f"{scale.rss_before_mb:.0f} MB before, {scale.rss_mb:.0f} MB when all existed, "
        f"{scale.rss_settled_mb:.0f} MB at the end)",
        f"          operator CPU {scale.cpu_seconds:.0f} s over the scenario, "
        f"{scale.passes:.0f} reconcile passes taking {scale.pass_seconds:.0f} s in all",
        f"wall time {wall:.0f} s",
    ]
    for line in lines:
        print(f"   {line}", flush=True)
    return ratios
