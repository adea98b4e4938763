"""Rolling updates (kube.rolling): one replica at a time, followers first, the leader last
after a switchover, never below a majority in sync; and the revision that decides it."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from gitquorum.kube import manifests, rolling
from gitquorum.kube.planning import Durable, Member, Observed
from gitquorum.kube.spec import RepositorySpec
from gitquorum.replication import decisions, versions
from gitquorum.replication.reports import ReplicaStatus
from tests.unit import statuses

pytestmark = pytest.mark.unit

NEW, OLD = "new", "old"
OWNER = {"metadata": {"name": "repo", "namespace": "ns", "uid": "u-1"}}


def report(*, state: str = "InSync", configured: int = 1, protocol: object = None) -> ReplicaStatus:
    return statuses.status(
        state=state,
        configuredTerm=configured,
        protocol=protocol if protocol is not None else versions.describe(),
    )


def replica(name: str, revision: str = NEW, **changes: object) -> Observed:
    base: dict = {"pod": True, "phase": "Running", "ip": "10.0.0.1", "claim": True}
    base["report"] = report()
    base.update(changes)
    return Observed(name, revision=revision, **base)


def durable(count: int = 3, leader: str = "r-1") -> Durable:
    members = tuple(Member(f"r-{i}", True) for i in range(1, count + 1))
    return Durable(term=1, leader=leader, members=members, next_serial=count + 1)


def plan(observed: dict[str, Observed], *, count: int = 3, strategy: str = "RollingUpdate"):
    return rolling.plan(durable(count), observed, revision=NEW, replicas=count, strategy=strategy)


def test_plan_nothing_when_every_replica_is_updated():
    observed = {f"r-{i}": replica(f"r-{i}") for i in (1, 2, 3)}
    assert plan(observed).action is rolling.Action.NONE


def test_plan_replaces_followers_before_the_leader():
    observed = {f"r-{i}": replica(f"r-{i}", OLD) for i in (1, 2, 3)}
    update = plan(observed)
    assert update.action is rolling.Action.REPLACE and update.replica == "r-2"
    assert update.outdated == ("r-1", "r-2", "r-3")


def test_plan_switches_over_when_only_the_leader_is_outdated():
    observed = {"r-1": replica("r-1", OLD), "r-2": replica("r-2"), "r-3": replica("r-3")}
    update = plan(observed)
    assert update.action is rolling.Action.SWITCHOVER and update.replica == "r-2"


def test_plan_switchover_prefers_an_updated_follower():
    observed = {"r-1": replica("r-1", OLD), "r-2": replica("r-2", OLD), "r-3": replica("r-3")}
    assert rolling.switchover_target(durable(), observed, revision=NEW) == "r-3"


def test_plan_waits_while_the_previous_replacement_is_not_back_in_sync():
    observed = {
        "r-1": replica("r-1", OLD),
        "r-2": replica("r-2", report=report(state="Behind")),
        "r-3": replica("r-3", OLD),
    }
    update = plan(observed)
    assert update.action is rolling.Action.WAIT and "r-2 is Behind" in update.message


def test_plan_waits_while_a_pod_is_being_deleted():
    observed = {f"r-{i}": replica(f"r-{i}", OLD) for i in (1, 2, 3)}
    observed["r-3"] = replica("r-3", OLD, deleting=True)
    assert plan(observed).action is rolling.Action.WAIT


def test_plan_waits_for_a_replica_that_has_not_taken_the_term():
    observed = {f"r-{i}": replica(f"r-{i}", OLD) for i in (1, 2, 3)}
    observed["r-2"] = replica("r-2", OLD, report=report(configured=0))
    update = plan(observed)
    assert update.action is rolling.Action.WAIT and "term 1" in update.message


def test_plan_waits_while_the_membership_changes():
    observed = {f"r-{i}": replica(f"r-{i}", OLD) for i in (1, 2, 3)}
    update = rolling.plan(durable(3), observed, revision=NEW, replicas=5, strategy="RollingUpdate")
    assert update.action is rolling.Action.WAIT and "membership" in update.message


def test_plan_on_delete_only_reports():
    observed = {f"r-{i}": replica(f"r-{i}", OLD) for i in (1, 2, 3)}
    update = plan(observed, strategy="OnDelete")
    assert update.action is rolling.Action.REPORT and "OnDelete" in update.message


def test_plan_waits_for_replicas_that_do_not_accept_the_new_protocol():
    observed = {f"r-{i}": replica(f"r-{i}", OLD) for i in (1, 2, 3)}
    newer_only = {"speaks": 2, "oldest": versions.CURRENT + 1, "newest": versions.CURRENT + 1}
    observed["r-3"] = replica("r-3", OLD, report=report(protocol=newer_only))
    update = plan(observed)
    assert update.action is rolling.Action.WAIT and "protocol" in update.message


def test_plan_two_replicas_never_replaced_automatically():
    observed = {f"r-{i}": replica(f"r-{i}", OLD) for i in (1, 2)}
    update = plan(observed, count=2)
    assert update.action is rolling.Action.WAIT and "every push needs all" in update.message


def test_plan_single_replica_is_replaced_in_place():
    update = plan({"r-1": replica("r-1", OLD)}, count=1)
    assert update.action is rolling.Action.REPLACE and update.replica == "r-1"


@pytest.mark.parametrize("count", [3, 4, 5])
def test_plan_never_replaces_when_fewer_than_a_majority_would_stay_in_sync(count: int) -> None:
    """Over every combination of in-sync and outdated replicas: a replacement (or switchover)
    is chosen only when every member is in sync, so the others keep a majority."""
    names = [f"r-{i}" for i in range(1, count + 1)]
    states = ("InSync", "Behind", "Rebuilding")
    for combination in itertools.product(states, (OLD, NEW), repeat=count):
        per_replica = list(zip(combination[::2], combination[1::2], strict=True))
        observed = {
            name: replica(name, revision, report=report(state=state))
            for name, (state, revision) in zip(names, per_replica, strict=True)
        }
        update = plan(observed, count=count)
        if update.action not in (rolling.Action.REPLACE, rolling.Action.SWITCHOVER):
            continue
        others = [n for n in names if n != update.replica and observed[n].in_sync]
        assert len(others) >= decisions.quorum(count), (combination, update)
        if update.action is rolling.Action.REPLACE:
            assert update.replica != "r-1", "the leader is never replaced before a switchover"


def test_switchover_target_refuses_a_replica_not_in_sync():
    observed = {
        "r-1": replica("r-1"),
        "r-2": replica("r-2", report=report(state="Behind")),
        "r-3": replica("r-3"),
    }
    assert rolling.switchover_target(durable(), observed, wanted="r-2") is None
    assert rolling.switchover_target(durable(), observed, wanted="r-3") == "r-3"
    assert rolling.switchover_target(durable(), observed) == "r-3"


def test_revision_changes_with_image_and_resources_only():
    spec = RepositorySpec()
    base = manifests.revision(OWNER, spec, image="img:1")
    assert manifests.revision(OWNER, spec, image="img:1") == base
    assert manifests.revision(OWNER, spec, image="img:2") != base
    bigger = RepositorySpec(requests={"cpu": "1", "memory": "1Gi"})
    assert manifests.revision(OWNER, bigger, image="img:1") != base
    # The owner's uid and the replica's name are not part of it: every replica shares it.
    other = {"metadata": {**OWNER["metadata"], "uid": "u-2"}}
    assert manifests.revision(other, spec, image="img:1") == base


def test_revision_is_stamped_on_every_replica_pod():
    spec = RepositorySpec()
    pod = manifests.replica_pod(OWNER, "repo-2", spec, image="img:1")
    assert pod["metadata"]["annotations"]["gitquorum.io/revision"] == manifests.revision(
        OWNER, spec, image="img:1"
    )


def test_versions_status_without_protocol_understands_only_version_one():
    old = dataclasses.replace(statuses.status(), protocol=None)
    assert old.understands(1) and not old.understands(2)
    assert statuses.status().understands(versions.CURRENT)


@pytest.mark.parametrize("value", ["x", "-1", "1.0", "9999999", ""])
def test_rejects_malformed_protocol_header(value: str) -> None:
    with pytest.raises(ValueError):
        versions.parse(value)


def test_slots_bound_the_repositories_rolling_at_once():
    slots = rolling.Slots(2)
    assert slots.take("a") and slots.take("b")
    assert not slots.take("c"), "a third repository waits"
    assert slots.take("a"), "a repository keeps its slot until its update is done"
    slots.release("a")
    assert slots.take("c")


def test_switchover_asked_away_from_a_damaged_leader():
    from gitquorum.kube import updating

    observed = {
        "r-1": replica("r-1", report=report(state="Damaged")),
        "r-2": replica("r-2"),
        "r-3": replica("r-3"),
    }
    part = updating.Updating.__new__(updating.Updating)
    asked = part._switchover_asked({"metadata": {"name": "r"}}, durable(), observed)
    assert asked is not None and asked[0] == "r-2" and "damaged" in asked[1]
