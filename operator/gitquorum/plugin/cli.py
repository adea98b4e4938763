"""``kubectl-gitquorum``: the kubectl plugin's entry point.

kubectl runs ``kubectl-gitquorum status NAME ...`` for ``kubectl gitquorum status NAME ...``
when the program is on the PATH (the package installs it). The flags kubectl users expect
come along: ``-n``, ``--kubeconfig``, ``--context``, and ``-o json`` for scripts. Errors are
one line on stderr and exit status 1; a wrong command line exits 2, as argparse does.
"""

import argparse
import datetime
import os
import sys
from collections.abc import Sequence

from gitquorum import __version__, errors
from gitquorum.plugin import gathering, rendering, summary

PROG = "kubectl gitquorum"
DEFAULT_EVENTS = 10


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG, description="Replicated git repositories (gitquorum.io) at a glance."
    )
    top.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = commands.add_parser(
        "status",
        help="a GitRepository's leader, term, conditions, replicas and last events",
        description="A GitRepository's leader, term, generation and conditions; each "
        "replica's role, state, node, zone, generation, lag behind the leader and revision; "
        "and its last events (the operator's decisions).",
    )
    status.add_argument("name", metavar="NAME", help="the GitRepository's name")
    status.add_argument("-n", "--namespace", help="its namespace (default: the context's)")
    status.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="%(choices)s"
    )
    status.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube)")
    status.add_argument("--context", help="kubeconfig context (default: the current one)")
    status.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        metavar="N",
        help="how many of the newest events to show (default: %(default)s)",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        # An empty KUBECONFIG means none, as for kubectl.
        kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or None
        return show_status(args, kubeconfig=kubeconfig)
    except errors.GitquorumError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def show_status(args: argparse.Namespace, *, kubeconfig: str | None) -> int:
    connection = gathering.connect(kubeconfig=kubeconfig, context=args.context)
    snapshot = gathering.gather(
        gathering.KubeReader(connection),
        namespace=args.namespace or connection.namespace,
        name=args.name,
    )
    status = summary.summarize(snapshot, events=args.events)
    if args.output == "json":
        sys.stdout.write(rendering.as_json(status))
    else:
        sys.stdout.write(rendering.as_text(status, now=datetime.datetime.now(datetime.UTC)))
    return 0
