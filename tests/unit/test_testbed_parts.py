"""The testbed's pure parts: addressing, probe thresholds, variable expansion, certificates,
process tracking, and the binary build script's refusals."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from kubernetes import client

from gitquorum_testbed import controlplane, environment, network, pki, probes, processes, settings
from tests import waiting

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_node_addresses_stay_inside_the_blackholed_pod_range():
    for index in (1, 7, 250):
        node = settings.NodeConfig(name=f"n{index}", index=index, zone="z")
        assert node.pod_network.subnet_of(settings.POD_RANGE)
        assert ipaddress.ip_address(node.address) in node.pod_network
    assert settings.BRIDGE_ADDRESS in settings.POD_RANGE
    assert settings.KUBERNETES_SERVICE_IP in settings.SERVICE_RANGE


def test_veth_names_fit_ifnamsiz_and_carry_the_node():
    name = network.veth_name(250, "10.244.250.254")
    assert len(name) <= 15
    assert name.startswith("gq250x")
    assert network.veth_name(1, "10.244.1.2") != network.veth_name(1, "10.244.1.3")


def test_pod_mac_follows_the_address_and_is_local_unicast():
    mac = network.pod_mac("10.244.3.17")
    assert mac == "0a:58:0a:f4:03:11"
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast
    assert network.pod_mac("10.244.3.18") != mac


def test_probe_state_needs_failure_threshold_consecutive_failures():
    probe = client.V1Probe(period_seconds=1, failure_threshold=3, success_threshold=1)
    state = probes.ProbeState(probe, started=0.0)
    for t in (0.0, 1.0):
        state.record(False, t)
    assert state.result is None, "two failures must not yet fail a threshold of three"
    state.record(True, 2.0)
    state.record(False, 3.0)
    state.record(False, 4.0)
    assert state.result is True, "a success resets the failure count"
    state.record(False, 5.0)
    assert state.result is False


def test_probe_state_waits_initial_delay_and_period():
    probe = client.V1Probe(initial_delay_seconds=5, period_seconds=2)
    state = probes.ProbeState(probe, started=100.0)
    assert not state.due(104.9)
    assert state.due(105.0)
    state.record(True, 105.0)
    assert not state.due(106.9)
    assert state.due(107.0)


def test_expand_substitutes_known_variables_and_keeps_unknown():
    env = {"NAME": "web", "PORT": "80"}
    assert environment.expand("$(NAME):$(PORT)", env) == "web:80"
    assert environment.expand("$(MISSING)-x", env) == "$(MISSING)-x"


def test_pki_apiserver_certificate_names_every_address(tmp_path: Path):
    files = pki.ensure(tmp_path)
    cert = x509.load_pem_x509_certificate(files.apiserver_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", str(settings.BRIDGE_ADDRESS), str(settings.KUBERNETES_SERVICE_IP)} <= ips
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert oct(files.ca_key.stat().st_mode & 0o777) == "0o600"


def test_pki_ensure_keeps_existing_material(tmp_path: Path):
    first = pki.ensure(tmp_path).ca_cert.read_bytes()
    assert pki.ensure(tmp_path).ca_cert.read_bytes() == first


def test_processes_track_and_stop_a_whole_session(tmp_path: Path):
    pids, logs = tmp_path / "pids", tmp_path / "logs"
    # A child that ignores SIGTERM proves the SIGKILL fallback reaches the whole session.
    argv = ["sh", "-c", "trap '' TERM; sleep 300 & wait"]
    pid = processes.start("sleeper", argv, pids=pids, logs=logs)
    assert processes.running("sleeper", pids=pids) == pid
    processes.stop("sleeper", pids=pids, grace=0.5)
    assert processes.running("sleeper", pids=pids) is None
    assert processes.names(pids) == []


# The main thread leaves with the raw exit system call (not exit_group), so the other thread,
# and the listening socket, live on behind a zombie main thread: what a killed Go binary
# looks like for a moment.
_HALF_EXITED = """
import ctypes, platform, socket, sys, threading, time
listener = socket.create_server(("127.0.0.1", 0))
open(sys.argv[1], "w").write(str(listener.getsockname()[1]))
threading.Thread(target=time.sleep, args=(300,)).start()
ctypes.CDLL(None).syscall({"x86_64": 60, "aarch64": 93}[platform.machine()], 0)
"""


def test_processes_running_while_a_thread_outlives_the_main_one(tmp_path: Path):
    pids, logs, port_file = tmp_path / "pids", tmp_path / "logs", tmp_path / "port"
    argv = [sys.executable, "-c", _HALF_EXITED, str(port_file)]
    pid = processes.start("half", argv, pids=pids, logs=logs)
    waiting.until(
        "the child's main thread to exit",
        lambda: port_file.exists() and _main_thread_state(pid) == "Z",
        timeout=10,
        seen=lambda: _main_thread_state(pid),
    )
    assert processes.running("half", pids=pids) == pid
    processes.stop("half", pids=pids, grace=0.5)
    assert processes.running("half", pids=pids) is None
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", int(port_file.read_text())))


def _main_thread_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_processes_ignore_a_recycled_pid(tmp_path: Path):
    pids = tmp_path / "pids"
    pids.mkdir()
    (pids / "ghost.json").write_text(f'{{"pid": {os.getpid()}, "start": "0"}}')
    assert processes.running("ghost", pids=pids) is None


def _build(tmp_path: Path, env_changes: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GITQUORUM_CACHE": str(tmp_path / "cache"), **env_changes}
    return subprocess.run(
        ["/bin/bash", str(REPO / "hack" / "build-binaries.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_build_script_explains_missing_go(tmp_path: Path):
    result = _build(tmp_path, {"PATH": str(tmp_path)})  # a PATH with no go on it
    assert result.returncode != 0
    assert "Go is not installed" in result.stderr


def test_build_script_explains_unreachable_proxy(tmp_path: Path):
    result = _build(
        tmp_path, {"GOPROXY": "off", "GOFLAGS": "-mod=mod", "GOMODCACHE": str(tmp_path / "mod")}
    )
    assert result.returncode != 0
    assert "cannot reach the Go module proxy" in result.stderr, result.stderr


def test_waiting_until_reports_what_was_awaited_and_seen():
    with pytest.raises(AssertionError, match="waiting for the answer; last seen: 0"):
        waiting.until("the answer", lambda: 0, timeout=0.05, interval=0.01)


def test_waiting_until_returns_the_first_truthy_value():
    values = iter([0, None, 42])
    assert waiting.until("a value", lambda: next(values), timeout=5, interval=0.01) == 42


def test_control_plane_refuses_a_port_held_by_another_process():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(processes.ProcessError, match=f"127.0.0.1:{port} is in use"):
            controlplane._require_free("etcd", "127.0.0.1", port)
