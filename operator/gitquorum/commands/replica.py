"""``gitquorum replica``: one replica of a replicated repository (git server + replication)."""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import pathlib
import socket
import urllib.parse

from gitquorum import errors
from gitquorum.commands import serve
from gitquorum.replication import (
    archiving,
    catchup,
    forwarding,
    hooks,
    leading,
    maintenance,
    membership,
    metrics,
    notifying,
    peerapi,
    peerclient,
    protection,
    pushing,
    replica,
    store,
    upkeep,
    webhooks,
)
from gitquorum.server import http, listening, repositories, settings, spawning, ssh

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
    parser.add_argument(
        "--policy-file",
        type=pathlib.Path,
        help="protected refs (JSON, reloaded when it changes; see replication/protection.py)",
    )
    parser.add_argument(
        "--notifications-file",
        type=pathlib.Path,
        help="webhooks told of every acknowledged push (JSON, reloaded when it changes; see "
        "replication/notifying.py)",
    )
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
        "--stop-delay",
        type=float,
        default=0.0,
        help="on SIGTERM, seconds the replica reports not ready but still accepts connections, "
        "so that Service endpoints drop it before it stops listening (%(default)s; the "
        "operator sets it)",
    )
    serve.add_ssh_arguments(parser)
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    _add_upkeep_arguments(parser)


def _add_upkeep_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = maintenance.Settings()
    group = parser.add_argument_group("maintenance and integrity (docs/architecture.md, Upkeep)")
    group.add_argument(
        "--maintenance-pushes",
        type=int,
        default=defaults.push_interval,
        metavar="N",
        help="look at what maintenance needs every N applied pushes; 0: never on pushes "
        "(%(default)s)",
    )
    group.add_argument(
        "--maintenance-interval",
        type=float,
        default=defaults.interval,
        metavar="SECONDS",
        help="look at least this often; 0: never on time (%(default)s)",
    )
    group.add_argument(
        "--full-repack-interval",
        type=float,
        default=defaults.full_repack_interval,
        metavar="SECONDS",
        help="seconds between full repacks into one pack plus a cruft pack (%(default)s)",
    )
    group.add_argument(
        "--prune-expiry",
        type=float,
        default=defaults.prune_expiry,
        metavar="SECONDS",
        help="unreachable objects are kept this long after they were last written or found "
        f"unreachable; at least {maintenance.MIN_PRUNE_EXPIRY:g} (%(default)s)",
    )
    group.add_argument(
        "--ref-history",
        type=float,
        default=defaults.ref_history,
        metavar="SECONDS",
        help="a replaced ref value keeps its objects this long, above the longest push "
        "(%(default)s)",
    )
    group.add_argument(
        "--scrub-interval",
        type=float,
        default=defaults.scrub_interval,
        metavar="SECONDS",
        help="read and check every object this often, each replica at its own offset; "
        "0: never (%(default)s)",
    )
    group.add_argument(
        "--maintenance-permits",
        action="store_true",
        help="maintain and scrub only under a permit from the controller (PUT /admin/upkeep), "
        "so that it can confine them to a window; repairs never wait",
    )


def upkeep_settings(args: argparse.Namespace) -> maintenance.Settings:
    """The maintenance settings the command line asks for; ConfigError if unusable."""
    if args.maintenance_pushes < 0:
        raise errors.ConfigError("--maintenance-pushes must be 0 or more")
    for name in ("maintenance_interval", "full_repack_interval", "ref_history", "scrub_interval"):
        if getattr(args, name) < 0:
            raise errors.ConfigError(f"--{name.replace('_', '-')} must be 0 or more")
    if args.prune_expiry < maintenance.MIN_PRUNE_EXPIRY:
        raise errors.ConfigError(
            f"--prune-expiry must be at least {maintenance.MIN_PRUNE_EXPIRY:g} seconds: objects "
            "arrive shortly before the refs that reach them"
        )
    return maintenance.Settings(
        push_interval=args.maintenance_pushes,
        interval=args.maintenance_interval,
        full_repack_interval=args.full_repack_interval,
        prune_expiry=args.prune_expiry,
        ref_history=args.ref_history,
        scrub_interval=args.scrub_interval,
        permits=args.maintenance_permits,
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
    upkeep_settings(args)  # refuses bad values before anything starts
    serve.ssh_settings(args)
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
    notifier = None
    if args.notifications_file is not None:
        notifier = notifying.Notifier(
            repository=name, local=local, path=args.notifications_file, poster=webhooks.Poster()
        )
        await notifier.open()
    member = replica.Replica(
        replica=args.id,
        local=local,
        peers=peers,
        copier=copier,
        timing=timing,
        notifier=notifier,
    )
    forwarder = forwarding.Forwarder(member, hold=args.hold)
    server_settings = settings.ServerSettings(
        root=root,
        host=settings.parse_listen(args.listen)[0],
        access=settings.Access(auth_file=args.auth_file, anonymous_read=args.anonymous_read),
        limits=limits,
        git=options,
        ssh=serve.ssh_settings(args),
        stop_delay=args.stop_delay,
    )
    server = http.Server(
        server_settings,
        environment=os.environ,
        runner=runner,
        write_path=pushing.ReplicatedWritePath(
            runner, member, channels, policy=protection.PolicyFile(args.policy_file)
        ),
        middlewares=(forwarder.middleware,),
        # Ready also while the leader changes: requests are held then, not refused, and a
        # Service with no ready replica for that moment would refuse every client.
        not_ready=lambda: None if _serves_clients(member) else _why_not_ready(member),
    )
    server.authenticator.load()
    server.metrics.gauges.extend(metrics.gauges(member.report))
    if notifier is not None:
        server.metrics.gauges.extend(notifier.metrics())
    keeper = upkeep.Upkeep(
        name=repository.name,
        member=member,
        runner=runner,
        settings=upkeep_settings(args),
        data=data,
        token=peer_token,
        strict=options.fsck_objects,
    )
    await keeper.open()
    server.metrics.gauges.extend(keeper.metrics())
    api = peerapi.PeerApi(
        member,
        git=server.services,
        repository=repository,
        peer_token=peer_token,
        admin_token=admin_token,
        keeper=keeper,
        archivist=archiving.Archivist(member, runner=runner, data=data),
    )
    secure_shell = None
    if server_settings.ssh.port is not None:
        secure_shell = ssh.SshServer(
            server_settings,
            services=server.services,
            runner=runner,
            resolver=server.resolver,
            server_metrics=server.metrics,
            routing=_ssh_routing(member, hold=args.hold),
        )
        await secure_shell.start()
    if configuration is not None:
        await member.configure(configuration)
    keeper.start()
    try:
        await listening.serve_many(
            [(server.application(), sockets[0]), (api.application(), sockets[1])],
            server=server,
            started=f"replica {args.id} serving {args.name}",
            before_stop=lambda: member.leave(args.leave_timeout),
        )
    finally:
        await keeper.stop()
        await member.close()
        await forwarder.close()
        if secure_shell is not None:
            await secure_shell.close()


def _ssh_routing(member: replica.Replica, *, hold: float) -> ssh.Routing:
    """What the SSH server asks this replica: reads under its lease, pushes to the leader."""

    def leader_host() -> str | None:
        leader = member.leader
        if leader is None or leader.id == member.id:
            return None
        # Every replica of a repository listens for SSH on the same port (the pods do).
        return urllib.parse.urlsplit(leader.url).hostname

    def admitted() -> contextlib.AbstractContextManager[None]:
        leadership = member.leadership
        return leadership.admitted() if leadership is not None else contextlib.nullcontext()

    return ssh.Routing(
        readable=lambda: member.readable,
        writable=lambda: member.writable,
        in_transition=lambda: member.in_transition,
        leader_host=leader_host,
        admitted=admitted,
        hold=hold,
    )


def _serves_clients(member: replica.Replica) -> bool:
    """Ready for the Service: readable, or in a leader change (requests are held then, and a
    Service with no ready replica would refuse every client); not before the first
    configuration, though a request that reaches it then is held until it comes."""
    return member.readable or (member.in_transition and member.configuration is not None)


def _why_not_ready(member: replica.Replica) -> str:
    status = member.status()
    return f"replica {member.id} is {status['role'].lower()}, {status['state']}, not readable"
