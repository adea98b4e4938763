"""The ``gitquorum`` command line: one subcommand per job, each in its own module.

Subcommands live in ``gitquorum.commands``; each module there has a one-line docstring (its
help text), ``add_arguments(parser)`` and ``run(args) -> int``. Only the module of the
subcommand being run is imported, so ``gitquorum serve`` never pays for what another
subcommand (the operator's Kubernetes client, say) would load. Adding a subcommand is adding
a module and a line to :data:`COMMANDS`.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from gitquorum import __version__, allocator, errors

COMMANDS: dict[str, str] = {
    "serve": "serve every bare repository under a directory over smart HTTP",
    "passwd": "add or replace a user of an auth file, reading the token from stdin",
    "replica": "run one replica of a replicated repository: git server and replication",
    "local": "run a replicated repository as local processes, for tests and demos",
    "operator": "run the Kubernetes operator for GitRepository objects",
}
"""Subcommand name -> help summary; the module is ``gitquorum.commands.<name>``."""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the subcommand named in ``argv`` and returns the process exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="gitquorum", description="Replicated git repositories on Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"gitquorum {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(arguments)
    module: ModuleType | None = None
    for name, summary in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=summary, description=summary)
        if name == chosen:
            module = importlib.import_module(f"gitquorum.commands.{name}")
            module.add_arguments(subparser)
    args = parser.parse_args(arguments)
    assert module is not None  # argparse has refused any other command name
    allocator.fix_mmap_threshold()
    try:
        status: int = module.run(args)
    except errors.ConfigError as error:
        print(f"gitquorum {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


def _chosen(arguments: Sequence[str]) -> str | None:
    """The subcommand name: the first argument that is not an option."""
    return next((argument for argument in arguments if not argument.startswith("-")), None)
