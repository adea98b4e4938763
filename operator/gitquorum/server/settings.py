"""The server's settings, as plain data that the command line fills in."""

import dataclasses
import pathlib

from gitquorum import errors

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what one request may cost, so no client can take the server down."""

    max_push_bytes: int = 2 * GIB
    """Largest push body after decompression, in bytes; bounds the disk one push can fill."""
    max_negotiation_bytes: int = 32 * MIB
    """Largest upload-pack request, in bytes; it is held in memory while it is validated."""
    max_command_bytes: int = 8 * MIB
    """Largest receive-pack command section, in bytes; it is held in memory until git runs."""
    max_git_processes: int = 32
    """git processes running at once; each can take a core and hundreds of MB."""
    queue_timeout: float = 30.0
    """Seconds a request waits for a git process slot before it is answered 503."""
    request_timeout: float = 3600.0
    """Seconds one git request may take in all, so no stuck client holds a slot forever."""
    idle_timeout: float = 60.0
    """Seconds to wait for the next chunk of a request body (slow or vanished clients)."""
    max_kdf_threads: int = 2
    """Password hashes computed at once; a flood of wrong passwords must not starve git."""


@dataclasses.dataclass(frozen=True)
class Access:
    """Who may read and write, and whether pushes may create repositories."""

    auth_file: pathlib.Path | None = None
    """File of users and hashed tokens (see docs/serving.md); None: no users at all."""
    anonymous_read: bool = False
    """Whether clone and fetch work without credentials; push never does."""
    create_on_push: bool = False
    """Whether a push to a missing repository creates it (as a bare repository)."""
    cache_seconds: float = 300.0
    """How long a verified (user, token) pair skips the slow hash; cleared when the file changes."""
    reload_interval: float = 1.0
    """Seconds between checks of the auth file for changes made while the server runs."""


@dataclasses.dataclass(frozen=True)
class GitOptions:
    """How git itself is run."""

    executable: str = "git"
    """The git program: a name looked up in PATH, or a path."""
    fsck_objects: bool = True
    """Whether pushed objects are checked by git fsck before they are accepted."""
    default_branch: str = "main"
    """Branch HEAD names in repositories created by a push."""


@dataclasses.dataclass(frozen=True)
class SshSettings:
    """The SSH transport (``server/ssh.py``); off unless a port is given."""

    port: int | None = None
    """TCP port for SSH on the HTTP listen address; None: no SSH; 0 picks a free one."""
    host_key: pathlib.Path | None = None
    """OpenSSH private host key; one per repository, so known_hosts survives a failover."""
    keys_file: pathlib.Path | None = None
    """Keys allowed in, ``read|write <type> <base64> [comment]`` a line; None: nobody."""
    reload_interval: float = 1.0
    """Seconds between checks of the keys file for changes made while the server runs."""
    login_timeout: float = 30.0
    """Seconds a connection may take to authenticate before it is dropped."""


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Everything ``gitquorum serve`` needs to run."""

    root: pathlib.Path
    """Directory whose bare repositories are served."""
    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8080
    """TCP port to listen on; 0 picks a free one (logged at startup)."""
    access: Access = dataclasses.field(default_factory=Access)
    """Authentication and authorisation."""
    limits: Limits = dataclasses.field(default_factory=Limits)
    """Per-request bounds."""
    git: GitOptions = dataclasses.field(default_factory=GitOptions)
    """How git is run."""
    ssh: SshSettings = dataclasses.field(default_factory=SshSettings)
    """The SSH transport, off by default."""
    shutdown_timeout: float = 30.0
    """Seconds in-flight requests get to finish after SIGTERM."""
    stop_delay: float = 0.0
    """Seconds after SIGTERM during which the server reports not ready but still accepts
    connections, so that Service endpoints drop it before its listener closes (what a preStop
    sleep does); 0 outside Kubernetes, where nothing routes by readiness."""


def parse_listen(value: str) -> tuple[str, int]:
    """Splits ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into host and port."""
    host, separator, port = value.rpartition(":")
    if not separator or not host or not port.isdigit() or int(port) > 65535:
        raise errors.ConfigError(f"--listen wants HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
