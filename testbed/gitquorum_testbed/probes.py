"""Container probes (httpGet, tcpSocket, exec) with the kubelet's timing and thresholds."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import ssl
import subprocess
from collections.abc import Callable
from typing import Any

from kubernetes import client

ExecRunner = Callable[[list[str], float], int]


@dataclasses.dataclass
class ProbeState:
    """Where one probe of one container stands."""

    probe: client.V1Probe
    started: float
    """Monotonic time the container started; initialDelaySeconds counts from it."""
    next_due: float = 0.0
    successes: int = 0
    failures: int = 0
    result: bool | None = None
    """The probe's verdict after thresholds: None until the first verdict."""

    def due(self, now: float) -> bool:
        initial = self.probe.initial_delay_seconds or 0
        return now >= self.started + initial and now >= self.next_due

    def record(self, ok: bool, now: float) -> None:
        self.next_due = now + (self.probe.period_seconds or 10)
        if ok:
            self.successes += 1
            self.failures = 0
            if self.successes >= (self.probe.success_threshold or 1):
                self.result = True
        else:
            self.failures += 1
            self.successes = 0
            if self.failures >= (self.probe.failure_threshold or 3):
                self.result = False


def run(
    probe: client.V1Probe,
    *,
    pod_ip: str,
    ports: dict[str, int],
    exec_runner: ExecRunner,
) -> bool:
    """One probe attempt; True on success. Never raises for an unhealthy target."""
    timeout = float(probe.timeout_seconds or 1)
    try:
        if probe.http_get:
            return _http(probe.http_get, pod_ip=pod_ip, ports=ports, timeout=timeout)
        if probe.tcp_socket:
            port = _port(probe.tcp_socket.port, ports)
            with socket.create_connection((probe.tcp_socket.host or pod_ip, port), timeout):
                return True
        if probe._exec:  # the client names the field `_exec` (exec is a Python keyword)
            return exec_runner(list(probe._exec.command), timeout) == 0
    except (OSError, http.client.HTTPException, subprocess.TimeoutExpired, ValueError):
        return False
    return False


def _http(
    action: client.V1HTTPGetAction, *, pod_ip: str, ports: dict[str, int], timeout: float
) -> bool:
    host = action.host or pod_ip
    port = _port(action.port, ports)
    conn: http.client.HTTPConnection
    if (action.scheme or "HTTP").upper() == "HTTPS":
        # The kubelet does not verify probe certificates either.
        conn = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl._create_unverified_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {h.name: h.value for h in action.http_headers or []}
    headers.setdefault("User-Agent", "kube-probe/1.36")
    try:
        conn.request("GET", action.path or "/", headers=headers)
        status = conn.getresponse().status
    finally:
        conn.close()
    return 200 <= status < 400


def _port(port: Any, ports: dict[str, int]) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    if port in ports:
        return ports[port]
    raise ValueError(f"unknown named port {port!r}")
