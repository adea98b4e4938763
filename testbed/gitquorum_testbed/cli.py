"""``gitquorum-testbed``: a real Kubernetes control plane with simulated nodes, on one machine.

    gitquorum-testbed up [--nodes N] [--zones Z]   start everything (idempotent)
    gitquorum-testbed env                          exports: KUBECONFIG, PATH, GITQUORUM_S3_*, AWS_*
    gitquorum-testbed status
    gitquorum-testbed logs POD [-n NAMESPACE] [-c CONTAINER]
    gitquorum-testbed down [--keep-state]
    gitquorum-testbed node stop|start|partition|heal|remove NAME
    gitquorum-testbed node add [--hollow] [NAME]

State lives under ``.testbed/`` (or ``--root`` / ``$GITQUORUM_TESTBED_ROOT``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gitquorum_testbed import binaries, cluster, processes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gitquorum-testbed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("GITQUORUM_TESTBED_ROOT", ".testbed")),
        help="state directory (default .testbed, or $GITQUORUM_TESTBED_ROOT)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the control plane and the nodes")
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--zones", type=int, default=3, help="zones to spread them over (default 3)")
    sub.add_parser("env", help="print shell exports for the pinned kubectl and helm")
    sub.add_parser("status", help="what runs")
    down = sub.add_parser("down", help="stop everything and remove the state")
    down.add_argument(
        "--keep-state", action="store_true", help="keep etcd data and volumes for a later up"
    )
    logs = sub.add_parser("logs", help="a container's output (what kubectl logs would show)")
    logs.add_argument("pod")
    logs.add_argument("-n", "--namespace", default="default")
    logs.add_argument("-c", "--container", default=None)
    node = sub.add_parser("node", help="failure injection and growth")
    node_sub = node.add_subparsers(dest="action", required=True)
    for action, text in (
        ("stop", "power loss: processes die, heartbeats stop"),
        ("start", "power back on, with its disks"),
        ("partition", "cut its network; processes keep running"),
        ("heal", "restore its network"),
        ("remove", "the node leaves for good: agent, disks and Node object"),
    ):
        node_sub.add_parser(action, help=text).add_argument("name")
    add = node_sub.add_parser("add", help="a new empty node joins")
    add.add_argument("name", nargs="?")
    add.add_argument(
        "--hollow",
        action="store_true",
        help="a node that is Ready and binds volumes but never runs its pods (for benchmarks)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    testbed = cluster.Testbed(args.root)
    try:
        return _dispatch(testbed, args)
    except (cluster.TestbedError, processes.ProcessError, binaries.BinariesMissing) as exc:
        print(f"gitquorum-testbed: {exc}", file=sys.stderr)
        return 1


def _dispatch(testbed: cluster.Testbed, args: argparse.Namespace) -> int:
    if args.command == "up":
        if args.nodes < 1 or args.zones < 1:
            raise cluster.TestbedError("--nodes and --zones must be at least 1")
        testbed.up(nodes=args.nodes, zones=args.zones)
        print(f'testbed is up. Use it with:\n  eval "$({sys.argv[0]} env)"\n  kubectl get nodes')
    elif args.command == "env":
        print(testbed.env(), end="")
    elif args.command == "status":
        print("\n".join(testbed.status()))
    elif args.command == "logs":
        path = testbed.log_path(args.namespace, args.pod, args.container)
        if not path.exists():
            raise cluster.TestbedError(f"no output yet ({path})")
        sys.stdout.write(path.read_text(errors="replace"))
    elif args.command == "down":
        testbed.down(keep_state=args.keep_state)
    elif args.command == "node":
        if args.action == "add":
            node = testbed.node_add(args.name, hollow=args.hollow)
            kind = "hollow node" if args.hollow else "node"
            print(f"{kind} {node.name} joined (zone {node.zone})")
        else:
            getattr(testbed, f"node_{args.action}")(args.name)
            print(f"node {args.name}: {args.action} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
