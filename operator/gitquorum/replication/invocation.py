"""The ``gitquorum replica`` command line, built in one place.

The operator renders it into every replica pod, ``gitquorum local`` starts its replicas with
it, and the tests and benchmarks start theirs the same way; a test parses what this builds
with the command's own parser, so an option renamed there cannot leave a caller behind.
"""

import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class ReplicaCommand:
    """The options of one replica process (see ``commands/replica.py`` for what each does)."""

    replica: str
    data: str
    listen: str
    peer_listen: str
    peer_token_file: str
    name: str | None = None
    admin_token_file: str | None = None
    auth_file: str | None = None
    policy_file: str | None = None
    notifications_file: str | None = None
    anonymous_read: bool = False
    leave_timeout: float | None = None
    stop_delay: float | None = None
    maintenance_permits: bool = False
    ssh_port: int | None = None
    ssh_host_key: str | None = None
    ssh_keys_file: str | None = None
    extra: Sequence[str] = ()
    """Further options as given (timings, log level), after the ones above."""

    def argv(self, program: Sequence[str] = ("gitquorum",)) -> list[str]:
        """``program replica ...``: ``program`` is how to run gitquorum (the console script,
        or ``python -m gitquorum``)."""
        argv = [*program, "replica", "--id", self.replica]
        if self.name is not None:
            argv += ["--name", self.name]
        argv += ["--data", self.data, "--listen", self.listen, "--peer-listen", self.peer_listen]
        argv += ["--peer-token-file", self.peer_token_file]
        if self.admin_token_file is not None:
            argv += ["--admin-token-file", self.admin_token_file]
        if self.auth_file is not None:
            argv += ["--auth-file", self.auth_file]
        if self.policy_file is not None:
            argv += ["--policy-file", self.policy_file]
        if self.notifications_file is not None:
            argv += ["--notifications-file", self.notifications_file]
        if self.anonymous_read:
            argv.append("--anonymous-read")
        if self.leave_timeout is not None:
            argv += ["--leave-timeout", f"{self.leave_timeout:g}"]
        if self.stop_delay is not None:
            argv += ["--stop-delay", f"{self.stop_delay:g}"]
        if self.maintenance_permits:
            argv.append("--maintenance-permits")
        if self.ssh_port is not None:
            argv += ["--ssh-port", str(self.ssh_port)]
        if self.ssh_host_key is not None:
            argv += ["--ssh-host-key", self.ssh_host_key]
        if self.ssh_keys_file is not None:
            argv += ["--ssh-keys-file", self.ssh_keys_file]
        return [*argv, *self.extra]
