"""``gitquorum serve``: serve every bare repository under a directory over smart HTTP."""

import argparse
import asyncio
import logging
import os
import pathlib
import shutil
import socket

from gitquorum import errors
from gitquorum.server import creating, http, listening, repositories, settings, ssh

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = settings.Limits()
    parser.add_argument(
        "--root",
        type=pathlib.Path,
        required=True,
        help="directory whose bare repositories are served",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks one (default: %(default)s)",
    )
    parser.add_argument(
        "--auth-file", type=pathlib.Path, help="users and hashed tokens (see gitquorum passwd)"
    )
    parser.add_argument(
        "--anonymous-read", action="store_true", help="allow clone and fetch without credentials"
    )
    parser.add_argument(
        "--create-on-push",
        action="store_true",
        help="create a missing repository when an authorised user pushes to it",
    )
    parser.add_argument(
        "--max-git-processes",
        type=int,
        default=defaults.max_git_processes,
        help="git processes at once (default: %(default)s)",
    )
    parser.add_argument(
        "--max-push-bytes",
        type=int,
        default=defaults.max_push_bytes,
        help="largest push body in bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout,
        help="seconds one git request may take (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        help="seconds to wait for more of a request body (default: %(default)s)",
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=defaults.queue_timeout,
        help="seconds to wait for a free git slot (default: %(default)s)",
    )
    parser.add_argument(
        "--no-fsck", action="store_true", help="accept pushed objects without git's fsck checks"
    )
    add_ssh_arguments(parser)
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )


def add_ssh_arguments(parser: argparse.ArgumentParser) -> None:
    """The SSH transport's options (``server/ssh.py``), shared with ``gitquorum replica``."""
    group = parser.add_argument_group("git over SSH (off unless --ssh-port is given)")
    group.add_argument(
        "--ssh-port",
        type=int,
        metavar="PORT",
        help="serve git over SSH on this port of the listen address; 0 picks one",
    )
    group.add_argument(
        "--ssh-host-key", type=pathlib.Path, metavar="FILE", help="OpenSSH private host key"
    )
    group.add_argument(
        "--ssh-keys-file",
        type=pathlib.Path,
        metavar="FILE",
        help="keys allowed in, one a line: read|write <type> <base64> [comment]; reloaded "
        "when it changes",
    )


def ssh_settings(args: argparse.Namespace) -> settings.SshSettings:
    """The SSH settings the arguments describe, checked."""
    if args.ssh_port is None:
        if args.ssh_host_key is not None or args.ssh_keys_file is not None:
            raise errors.ConfigError("--ssh-host-key and --ssh-keys-file need --ssh-port")
        return settings.SshSettings()
    if not 0 <= args.ssh_port <= 65535:
        raise errors.ConfigError(f"--ssh-port wants a port number, got {args.ssh_port}")
    if args.ssh_host_key is None or args.ssh_keys_file is None:
        raise errors.ConfigError("--ssh-port needs --ssh-host-key and --ssh-keys-file")
    return settings.SshSettings(
        port=args.ssh_port, host_key=args.ssh_host_key, keys_file=args.ssh_keys_file
    )


def settings_from(args: argparse.Namespace) -> settings.ServerSettings:
    """The server settings the arguments describe, checked."""
    host, port = settings.parse_listen(args.listen)
    root: pathlib.Path = args.root
    repositories.check_root(root, create=args.create_on_push)
    if args.auth_file is None and not args.anonymous_read and args.ssh_port is None:
        raise errors.ConfigError(
            "nobody could use the server: give --auth-file or --anonymous-read"
        )
    if args.max_git_processes < 1:
        raise errors.ConfigError("--max-git-processes must be at least 1")
    limits = settings.Limits(
        max_push_bytes=args.max_push_bytes,
        max_git_processes=args.max_git_processes,
        request_timeout=args.request_timeout,
        idle_timeout=args.idle_timeout,
        queue_timeout=args.queue_timeout,
    )
    access = settings.Access(
        auth_file=args.auth_file,
        anonymous_read=args.anonymous_read,
        create_on_push=args.create_on_push,
    )
    git = settings.GitOptions(fsck_objects=not args.no_fsck)
    if shutil.which(git.executable) is None:
        raise errors.ConfigError(f"{git.executable} not found in PATH")
    return settings.ServerSettings(
        root=root,
        host=host,
        port=port,
        access=access,
        limits=limits,
        git=git,
        ssh=ssh_settings(args),
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    config = settings_from(args)
    server = http.Server(config, environment=dict(os.environ))
    server.authenticator.load()
    for path in creating.remove_abandoned(config.root):
        log.info("removed %s, a repository whose creating push never finished", path)
    owner = repositories.foreign_owner(config.root)
    if owner is not None:
        log.info(
            "root %s belongs to uid %s, this server runs as uid %s: its repositories are "
            "served all the same (git's safe.directory is set for each); pushes need write "
            "permission in them",
            config.root,
            owner,
            os.geteuid(),
        )
    if config.access.auth_file is None:
        log.warning("no --auth-file: anonymous read only, every push is refused")
    try:
        sock = listening.bind(config.host, config.port)
    except OSError as error:
        raise errors.ConfigError(f"cannot listen on {args.listen}: {error}") from error
    asyncio.run(_serve(server, sock))
    return 0


async def _serve(server: http.Server, sock: socket.socket) -> None:
    """The HTTP server, and the SSH server beside it when asked for."""
    secure_shell = None
    if server.settings.ssh.port is not None:
        secure_shell = ssh.SshServer(
            server.settings,
            services=server.services,
            runner=server.runner,
            resolver=server.resolver,
            server_metrics=server.metrics,
        )
        await secure_shell.start()
    try:
        await listening.serve(server, sock)
    finally:
        if secure_shell is not None:
            await secure_shell.close()
