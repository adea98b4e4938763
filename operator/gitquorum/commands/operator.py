"""run the Kubernetes operator: GitRepository objects become replicated repositories"""

import argparse
import asyncio
import logging
import os
import signal
import socket

from gitquorum import errors
from gitquorum.server import settings as server_settings

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube)")
    parser.add_argument(
        "--image", required=True, help="container image of the replica pods (this image)"
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease that elects the acting instance (default: $POD_NAMESPACE)",
    )
    parser.add_argument("--lease-name", default="gitquorum-operator", help="(%(default)s)")
    parser.add_argument(
        "--identity",
        default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        help="this instance's name in the Lease (default: $POD_NAME)",
    )
    parser.add_argument(
        "--metrics-listen", default="0.0.0.0:8080", metavar="HOST:PORT", help="/metrics, /healthz"
    )
    parser.add_argument(
        "--node-loss-grace",
        type=float,
        default=20.0,
        help="seconds a node may be NotReady before its replicas are rebuilt elsewhere",
    )
    parser.add_argument(
        "--leader-timeout",
        type=float,
        default=3.0,
        help="seconds without an answer from a leader before another is chosen",
    )
    parser.add_argument(
        "--max-concurrent-updates",
        type=int,
        default=2,
        help="repositories whose replicas roll at the same time, so that an operator upgrade "
        "never restarts every repository together (%(default)s)",
    )
    parser.add_argument(
        "--max-maintenance-per-node",
        type=int,
        default=1,
        help="replicas of repositories with a maintenance window that maintain or scrub on one "
        "node at a time (%(default)s)",
    )
    parser.add_argument(
        "--trace-memory",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace Python allocations with this many frames each and serve where the memory "
        "goes at /debug/memory on the metrics port; costs memory and CPU (0: off, the default)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    # The Kubernetes client logs every request at DEBUG: too much even when debugging us.
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if args.node_loss_grace <= 0 or args.leader_timeout <= 0:
        raise errors.ConfigError("--node-loss-grace and --leader-timeout must be positive")
    if args.trace_memory < 0:
        raise errors.ConfigError("--trace-memory must be 0 (off) or a number of frames")
    if args.max_concurrent_updates < 1 or args.max_maintenance_per_node < 1:
        raise errors.ConfigError(
            "--max-concurrent-updates and --max-maintenance-per-node must be at least 1"
        )
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's own login reads it
    host, port = server_settings.parse_listen(args.metrics_listen)
    from gitquorum.kube import running  # the Kubernetes client loads only for this command

    return asyncio.run(
        running.operate(
            running.Options(
                namespaces=tuple(args.namespace),
                kubeconfig=args.kubeconfig,
                image=args.image,
                lease_namespace=args.lease_namespace,
                lease_name=args.lease_name,
                identity=args.identity,
                metrics_host=host,
                metrics_port=port,
                node_loss_grace=args.node_loss_grace,
                leader_timeout=args.leader_timeout,
                max_concurrent_updates=args.max_concurrent_updates,
                max_maintenance_per_node=args.max_maintenance_per_node,
                trace_memory=args.trace_memory,
            ),
            signals=(signal.SIGTERM, signal.SIGINT),
        )
    )
