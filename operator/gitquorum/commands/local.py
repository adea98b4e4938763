"""``gitquorum local``: run a replicated repository as local processes, for tests and demos."""

import argparse
import asyncio
import logging
import pathlib
import signal

from gitquorum import errors
from gitquorum.commands import serve
from gitquorum.local import controller


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=3, help="how many (default: %(default)s)")
    parser.add_argument(
        "--dir", type=pathlib.Path, required=True, help="directory for data, logs, cluster.json"
    )
    parser.add_argument("--name", default="repository", help="repository name")
    parser.add_argument(
        "--links",
        action="store_true",
        help="relay all traffic so that DIR/cut/<id> can cut a replica off (fault tests)",
    )
    parser.add_argument(
        "--replica-argument",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every replica, e.g. --replica-argument=--leader-lease=1",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=serve.LOG_FORMAT)
    if not 1 <= args.replicas <= 7:
        raise errors.ConfigError("--replicas must be between 1 and 7")
    options = controller.Options(
        replicas=args.replicas,
        directory=args.dir,
        name=args.name,
        links=args.links,
        replica_arguments=tuple(args.replica_argument),
    )
    asyncio.run(_main(options))
    return 0


async def _main(options: controller.Options) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await controller.Controller(options).run(stop)
