"""Running one pod on a simulated node: the thread that coordinates its parts.

Each pod gets a thread. It materialises the pod's volumes, creates its sandbox
(``sandboxes``), then loops: it starts each container (``containers``) with what the container
sees (``environment``), restarts containers per the restartPolicy with the kubelet's back-off,
runs probes, and patches the pod's status (``podstatus``) whenever what it would report
changes. On deletion it stops the containers within the grace period and deletes the pod.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client

from gitquorum_testbed import (
    containers,
    environment,
    podstatus,
    probes,
    sandboxes,
    settings,
    volumes,
)

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
# The cluster command clears podinit's staging directory when the testbed goes down.
STAGING_DIR = environment.STAGING_DIR


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
        self.sandbox = sandboxes.Sandbox(node_index=node.index, address=address)
        self.mounts: dict[str, Path] = {}
        self.containers = [
            containers.Container(c, init=True) for c in pod.spec.init_containers or []
        ]
        self.containers += [containers.Container(c) for c in pod.spec.containers]
        self._carry_restart_counts(pod)
        self.conditions: dict[str, podstatus.Condition] = {}
        self.start_time = (
            podstatus.timestamp(pod.status.start_time)
            if pod.status and pod.status.start_time
            else containers.now_iso()
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
            containers.kill_group(c.proc, signal.SIGKILL)
        self.sandbox.teardown()

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
        self.sandbox.create()
        self._set_condition("PodReadyToStartContainers", True)

    def _step(self) -> None:
        now = time.monotonic()
        init_pending = [c for c in self.containers if c.init and not c.succeeded]
        if init_pending:
            self._step_container(init_pending[0], now)
            return
        for c in self.containers:
            if not c.init:
                self._step_container(c, now)

    def _step_container(self, c: containers.Container, now: float) -> None:
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

    def _should_restart(self, c: containers.Container) -> bool:
        return podstatus.will_restart(
            self.pod.spec.restart_policy, init=c.init, terminated=c.terminated
        )

    def _record_exit(self, c: containers.Container) -> None:
        exit_code = containers.record_exit(c)
        delay = min(BACKOFF_MAX_SECONDS, 0.5 * (2 ** min(c.restarts, 5)))
        c.backoff_until = time.monotonic() + (0 if exit_code == 0 and c.init else delay)
        log.info("pod %s: container %s exited with %s", self.key, c.spec.name, exit_code)

    def _environment(self) -> environment.PodEnvironment:
        return environment.PodEnvironment(
            pod=self.pod,
            api=self.api,
            pod_ip=self.address,
            host_ip=self.node.address,
            mounts=self.mounts,
        )

    def _launch(self, c: containers.Container) -> None:
        seen = self._environment()
        try:
            spec = seen.container_spec(c.spec, argv=seen.argv(c.spec))
        except (
            environment.ConfigError,
            volumes.VolumeError,
            client.ApiException,
            urllib3.exceptions.HTTPError,  # the API server is down: tried again after back-off
        ) as exc:
            c.waiting_reason, c.waiting_message = "CreateContainerConfigError", str(exc)
            c.backoff_until = time.monotonic() + 2
            return
        spec_path = self.dir / f"{c.spec.name}.json"
        spec_path.write_text(json.dumps(spec))
        containers.launch(
            c,
            argv=self.sandbox.enter(containers.podinit_argv(spec_path)),
            log_path=self.dir / "logs" / f"{c.spec.name}.log",
        )
        assert c.proc is not None
        log.info("pod %s: started container %s (pid %s)", self.key, c.spec.name, c.proc.pid)

    def _probe(self, c: containers.Container, now: float) -> None:
        ports = {p.name: p.container_port for p in c.spec.ports or [] if p.name}

        def exec_runner(argv: list[str], timeout: float) -> int:
            path = self.dir / f"{c.spec.name}.probe.json"
            path.write_text(json.dumps(self._environment().container_spec(c.spec, argv=argv)))
            return subprocess.run(
                self.sandbox.enter(containers.podinit_argv(path)),
                capture_output=True,
                timeout=timeout,
                check=False,
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

    def _restart_unhealthy(self, c: containers.Container, which: str) -> None:
        log.info(
            "pod %s: container %s failed its %s probe; restarting", self.key, c.spec.name, which
        )
        grace = float(self.pod.spec.termination_grace_period_seconds or 30)
        containers.stop_group(c.proc, grace)

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
        snapshots = [c.snapshot() for c in self.containers]
        self.conditions = podstatus.readiness_conditions(
            self.conditions, snapshots, now=containers.now_iso()
        )
        return podstatus.pod_status(
            snapshots,
            restart_policy=self.pod.spec.restart_policy,
            conditions=self.conditions,
            host_ip=self.node.address,
            pod_ip=self.address if self.sandbox.attached else None,
            start_time=self.start_time,
        )

    def _set_condition(self, kind: str, value: bool) -> None:
        self.conditions = podstatus.with_condition(
            self.conditions, kind, value, now=containers.now_iso()
        )

    def _carry_restart_counts(self, pod: client.V1Pod) -> None:
        previous = (pod.status.container_statuses or []) if pod.status else []
        carried = podstatus.carried_restart_counts(previous)
        for c in self.containers:
            c.restarts = carried.get(c.spec.name, c.restarts)

    # --- termination -------------------------------------------------------------------------

    def _shutdown(self, grace: float) -> None:
        log.info("pod %s: terminating with %.0fs grace", self.key, grace)
        for c in self.containers:
            containers.kill_group(c.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(c.running for c in self.containers):
            time.sleep(0.05)
        for c in self.containers:
            containers.kill_group(c.proc, signal.SIGKILL)
        self.sandbox.teardown()
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
