"""``gitquorum replica``: one replica of a replicated repository (git server + replication)."""

import argparse
import asyncio
import json
import logging
import os
import pathlib
import socket

from gitquorum import errors
from gitquorum.commands import serve
from gitquorum.replication import (
    catchup,
    forwarding,
    hooks,
    leading,
    membership,
    metrics,
    peerapi,
    peerclient,
    pushing,
    replica,
    store,
)
from gitquorum.server import http, listening, repositories, settings, spawning

log = logging.getLogger(__name__)

LEAVE_SECONDS = 0.0
"""Outside Kubernetes nothing moves leadership on a stop: stop at once unless told to wait."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    timing = leading.Timing()
    parser.add_argument("--id", required=True, help="this replica's name among its peers")
    parser.add_argument(
        "--data", type=pathlib.Path, required=True, help="directory of the replica's repository"
    )
    parser.add_argument(
        "--name",
        default="repository",
        help="repository name; clients use <url>/<name>.git (default: %(default)s)",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="git server address"
    )
    parser.add_argument(
        "--peer-listen",
        default="127.0.0.1:8081",
        metavar="HOST:PORT",
        help="replication and admin API address (default: %(default)s)",
    )
    parser.add_argument(
        "--peer-token-file",
        type=pathlib.Path,
        required=True,
        help="file holding the token replicas of this repository share",
    )
    parser.add_argument(
        "--admin-token-file",
        type=pathlib.Path,
        help="file holding the controller's token (default: the peer token)",
    )
    parser.add_argument(
        "--configuration",
        type=pathlib.Path,
        help="JSON configuration (term, leader, members) to start with",
    )
    parser.add_argument("--auth-file", type=pathlib.Path, help="users and hashed tokens")
    parser.add_argument("--anonymous-read", action="store_true", help="clone without credentials")
    parser.add_argument(
        "--leader-lease", type=float, default=timing.leader_lease, help="seconds (%(default)s)"
    )
    parser.add_argument(
        "--follower-lease", type=float, default=timing.follower_lease, help="seconds (%(default)s)"
    )
    parser.add_argument(
        "--heartbeat", type=float, default=timing.heartbeat, help="seconds (%(default)s)"
    )
    parser.add_argument(
        "--prepare-timeout", type=float, default=timing.prepare, help="seconds (%(default)s)"
    )
    parser.add_argument(
        "--handoff-resume",
        type=float,
        default=timing.handoff,
        help="seconds a leader that handed off waits for the new term before it takes writes "
        "again (%(default)s)",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=forwarding.HOLD_SECONDS,
        help="seconds a request is held while the leader changes before it is refused "
        "(%(default)s)",
    )
    parser.add_argument(
        "--leave-timeout",
        type=float,
        default=LEAVE_SECONDS,
        help="on SIGTERM, seconds a leader waits for its controller to move leadership away "
        "before it stops (%(default)s; the operator sets it, below the pod's "
        "terminationGracePeriodSeconds)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )


def _token(path: pathlib.Path, what: str) -> str:
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise errors.ConfigError(f"cannot read the {what} token: {error}") from error
    if len(token) < 16:
        raise errors.ConfigError(f"the {what} token in {path} is shorter than 16 characters")
    return token


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=serve.LOG_FORMAT)
    if args.auth_file is None and not args.anonymous_read:
        raise errors.ConfigError(
            "nobody could use the replica: give --auth-file or --anonymous-read"
        )
    peer_token = _token(args.peer_token_file, "peer")
    admin_token = _token(args.admin_token_file, "admin") if args.admin_token_file else peer_token
    timing = leading.Timing(
        leader_lease=args.leader_lease,
        follower_lease=args.follower_lease,
        heartbeat=args.heartbeat,
        prepare=args.prepare_timeout,
        handoff=args.handoff_resume,
    )
    configuration = None
    if args.configuration is not None:
        configuration = membership.Configuration.from_json(
            json.loads(args.configuration.read_text())
        )
    args.data.mkdir(parents=True, exist_ok=True)
    sockets = []
    for address in (args.listen, args.peer_listen):
        host, port = settings.parse_listen(address)
        try:
            sockets.append(listening.bind(host, port))
        except OSError as error:
            raise errors.ConfigError(f"cannot listen on {address}: {error}") from error
    asyncio.run(
        _main(
            args,
            peer_token=peer_token,
            admin_token=admin_token,
            timing=timing,
            configuration=configuration,
            sockets=sockets,
        )
    )
    return 0


async def _main(
    args: argparse.Namespace,
    *,
    peer_token: str,
    admin_token: str,
    timing: leading.Timing,
    configuration: membership.Configuration | None,
    sockets: list[socket.socket],
) -> None:
    data: pathlib.Path = args.data.resolve()
    root = data / "repositories"
    name = args.name.removesuffix(".git")
    repository = repositories.Repository(name=f"{name}.git", path=root / f"{name}.git")
    options = settings.GitOptions()
    limits = settings.Limits()
    hook = hooks.install(data / "hooks")
    runner = spawning.GitRunner(
        options, limits, environment=dict(os.environ), config=store.git_config(hook.parent)
    )
    local = store.Store(
        data, repository=repository.path, runner=runner, default_branch=options.default_branch
    )
    await local.open()
    channels = data / "run" / "pushes"
    answered = hooks.answer_abandoned(channels)
    if answered:
        log.info("answered %s pushes left waiting by the previous run", answered)
    peers = peerclient.Peers(token=peer_token, timeout=timing.message)
    copier = catchup.Copier(
        local, peers=peers, token=peer_token, git=options.executable, environment=os.environ
    )
    member = replica.Replica(
        replica=args.id, local=local, peers=peers, copier=copier, timing=timing
    )
    forwarder = forwarding.Forwarder(member, hold=args.hold)
    server_settings = settings.ServerSettings(
        root=root,
        access=settings.Access(auth_file=args.auth_file, anonymous_read=args.anonymous_read),
        limits=limits,
        git=options,
    )
    server = http.Server(
        server_settings,
        environment=os.environ,
        runner=runner,
        write_path=pushing.ReplicatedWritePath(runner, member, channels),
        middlewares=(forwarder.middleware,),
        # Ready also while the leader changes: requests are held then, not refused, and a
        # Service with no ready replica for that moment would refuse every client.
        not_ready=lambda: (
            None if member.readable or member.in_transition else _why_not_ready(member)
        ),
    )
    server.authenticator.load()
    server.metrics.gauges.extend(metrics.gauges(member.report))
    api = peerapi.PeerApi(
        member,
        git=server.services,
        repository=repository,
        peer_token=peer_token,
        admin_token=admin_token,
    )
    if configuration is not None:
        await member.configure(configuration)
    try:
        await listening.serve_many(
            [(server.application(), sockets[0]), (api.application(), sockets[1])],
            server=server,
            started=f"replica {args.id} serving {args.name}",
            before_stop=lambda: member.leave(args.leave_timeout),
        )
    finally:
        await member.close()
        await forwarder.close()


def _why_not_ready(member: replica.Replica) -> str:
    status = member.status()
    return f"replica {member.id} is {status['role'].lower()}, {status['state']}, not readable"
