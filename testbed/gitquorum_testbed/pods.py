"""Running one pod on a simulated node: its sandbox, containers, probes and reported status.

Each pod gets a thread. The sandbox is a ``sleep`` process in a new network namespace (the
pause container's role); containers join that namespace through ``nsenter`` and get a private
mount namespace where ``podinit`` mounts their volumes. The thread restarts containers per the
restartPolicy, runs probes, and patches the pod's status whenever what it would report changes.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client

from gitquorum_testbed import binaries, network, probes, settings, volumes

log = logging.getLogger(__name__)

LOOP_SECONDS = 0.3
# How often Secret, ConfigMap and token volumes are re-read (a kubelet that watches Secrets
# propagates changes within seconds to a minute). Unchanged content is not rewritten, and a
# token is renewed only after half its lifetime.
REFRESH_SECONDS = 10.0
# A status is sent again at least this often even when unchanged, as the kubelet resyncs: a
# controller may have changed a condition behind the agent's back.
RESYNC_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 10.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STAGING_DIR = Path("/run/gitquorum-testbed/staging")
# What every container needs to reach whatever user it runs as: the interpreter, the
# virtualenv, and the checkout the package is installed from in editable mode.
RUNTIME_PATHS = sorted(
    {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), binaries.repo_root()}
)
RUNTIME_PATHS = [
    p for p in RUNTIME_PATHS if not any(o != p and p.is_relative_to(o) for o in RUNTIME_PATHS)
]
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(RuntimeError):
    """The pod cannot run as specified (CreateContainerConfigError)."""


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class Container:
    """One container's process and history."""

    spec: client.V1Container
    init: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    restarts: int = 0
    terminated: dict[str, Any] | None = None
    last_state: dict[str, Any] | None = None
    waiting_reason: str = "ContainerCreating"
    waiting_message: str | None = None
    backoff_until: float = 0.0
    readiness: probes.ProbeState | None = None
    liveness: probes.ProbeState | None = None
    startup: probes.ProbeState | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def started(self) -> bool:
        return self.running and (self.startup is None or self.startup.result is True)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return self.readiness is None or self.readiness.result is True


class PodRuntime:
    """Owns a pod's processes on this node from first start to final deletion."""

    def __init__(
        self,
        pod: client.V1Pod,
        *,
        node: settings.NodeConfig,
        layout: settings.Layout,
        api: client.CoreV1Api,
        address: str,
        ca_cert: Path,
        paused: threading.Event,
    ) -> None:
        self.pod = pod
        self.node = node
        self.api = api
        self.address = address
        self.ca_cert = ca_cert
        self.paused = paused
        self.key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        self.dir = layout.node_dir(node.name) / "pods" / pod.metadata.uid
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.host_leg: str | None = None
        self.mounts: dict[str, Path] = {}
        self.containers = [Container(c, init=True) for c in pod.spec.init_containers or []]
        self.containers += [Container(c) for c in pod.spec.containers]
        self._carry_restart_counts(pod)
        self.conditions: dict[str, dict[str, Any]] = {}
        self.start_time = (
            pod.status.start_time.strftime("%Y-%m-%dT%H:%M:%SZ")
            if pod.status and pod.status.start_time
            else _now_iso()
        )
        self.reported: str | None = None
        self.reported_at = 0.0
        self.terminate_grace: float | None = None
        self.killed = threading.Event()
        """Set by kill_now: the pod's thread must stop without restarting anything."""
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"pod {self.key}", daemon=True)

    # --- lifecycle, called by the agent ---------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def update(self, pod: client.V1Pod) -> None:
        self.pod = pod

    def terminate(self, grace: float) -> None:
        if self.terminate_grace is None or grace < self.terminate_grace:
            self.terminate_grace = grace

    def kill_now(self) -> None:
        """Power loss for this pod only: no grace, no API calls."""
        self.killed.set()
        for c in self.containers:
            _kill_group(c.proc, signal.SIGKILL)
        self._teardown_sandbox()

    # --- the pod's thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._prepare()
            refreshed = time.monotonic()
            while self.terminate_grace is None and not self.killed.is_set():
                self._step()
                self._report()
                if time.monotonic() - refreshed > REFRESH_SECONDS and not self.paused.is_set():
                    self._refresh_volumes()
                    refreshed = time.monotonic()
                time.sleep(LOOP_SECONDS)
            if self.killed.is_set():
                # Force-deleted: kill_now did the killing; restarting or reporting would
                # resurrect containers of a pod that no longer exists.
                self.kill_now()
                return
            assert self.terminate_grace is not None
            self._shutdown(self.terminate_grace)
        except Exception:
            log.exception("pod %s: runtime failed", self.key)
            self.kill_now()
        finally:
            self.finished.set()

    def _refresh_volumes(self) -> None:
        """Updated Secrets and tokens reach the running pod; an API server that cannot be
        reached leaves the volumes as they are until the next try, as a kubelet does (its pods
        keep running whatever happens to the control plane)."""
        try:
            volumes.refresh(self.pod, pod_dir=self.dir, api=self.api, ca_cert=self.ca_cert)
        except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("pod %s: volumes not refreshed: %s", self.key, exc)

    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        while self.terminate_grace is None and not self.killed.is_set():
            try:
                self.mounts = volumes.materialise(
                    self.pod, pod_dir=self.dir, api=self.api, ca_cert=self.ca_cert
                )
                break
            except (volumes.VolumeError, client.ApiException) as exc:
                for c in self.containers:
                    c.waiting_reason, c.waiting_message = "ContainerCreating", str(exc)
                self._report()
                time.sleep(1)
        if self.terminate_grace is not None:
            return
        self.sandbox = subprocess.Popen(
            ["unshare", "--net", "sleep", "infinity"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        self._wait_for_netns()
        self.host_leg = network.attach_pod(
            sandbox_pid=self.sandbox.pid, node_index=self.node.index, address=self.address
        )
        self._set_condition("PodReadyToStartContainers", True)

    def _wait_for_netns(self) -> None:
        assert self.sandbox is not None
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{self.sandbox.pid}/ns/net") != own:
                    return
            time.sleep(0.01)
        raise RuntimeError("sandbox did not enter its network namespace")

    def _step(self) -> None:
        now = time.monotonic()
        init_pending = [c for c in self.containers if c.init and not _succeeded(c)]
        if init_pending:
            self._step_container(init_pending[0], now)
            return
        for c in self.containers:
            if not c.init:
                self._step_container(c, now)

    def _step_container(self, c: Container, now: float) -> None:
        if c.proc is not None and c.proc.poll() is not None:
            self._record_exit(c)
        if c.proc is None:
            if c.terminated is not None and not self._should_restart(c):
                return
            if now < c.backoff_until:
                c.waiting_reason = "CrashLoopBackOff"
                return
            if c.terminated is not None:
                c.restarts += 1
                c.last_state = {"terminated": c.terminated}
                c.terminated = None
            self._launch(c)
            return
        self._probe(c, now)

    def _should_restart(self, c: Container) -> bool:
        policy = self.pod.spec.restart_policy or "Always"
        if c.init:
            return policy != "Never" and c.terminated is not None and c.terminated["exitCode"] != 0
        if policy == "Always":
            return True
        return policy == "OnFailure" and c.terminated is not None and c.terminated["exitCode"] != 0

    def _record_exit(self, c: Container) -> None:
        assert c.proc is not None
        code = c.proc.returncode
        exit_code = 128 - code if code < 0 else code
        c.terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": _now_iso(),
            "containerID": f"testbed://{c.proc.pid}",
        }
        _kill_group(c.proc, signal.SIGKILL)  # reap what the main process left behind
        c.proc = None
        c.readiness = c.liveness = c.startup = None
        delay = min(BACKOFF_MAX_SECONDS, 0.5 * (2 ** min(c.restarts, 5)))
        c.backoff_until = time.monotonic() + (0 if exit_code == 0 and c.init else delay)
        log.info("pod %s: container %s exited with %s", self.key, c.spec.name, exit_code)

    def _launch(self, c: Container) -> None:
        try:
            spec = self._container_spec(c, argv=self._argv(c))
        except (
            ConfigError,
            volumes.VolumeError,
            client.ApiException,
            urllib3.exceptions.HTTPError,  # the API server is down: tried again after back-off
        ) as exc:
            c.waiting_reason, c.waiting_message = "CreateContainerConfigError", str(exc)
            c.backoff_until = time.monotonic() + 2
            return
        spec_path = self.dir / f"{c.spec.name}.json"
        spec_path.write_text(json.dumps(spec))
        assert self.sandbox is not None
        with open(self.dir / "logs" / f"{c.spec.name}.log", "ab") as out:
            c.proc = subprocess.Popen(
                self._enter(spec_path),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        c.started_at = _now_iso()
        c.started_mono = time.monotonic()
        c.waiting_reason, c.waiting_message = "", None
        for attr in ("readiness", "liveness", "startup"):
            probe = getattr(c.spec, f"{attr}_probe")
            setattr(c, attr, probes.ProbeState(probe, started=c.started_mono) if probe else None)
        log.info("pod %s: started container %s (pid %s)", self.key, c.spec.name, c.proc.pid)

    def _enter(self, spec_path: Path) -> list[str]:
        assert self.sandbox is not None
        return [
            "nsenter",
            f"--net=/proc/{self.sandbox.pid}/ns/net",
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "gitquorum_testbed.podinit",
            str(spec_path),
        ]

    def _probe(self, c: Container, now: float) -> None:
        ports = {p.name: p.container_port for p in c.spec.ports or [] if p.name}

        def exec_runner(argv: list[str], timeout: float) -> int:
            path = self.dir / f"{c.spec.name}.probe.json"
            path.write_text(json.dumps(self._container_spec(c, argv=argv)))
            return subprocess.run(
                self._enter(path), capture_output=True, timeout=timeout, check=False
            ).returncode

        if c.startup is not None and c.startup.result is not True:
            if c.startup.due(now):
                c.startup.record(
                    probes.run(
                        c.startup.probe, pod_ip=self.address, ports=ports, exec_runner=exec_runner
                    ),
                    now,
                )
                if c.startup.result is False:
                    self._restart_unhealthy(c, "startup")
            return
        for state in (c.readiness, c.liveness):
            if state is not None and state.due(now):
                state.record(
                    probes.run(
                        state.probe, pod_ip=self.address, ports=ports, exec_runner=exec_runner
                    ),
                    now,
                )
        if c.liveness is not None and c.liveness.result is False:
            self._restart_unhealthy(c, "liveness")

    def _restart_unhealthy(self, c: Container, which: str) -> None:
        log.info(
            "pod %s: container %s failed its %s probe; restarting", self.key, c.spec.name, which
        )
        grace = float(self.pod.spec.termination_grace_period_seconds or 30)
        _stop_group(c.proc, grace)

    # --- what a container sees ---------------------------------------------------------------

    def _argv(self, c: Container) -> list[str]:
        if not c.spec.command:
            raise ConfigError(
                f"container {c.spec.name} has no command: the testbed ignores images and runs "
                "the command with the project's Python environment"
            )
        env = self._env(c)
        return [_expand(a, env) for a in list(c.spec.command) + list(c.spec.args or [])]

    def _container_spec(self, c: Container, *, argv: list[str]) -> dict[str, Any]:
        psc = self.pod.spec.security_context or client.V1PodSecurityContext()
        csc = c.spec.security_context or client.V1SecurityContext()
        uid = csc.run_as_user if csc.run_as_user is not None else psc.run_as_user
        gid = csc.run_as_group if csc.run_as_group is not None else psc.run_as_group
        non_root = csc.run_as_non_root if csc.run_as_non_root is not None else psc.run_as_non_root
        if non_root and not uid:
            raise ConfigError(
                "runAsNonRoot is set but no non-zero runAsUser is given "
                "(the testbed has no image user to fall back on)"
            )
        groups = list(psc.supplemental_groups or [])
        if psc.fs_group is not None:
            groups.append(psc.fs_group)
        mounts = []
        for m in c.spec.volume_mounts or []:
            if m.name not in self.mounts:
                raise ConfigError(f"volumeMount {m.name} names no volume of the pod")
            source = self.mounts[m.name] / (m.sub_path or "")
            if m.sub_path:
                source.parent.mkdir(parents=True, exist_ok=True)
                if not source.exists():
                    source.mkdir()
            kind = next(v for v in self.pod.spec.volumes if v.name == m.name)
            read_only = bool(m.read_only) or bool(
                kind.secret or kind.config_map or kind.projected or kind.downward_api
            )
            mounts.append({"source": str(source), "target": m.mount_path, "readOnly": read_only})
        return {
            "argv": argv,
            "env": self._env(c),
            "mounts": mounts,
            "workingDir": c.spec.working_dir,
            "uid": uid,
            "gid": gid if gid is not None else uid,
            "groups": groups if uid is not None else None,
            "readOnlyRoot": bool(csc.read_only_root_filesystem),
            # An empty directory on the host's /run where podinit parks a mount for a moment.
            "staging": str(STAGING_DIR),
            "expose": [str(p) for p in RUNTIME_PATHS],
        }

    def _env(self, c: Container) -> dict[str, str]:
        namespace = self.pod.metadata.namespace
        env: dict[str, str] = {
            "PATH": f"{Path(sys.executable).parent}:{DEFAULT_PATH}",
            "HOSTNAME": str(self.pod.metadata.name),
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": str(settings.KUBERNETES_SERVICE_IP),
            "KUBERNETES_SERVICE_PORT": "443",
            "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        }
        for source in c.spec.env_from or []:
            prefix = source.prefix or ""
            if source.config_map_ref:
                cm = self.api.read_namespaced_config_map(source.config_map_ref.name, namespace)
                env.update({prefix + k: v for k, v in (cm.data or {}).items()})
            if source.secret_ref:
                s = self.api.read_namespaced_secret(source.secret_ref.name, namespace)
                env.update({prefix + k: _b64(v) for k, v in (s.data or {}).items()})
        for var in c.spec.env or []:
            if var.value_from is None:
                env[var.name] = _expand(var.value or "", env)
            else:
                value = self._env_from(var.value_from, namespace)
                if value is not None:
                    env[var.name] = value
        return env

    def _env_from(self, source: client.V1EnvVarSource, namespace: str) -> str | None:
        if source.field_ref:
            if source.field_ref.field_path == "status.podIP":
                return self.address
            if source.field_ref.field_path == "status.hostIP":
                return self.node.address
            return volumes.field(self.pod, source.field_ref.field_path)
        ref = source.secret_key_ref or source.config_map_key_ref
        if ref is None:
            raise ConfigError("only fieldRef, secretKeyRef and configMapKeyRef are supported")
        try:
            if source.secret_key_ref:
                data = {
                    k: _b64(v)
                    for k, v in (
                        self.api.read_namespaced_secret(ref.name, namespace).data or {}
                    ).items()
                }
            else:
                data = self.api.read_namespaced_config_map(ref.name, namespace).data or {}
        except client.ApiException as exc:
            if exc.status == 404 and ref.optional:
                return None
            raise ConfigError(f"{ref.name}: {exc.reason}") from exc
        if ref.key not in data:
            if ref.optional:
                return None
            raise ConfigError(f"key {ref.key} not found in {ref.name}")
        return str(data[ref.key])

    # --- status ------------------------------------------------------------------------------

    def _report(self) -> None:
        if self.paused.is_set():
            # While cut off, the node-lifecycle controller may mark this pod not ready: the
            # first report after the partition heals must be sent in full, not skipped.
            self.reported = None
            return
        status = self._status()
        encoded = json.dumps(status, sort_keys=True)
        if encoded == self.reported and time.monotonic() - self.reported_at < RESYNC_SECONDS:
            return
        try:
            # The uid makes the patch conditional: a pod deleted and created again under the
            # same name (a helm test pod, a replaced replica) is not this runtime's pod.
            self.api.patch_namespaced_pod_status(
                self.pod.metadata.name,
                self.pod.metadata.namespace,
                {"metadata": {"uid": self.pod.metadata.uid}, "status": status},
            )
            self.reported = encoded
            self.reported_at = time.monotonic()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # The API server is down or restarting: report again once it is back.
            log.warning("pod %s: status not reported: %s", self.key, exc)
        except client.ApiException as exc:
            if exc.status not in (404, 409):  # gone, or another pod of that name
                log.warning("pod %s: status update failed: %s %s", self.key, exc.reason, exc.body)

    def _status(self) -> dict[str, Any]:
        mains = [c for c in self.containers if not c.init]
        inits = [c for c in self.containers if c.init]
        initialized = all(_succeeded(c) for c in inits)
        ready = initialized and all(c.ready for c in mains)
        self._set_condition("Initialized", initialized)
        self._set_condition("ContainersReady", ready)
        self._set_condition("Ready", ready)
        status: dict[str, Any] = {
            "phase": self._phase(mains),
            "conditions": list(self.conditions.values()),
            "hostIP": self.node.address,
            "hostIPs": [{"ip": self.node.address}],
            "startTime": self.start_time,
            "containerStatuses": [self._container_status(c) for c in mains],
        }
        if inits:
            status["initContainerStatuses"] = [self._container_status(c) for c in inits]
        if self.host_leg is not None:
            status["podIP"] = self.address
            # Replaced, not merged: a pod restarted in a new sandbox after its node came back
            # has a new address, and a merged list would keep the old one too (the API server
            # refuses two addresses of one family, and the status would go on naming the old).
            status["podIPs"] = [{"ip": self.address}, {"$patch": "replace"}]
        return status

    def _phase(self, mains: list[Container]) -> str:
        if any(c.running for c in mains):
            return "Running"
        failed_init = [
            c
            for c in self.containers
            if c.init
            and c.terminated is not None
            and c.terminated["exitCode"] != 0
            and not self._should_restart(c)
        ]
        if failed_init:
            return "Failed"  # restartPolicy Never: the main containers will never start
        done = [
            c.terminated for c in mains if c.terminated is not None and not self._should_restart(c)
        ]
        if len(done) == len(mains):
            return "Succeeded" if all(t["exitCode"] == 0 for t in done) else "Failed"
        if any(c.restarts or c.terminated for c in mains):
            return "Running"
        return "Pending"

    def _container_status(self, c: Container) -> dict[str, Any]:
        state: dict[str, Any]
        if c.running:
            assert c.proc is not None
            state = {"running": {"startedAt": c.started_at}}
            container_id = f"testbed://{c.proc.pid}"
        elif c.terminated is not None and not (self._should_restart(c)):
            state = {"terminated": c.terminated}
            container_id = c.terminated["containerID"]
        else:
            waiting: dict[str, Any] = {"reason": c.waiting_reason or "ContainerCreating"}
            if c.waiting_message:
                waiting["message"] = c.waiting_message
            state = {"waiting": waiting}
            container_id = ""
        result: dict[str, Any] = {
            "name": c.spec.name,
            "image": c.spec.image or "",
            "imageID": "",
            "ready": c.ready,
            "started": c.started,
            "restartCount": c.restarts,
            "state": state,
            "lastState": c.last_state or {},
        }
        if container_id:
            result["containerID"] = container_id
        return result

    def _set_condition(self, kind: str, value: bool) -> None:
        text = "True" if value else "False"
        current = self.conditions.get(kind)
        if current is not None and current["status"] == text:
            return
        self.conditions[kind] = {
            "type": kind,
            "status": text,
            "lastProbeTime": None,
            "lastTransitionTime": _now_iso(),
        }

    def _carry_restart_counts(self, pod: client.V1Pod) -> None:
        """After a node restart the containers run again: count that as a restart."""
        previous = {s.name: s for s in (pod.status.container_statuses or [])} if pod.status else {}
        for c in self.containers:
            s = previous.get(c.spec.name)
            if s is not None and (s.state and (s.state.running or s.state.terminated)):
                c.restarts = (s.restart_count or 0) + 1

    # --- termination -------------------------------------------------------------------------

    def _shutdown(self, grace: float) -> None:
        log.info("pod %s: terminating with %.0fs grace", self.key, grace)
        for c in self.containers:
            _kill_group(c.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(c.running for c in self.containers):
            time.sleep(0.05)
        for c in self.containers:
            _kill_group(c.proc, signal.SIGKILL)
        self._teardown_sandbox()
        if not self.paused.is_set():
            with contextlib.suppress(client.ApiException):
                self.api.delete_namespaced_pod(
                    self.pod.metadata.name,
                    self.pod.metadata.namespace,
                    body=client.V1DeleteOptions(
                        grace_period_seconds=0,
                        preconditions=client.V1Preconditions(uid=self.pod.metadata.uid),
                    ),
                )
        shutil.rmtree(self.dir, ignore_errors=True)

    def _teardown_sandbox(self) -> None:
        if self.host_leg is not None:
            network.detach_pod(self.host_leg)
        _kill_group(self.sandbox, signal.SIGKILL)


def _succeeded(c: Container) -> bool:
    return c.terminated is not None and c.terminated["exitCode"] == 0 and c.proc is None


def _kill_group(proc: subprocess.Popen[bytes] | None, sig: int) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    if sig == signal.SIGKILL:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _stop_group(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    if proc is None:
        return
    _kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)


def _expand(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def _b64(value: str) -> str:
    return base64.b64decode(value).decode(errors="replace")
