"""The testbed's pod status (``gitquorum_testbed/podstatus.py``): phases, container statuses,
restart counts and conditions computed from snapshots of the containers' records."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest
from kubernetes import client

from gitquorum_testbed import podstatus

pytestmark = pytest.mark.unit

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:00:05Z"
T2 = "2024-05-01T10:00:09Z"


def _container(name: str = "main", **changes: Any) -> podstatus.ContainerSnapshot:
    """A main container that has not started yet, with ``changes`` applied."""
    waiting = podstatus.ContainerSnapshot(
        name=name,
        image="",
        init=False,
        pid=None,
        started_at=None,
        restarts=0,
        terminated=None,
        last_state=None,
        waiting_reason="ContainerCreating",
        waiting_message=None,
        startup_passed=True,
        readiness_passed=True,
    )
    return dataclasses.replace(waiting, **changes)


def _running(name: str = "main", **changes: Any) -> podstatus.ContainerSnapshot:
    return _container(name, pid=41, started_at=T0, waiting_reason="", **changes)


def _exited(code: int, *, pid: int = 41) -> dict[str, Any]:
    return {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": T0,
        "finishedAt": T1,
        "containerID": f"testbed://{pid}",
    }


def _phase(*containers: podstatus.ContainerSnapshot, policy: str | None = None) -> str:
    return podstatus.phase(containers, restart_policy=policy)


def _status(
    *containers: podstatus.ContainerSnapshot,
    policy: str | None = "Always",
    pod_ip: str | None = None,
) -> dict[str, Any]:
    return podstatus.pod_status(
        containers,
        restart_policy=policy,
        conditions=podstatus.readiness_conditions({}, containers, now=T0),
        host_ip="10.244.1.1",
        pod_ip=pod_ip,
        start_time=T0,
    )


# --- phases --------------------------------------------------------------------------------


def test_phase_pending_before_any_container_started():
    assert _phase(_container()) == "Pending"


def test_phase_pending_while_init_containers_run():
    init = _running("setup", init=True)
    assert _phase(init, _container()) == "Pending"


def test_phase_running_while_a_main_container_runs():
    assert _phase(_running("a"), _container("b")) == "Running"


def test_phase_running_while_a_crashed_container_waits_to_restart():
    crashed = _container(terminated=_exited(1), waiting_reason="CrashLoopBackOff")
    assert _phase(crashed, policy="Always") == "Running"


def test_phase_running_between_restarts_after_a_clean_exit_under_always():
    between = _container(restarts=2, last_state={"terminated": _exited(0)})
    assert _phase(between, policy="Always") == "Running"


def test_phase_succeeded_when_every_container_exited_cleanly_and_stays_down():
    done = (_container("a", terminated=_exited(0)), _container("b", terminated=_exited(0)))
    assert _phase(*done, policy="Never") == "Succeeded"
    assert _phase(*done, policy="OnFailure") == "Succeeded"


def test_phase_failed_when_a_container_failed_and_restart_policy_is_never():
    done = (_container("a", terminated=_exited(0)), _container("b", terminated=_exited(2)))
    assert _phase(*done, policy="Never") == "Failed"


def test_phase_running_while_another_container_still_has_to_finish():
    done = (_container("a", terminated=_exited(0)), _container("b", restarts=1))
    assert _phase(*done, policy="Never") == "Running"


def test_phase_failed_when_an_init_container_failed_under_never():
    init = _container("setup", init=True, terminated=_exited(1))
    assert _phase(init, _container(), policy="Never") == "Failed"


def test_phase_pending_when_a_failed_init_container_will_be_retried():
    init = _container("setup", init=True, terminated=_exited(1))
    assert _phase(init, _container(), policy="OnFailure") == "Pending"
    assert _phase(init, _container(), policy="Always") == "Pending"


# --- restarts ------------------------------------------------------------------------------


def test_will_restart_follows_the_restart_policy():
    ok, failed = _exited(0), _exited(1)
    assert podstatus.will_restart(None, init=False, terminated=ok), "Always is the default"
    assert podstatus.will_restart("Always", init=False, terminated=ok)
    assert not podstatus.will_restart("OnFailure", init=False, terminated=ok)
    assert podstatus.will_restart("OnFailure", init=False, terminated=failed)
    assert not podstatus.will_restart("Never", init=False, terminated=failed)


def test_will_restart_init_containers_only_after_a_failure():
    assert not podstatus.will_restart("Always", init=True, terminated=_exited(0))
    assert podstatus.will_restart("Always", init=True, terminated=_exited(1))
    assert podstatus.will_restart("OnFailure", init=True, terminated=_exited(1))
    assert not podstatus.will_restart("Never", init=True, terminated=_exited(1))


def test_carried_restart_counts_count_a_node_restart_as_a_restart():
    def status(name: str, restarts: int, **state: Any) -> client.V1ContainerStatus:
        return client.V1ContainerStatus(
            name=name,
            restart_count=restarts,
            state=client.V1ContainerState(**state),
            image="",
            image_id="",
            ready=False,
        )

    previous = [
        status("running", 3, running=client.V1ContainerStateRunning()),
        status("exited", 0, terminated=client.V1ContainerStateTerminated(exit_code=1)),
        status("waiting", 5, waiting=client.V1ContainerStateWaiting(reason="ContainerCreating")),
    ]
    assert podstatus.carried_restart_counts(previous) == {"running": 4, "exited": 1}


def test_carried_restart_counts_empty_for_a_new_pod():
    assert podstatus.carried_restart_counts([]) == {}


# --- container statuses --------------------------------------------------------------------


def test_container_status_running_names_the_process():
    status = podstatus.container_status(_running(), restart_policy="Always")
    assert status["state"] == {"running": {"startedAt": T0}}
    assert status["containerID"] == "testbed://41"
    assert status["ready"] is True and status["started"] is True


def test_container_status_waiting_has_no_container_id_and_carries_the_message():
    waiting = _container(waiting_reason="CreateContainerConfigError", waiting_message="no key x")
    status = podstatus.container_status(waiting, restart_policy="Always")
    assert status["state"] == {
        "waiting": {"reason": "CreateContainerConfigError", "message": "no key x"}
    }
    assert "containerID" not in status
    assert status["ready"] is False and status["started"] is False


def test_container_status_waiting_reason_defaults_to_container_creating():
    status = podstatus.container_status(_container(waiting_reason=""), restart_policy="Always")
    assert status["state"] == {"waiting": {"reason": "ContainerCreating"}}


def test_container_status_terminated_when_it_will_not_restart():
    exited = _container(terminated=_exited(3, pid=77))
    status = podstatus.container_status(exited, restart_policy="Never")
    assert status["state"] == {"terminated": _exited(3, pid=77)}
    assert status["containerID"] == "testbed://77"


def test_container_status_waiting_when_the_exit_will_be_restarted():
    crashed = _container(terminated=_exited(1), waiting_reason="CrashLoopBackOff")
    status = podstatus.container_status(crashed, restart_policy="Always")
    assert status["state"] == {"waiting": {"reason": "CrashLoopBackOff"}}


def test_container_status_last_state_after_a_restart():
    restarted = _running(restarts=1, last_state={"terminated": _exited(1, pid=12)})
    status = podstatus.container_status(restarted, restart_policy="Always")
    assert status["restartCount"] == 1
    assert status["lastState"] == {"terminated": _exited(1, pid=12)}
    assert podstatus.container_status(_running(), restart_policy="Always")["lastState"] == {}


def test_container_status_not_started_until_the_startup_probe_passes():
    status = podstatus.container_status(_running(startup_passed=False), restart_policy="Always")
    assert status["started"] is False and status["ready"] is False


def test_container_status_started_but_not_ready_until_readiness_passes():
    status = podstatus.container_status(_running(readiness_passed=False), restart_policy="Always")
    assert status["started"] is True and status["ready"] is False


def test_container_status_neither_ready_nor_started_when_not_running():
    exited = _container(terminated=_exited(0), startup_passed=True, readiness_passed=True)
    status = podstatus.container_status(exited, restart_policy="Never")
    assert status["started"] is False and status["ready"] is False


# --- conditions ----------------------------------------------------------------------------


def _statuses(conditions: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {kind: c["status"] for kind, c in conditions.items()}


def test_readiness_conditions_ready_when_every_main_container_is_ready():
    conditions = podstatus.readiness_conditions({}, [_running("a"), _running("b")], now=T0)
    assert _statuses(conditions) == {
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }


def test_readiness_conditions_not_ready_while_one_container_is_not():
    containers = [_running("a"), _running("b", readiness_passed=False)]
    conditions = podstatus.readiness_conditions({}, containers, now=T0)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["ContainersReady"]["status"] == "False"


def test_readiness_conditions_not_initialized_until_init_containers_succeed():
    running = [_running("setup", init=True), _container()]
    assert _statuses(podstatus.readiness_conditions({}, running, now=T0)) == {
        "Initialized": "False",
        "ContainersReady": "False",
        "Ready": "False",
    }
    done = [_container("setup", init=True, terminated=_exited(0)), _running()]
    assert _statuses(podstatus.readiness_conditions({}, done, now=T0))["Initialized"] == "True"


def test_with_condition_keeps_transition_time_while_status_is_unchanged():
    first = podstatus.with_condition({}, "Ready", True, now=T0)
    again = podstatus.with_condition(first, "Ready", True, now=T1)
    assert again["Ready"]["lastTransitionTime"] == T0
    flipped = podstatus.with_condition(again, "Ready", False, now=T2)
    assert flipped["Ready"] == {
        "type": "Ready",
        "status": "False",
        "lastProbeTime": None,
        "lastTransitionTime": T2,
    }
    assert first["Ready"]["status"] == "True", "the conditions given are not changed"


def test_with_condition_keeps_each_condition_in_its_place():
    conditions = podstatus.with_condition({}, "PodReadyToStartContainers", True, now=T0)
    conditions = podstatus.readiness_conditions(conditions, [_running()], now=T0)
    conditions = podstatus.with_condition(conditions, "PodReadyToStartContainers", False, now=T1)
    assert list(conditions) == [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ]


# --- the whole status ----------------------------------------------------------------------


def test_pod_status_has_no_pod_ip_before_the_sandbox_is_attached():
    status = _status(_container())
    assert "podIP" not in status and "podIPs" not in status
    assert status["hostIP"] == "10.244.1.1"
    assert status["hostIPs"] == [{"ip": "10.244.1.1"}]
    assert status["startTime"] == T0


def test_pod_status_replaces_pod_ips_once_attached():
    status = _status(_running(), pod_ip="10.244.1.7")
    assert status["podIP"] == "10.244.1.7"
    assert status["podIPs"] == [{"ip": "10.244.1.7"}, {"$patch": "replace"}]


def test_pod_status_lists_init_containers_apart_only_when_there_are_some():
    assert "initContainerStatuses" not in _status(_running())
    status = _status(_container("setup", init=True, terminated=_exited(0)), _running())
    assert [s["name"] for s in status["initContainerStatuses"]] == ["setup"]
    assert [s["name"] for s in status["containerStatuses"]] == ["main"]
    assert status["initContainerStatuses"][0]["state"] == {"terminated": _exited(0)}


def test_pod_status_reports_phase_and_conditions_together():
    status = _status(_running())
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


def test_timestamp_is_the_api_format_to_the_second():
    moment = datetime.datetime(2024, 5, 1, 10, 0, 5, 999, tzinfo=datetime.UTC)
    assert podstatus.timestamp(moment) == T1
