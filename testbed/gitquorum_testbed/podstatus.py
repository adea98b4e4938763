"""What a pod's status says, computed from what its runtime recorded.

The runtime keeps, per container, a record of its process, exits and restarts; it hands a
snapshot of each record here, with the sandbox's addresses, the times and the conditions it
reported before, and gets back the status dict it patches onto the Pod: phase, conditions,
container statuses. Everything here is a pure function of those inputs: no clock, no threads,
no API calls, no processes, so each rule of the kubelet's status is a unit test away.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kubernetes import client

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

Condition = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ContainerSnapshot:
    """One container's record at the moment a status is computed."""

    name: str
    image: str
    init: bool
    pid: int | None
    """The process's pid while it runs; None when there is no live process."""
    started_at: str | None
    restarts: int
    terminated: dict[str, Any] | None
    """The last exit (exitCode, reason, times, containerID), until the container runs again."""
    last_state: dict[str, Any] | None
    """The state before the last restart (``{"terminated": ...}``), as the API's lastState."""
    waiting_reason: str
    waiting_message: str | None
    startup_passed: bool
    """No startup probe, or it has succeeded: the kubelet's started flag waits on it."""
    readiness_passed: bool
    """No readiness probe, or its last verdict is success."""

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def started(self) -> bool:
        return self.running and self.startup_passed

    @property
    def ready(self) -> bool:
        return self.started and self.readiness_passed

    @property
    def succeeded(self) -> bool:
        return not self.running and exited_cleanly(self.terminated)


def timestamp(moment: datetime.datetime) -> str:
    """A time as the API writes it, to the second."""
    return moment.strftime(TIME_FORMAT)


def exited_cleanly(terminated: Mapping[str, Any] | None) -> bool:
    return terminated is not None and terminated["exitCode"] == 0


def will_restart(
    restart_policy: str | None, *, init: bool, terminated: Mapping[str, Any] | None
) -> bool:
    """Whether a container that exited as ``terminated`` records is started again."""
    policy = restart_policy or "Always"
    failed = terminated is not None and terminated["exitCode"] != 0
    if init:
        return policy != "Never" and failed
    if policy == "Always":
        return True
    return policy == "OnFailure" and failed


def carried_restart_counts(previous: Iterable[client.V1ContainerStatus]) -> dict[str, int]:
    """Restart counts for a pod run again after its node restarted: the containers the old
    status shows running or terminated run once more, and that counts as a restart."""
    return {
        s.name: (s.restart_count or 0) + 1
        for s in previous
        if s.state is not None and (s.state.running or s.state.terminated)
    }


def with_condition(
    conditions: Mapping[str, Condition], kind: str, value: bool, *, now: str
) -> dict[str, Condition]:
    """``conditions`` with ``kind`` set to ``value``; its transition time moves only when its
    status changes, and a condition keeps its place in the list."""
    text = "True" if value else "False"
    current = conditions.get(kind)
    if current is not None and current["status"] == text:
        return dict(conditions)
    return {
        **conditions,
        kind: {"type": kind, "status": text, "lastProbeTime": None, "lastTransitionTime": now},
    }


def readiness_conditions(
    conditions: Mapping[str, Condition], containers: Sequence[ContainerSnapshot], *, now: str
) -> dict[str, Condition]:
    """``conditions`` with Initialized, ContainersReady and Ready brought up to date."""
    mains = [c for c in containers if not c.init]
    initialized = all(c.succeeded for c in containers if c.init)
    ready = initialized and all(c.ready for c in mains)
    updated = with_condition(conditions, "Initialized", initialized, now=now)
    updated = with_condition(updated, "ContainersReady", ready, now=now)
    return with_condition(updated, "Ready", ready, now=now)


def pod_status(
    containers: Sequence[ContainerSnapshot],
    *,
    restart_policy: str | None,
    conditions: Mapping[str, Condition],
    host_ip: str,
    pod_ip: str | None,
    start_time: str,
) -> dict[str, Any]:
    """The status to patch onto the Pod; ``pod_ip`` is None until the sandbox is attached."""
    mains = [c for c in containers if not c.init]
    inits = [c for c in containers if c.init]
    status: dict[str, Any] = {
        "phase": phase(containers, restart_policy=restart_policy),
        "conditions": list(conditions.values()),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "containerStatuses": [container_status(c, restart_policy=restart_policy) for c in mains],
    }
    if inits:
        status["initContainerStatuses"] = [
            container_status(c, restart_policy=restart_policy) for c in inits
        ]
    if pod_ip is not None:
        status["podIP"] = pod_ip
        # Replaced, not merged: a pod restarted in a new sandbox after its node came back
        # has a new address, and a merged list would keep the old one too (the API server
        # refuses two addresses of one family, and the status would go on naming the old).
        status["podIPs"] = [{"ip": pod_ip}, {"$patch": "replace"}]
    return status


def phase(containers: Sequence[ContainerSnapshot], *, restart_policy: str | None) -> str:
    mains = [c for c in containers if not c.init]
    if any(c.running for c in mains):
        return "Running"

    def finished(c: ContainerSnapshot) -> bool:
        return c.terminated is not None and not will_restart(
            restart_policy, init=c.init, terminated=c.terminated
        )

    if any(c.init and finished(c) and not exited_cleanly(c.terminated) for c in containers):
        return "Failed"  # restartPolicy Never: the main containers will never start
    done = [c.terminated for c in mains if c.terminated is not None and finished(c)]
    if len(done) == len(mains):
        return "Succeeded" if all(t["exitCode"] == 0 for t in done) else "Failed"
    if any(c.restarts or c.terminated for c in mains):
        return "Running"
    return "Pending"


def container_status(c: ContainerSnapshot, *, restart_policy: str | None) -> dict[str, Any]:
    state: dict[str, Any]
    if c.running:
        state = {"running": {"startedAt": c.started_at}}
        container_id = f"testbed://{c.pid}"
    elif c.terminated is not None and not will_restart(
        restart_policy, init=c.init, terminated=c.terminated
    ):
        state = {"terminated": c.terminated}
        container_id = c.terminated["containerID"]
    else:
        waiting: dict[str, Any] = {"reason": c.waiting_reason or "ContainerCreating"}
        if c.waiting_message:
            waiting["message"] = c.waiting_message
        state = {"waiting": waiting}
        container_id = ""
    result: dict[str, Any] = {
        "name": c.name,
        "image": c.image,
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
