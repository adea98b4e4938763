"""The operator's pure parts: spec defaults, manifests, derived status, names."""

from __future__ import annotations

import datetime

import pytest

from gitquorum.kube import manifests, names, planning, reconciler, status
from gitquorum.kube.planning import Durable, Member, Observed
from gitquorum.kube.spec import RepositorySpec
from tests.unit import statuses

pytestmark = pytest.mark.unit

OWNER = {"metadata": {"name": "repo", "namespace": "ns", "uid": "u-1", "generation": 2}}


def test_spec_empty_gets_the_crd_defaults():
    spec = RepositorySpec.from_body({})
    assert (spec.replicas, spec.storage_size, spec.reclaim_policy) == (3, "1Gi", "Retain")
    assert spec.zone_spread == "Preferred" and spec.credentials_secret is None
    assert spec.requests == {"cpu": "100m", "memory": "128Mi"}


def test_spec_reads_every_field():
    spec = RepositorySpec.from_body(
        {
            "replicas": 5,
            "storage": {"size": "5Gi", "storageClassName": "fast"},
            "resources": {"requests": {"cpu": 1}, "limits": {"memory": "1Gi"}},
            "placement": {
                "nodeSelector": {"pool": "git"},
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "zoneSpread": "Required",
            },
            "auth": {"credentialsSecret": "mine"},
            "anonymousRead": True,
            "reclaimPolicy": "Delete",
        }
    )
    assert spec.replicas == 5 and spec.storage_class == "fast" and spec.requests == {"cpu": "1"}
    assert spec.node_selector == {"pool": "git"} and spec.tolerations[0].key == "k"
    assert spec.credentials_secret == "mine" and spec.anonymous_read
    assert spec.reclaim_policy == "Delete" and spec.zone_spread == "Required"


def test_replica_pod_is_placed_apart_secured_and_evictable():
    spec = RepositorySpec.from_body(
        {"anonymousRead": True, "placement": {"zoneSpread": "Required"}}
    )
    pod = manifests.replica_pod(OWNER, "repo-4", spec, image="img:1")
    anti = pod["spec"]["affinity"]["podAntiAffinity"]
    keys = [t["topologyKey"] for t in anti["requiredDuringSchedulingIgnoredDuringExecution"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    assert pod["metadata"]["annotations"][names.SAFE_TO_EVICT] == "true"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    container = pod["spec"]["containers"][0]
    assert container["command"][:4] == ["gitquorum", "replica", "--id", "repo-4"]
    assert "--anonymous-read" in container["command"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    claim = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == "repo-4"


def test_replica_pod_preferred_zone_spread_is_weighted():
    pod = manifests.replica_pod(OWNER, "repo-1", RepositorySpec(), image="img")
    anti = pod["spec"]["affinity"]["podAntiAffinity"]
    assert len(anti["requiredDuringSchedulingIgnoredDuringExecution"]) == 1
    preferred = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert preferred["podAffinityTerm"]["topologyKey"] == "topology.kubernetes.io/zone"


def test_volume_claim_has_no_owner_so_reclaim_policy_decides():
    claim = manifests.volume_claim("repo", "repo-1", RepositorySpec(storage_class="fast"))
    assert "ownerReferences" not in claim["metadata"]
    assert claim["spec"]["storageClassName"] == "fast"


def test_disruption_budget_allows_one_eviction_at_a_time_never_below_a_majority():
    assert manifests.disruption_budget(OWNER, 5)["spec"]["minAvailable"] == 4
    assert manifests.disruption_budget(OWNER, 3)["spec"]["minAvailable"] == 2
    assert manifests.disruption_budget(OWNER, 2)["spec"]["minAvailable"] == 2
    assert manifests.disruption_budget(OWNER, 1)["spec"]["minAvailable"] == 1


def test_network_policy_opens_replication_port_to_peers_and_operator_only():
    policy = manifests.network_policy(OWNER)["spec"]["ingress"]
    assert policy[0] == {
        "ports": [
            {"protocol": "TCP", "port": names.GIT_PORT},
            {"protocol": "TCP", "port": names.SSH_PORT},
        ]
    }
    sources = policy[1]["from"]
    assert sources[0]["podSelector"]["matchLabels"] == {names.REPOSITORY_LABEL: "repo"}
    assert sources[1]["podSelector"]["matchLabels"] == names.OPERATOR_LABELS


def test_names_serials_round_trip():
    assert names.serial("repo", names.replica("repo", 12)) == 12
    assert names.serial("repo", "repo-x") is None and names.serial("repo", "other-1") is None


def _observed(name: str, state: str | None, *, writable: bool = True) -> Observed:
    report = (
        None if state is None else statuses.status(state=state, writable=writable, generation=3)
    )
    return Observed(name, pod=True, phase="Running", ip="10.0.0.1", ready=True, report=report)


def _conditions(durable: Durable, observed: dict[str, Observed]) -> dict[str, tuple]:
    found = status.conditions(durable, observed, replicas=3, blocked=None)
    return {kind: (value, reason) for kind, value, reason, _ in found}


def test_status_ready_with_leader_and_majority_in_sync():
    durable = Durable(1, "r-1", tuple(Member(f"r-{i}", True) for i in (1, 2, 3)))
    observed = {
        "r-1": _observed("r-1", "InSync"),
        "r-2": _observed("r-2", "InSync"),
        "r-3": _observed("r-3", "Rebuilding"),
    }
    found = _conditions(durable, observed)
    assert found["Ready"] == (True, "QuorumInSync")
    assert found["ReplicasInSync"] == (False, "ReplicasBehind")
    assert found["Degraded"][0] is True


def test_status_not_ready_reasons():
    durable = Durable(1, "r-1", tuple(Member(f"r-{i}", True) for i in (1, 2, 3)))
    only_leader = {"r-1": _observed("r-1", "InSync")}
    assert _conditions(durable, only_leader)["Ready"] == (False, "NoQuorum")
    assert _conditions(Durable(), {})["Ready"] == (False, "NoLeader")
    promoting = {n: _observed(n, "InSync", writable=n != "r-1") for n in ("r-1", "r-2")}
    assert _conditions(durable, promoting)["Ready"] == (False, "LeaderNotWritable")


def test_status_conditions_keep_transition_time_while_status_holds():
    then = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    later = then + datetime.timedelta(hours=1)
    first = status.merge_conditions([], [("Ready", True, "A", "a")], generation=1, now=then)
    same = status.merge_conditions(first, [("Ready", True, "B", "b")], generation=2, now=later)
    flipped = status.merge_conditions(same, [("Ready", False, "C", "c")], generation=2, now=later)
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["reason"] == "B" and same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T01:00:00Z"


def test_status_derive_reports_members_and_scale_fields():
    durable = Durable(2, "repo-1", (Member("repo-1", True), Member("repo-4", False)), 5)
    observed = {
        "repo-1": _observed("repo-1", "InSync"),
        "repo-4": Observed("repo-4", pod=True, phase="Pending", unschedulable="0/3 nodes"),
    }
    derived = status.derive(
        OWNER, durable, observed, replicas=2, credentials_secret="c", blocked=None
    )
    assert derived["replicas"] == 2 and derived["readyReplicas"] == 1
    assert derived["selector"] == names.selector("repo")
    assert derived["url"] == "http://repo.ns.svc/repo.git"
    assert derived["term"] == 2 and derived["leader"] == "repo-1" and derived["generation"] == 3
    pending = derived["replicaStatuses"][1]
    assert pending["state"] == "Pending" and pending["message"] == "0/3 nodes"
    assert planning.Durable.from_status(derived) == durable


STARTING = (Member("repo-1", True), Member("repo-2", True), Member("repo-3", True))
NO_LEADER = planning.Step(planning.Kind.NO_LEADER, "0 of 3 voters answered")


def test_no_leader_of_a_repository_starting_is_no_warning():
    unanswered = {"repo-1": Observed("repo-1", pod=True, phase="Pending")}

    assert reconciler._starting(Durable(members=STARTING), unanswered, NO_LEADER)


@pytest.mark.parametrize(
    ("durable", "observed"),
    [
        (Durable(3, None, STARTING), {}),  # it had a leader: lost, a warning
        (Durable(members=STARTING), {"repo-1": _observed("repo-1", "InSync")}),  # one answered
    ],
    ids=["had-a-leader", "replica-answered"],
)
def test_no_leader_of_a_repository_started_is_a_warning(durable, observed):
    assert not reconciler._starting(durable, observed, NO_LEADER)
