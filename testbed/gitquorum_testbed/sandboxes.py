"""A pod's sandbox: the network namespace its containers share.

The sandbox is a ``sleep`` process in a new network namespace (the pause container's role);
``network.attach_pod`` gives the namespace an ``eth0`` with the pod's address, on a veth pair
to the node's bridge, and containers join it through ``nsenter``. Teardown deletes the node's
end of the pair and kills the sleeper.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from gitquorum_testbed import containers, network

# How long a new sleeper may take to be inside its own namespace (it is milliseconds).
NETNS_WAIT_SECONDS = 10.0


class Sandbox:
    """One pod's network namespace on a node, from creation to teardown."""

    def __init__(self, *, node_index: int, address: str) -> None:
        self.node_index = node_index
        self.address = address
        self.proc: subprocess.Popen[bytes] | None = None
        self.host_leg: str | None = None
        """The node's end of the veth pair, once the pod's address is reachable."""

    @property
    def attached(self) -> bool:
        return self.host_leg is not None

    def create(self) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "--net", "sleep", "infinity"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        self._wait_for_netns()
        self.host_leg = network.attach_pod(
            sandbox_pid=self.proc.pid, node_index=self.node_index, address=self.address
        )

    def _wait_for_netns(self) -> None:
        assert self.proc is not None
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + NETNS_WAIT_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{self.proc.pid}/ns/net") != own:
                    return
            time.sleep(0.01)
        raise RuntimeError("sandbox did not enter its network namespace")

    def enter(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the sandbox's network namespace."""
        assert self.proc is not None
        return ["nsenter", f"--net=/proc/{self.proc.pid}/ns/net", *argv]

    def teardown(self) -> None:
        if self.host_leg is not None:
            network.detach_pod(self.host_leg)
        containers.kill_group(self.proc, signal.SIGKILL)
