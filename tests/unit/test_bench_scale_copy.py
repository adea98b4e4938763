"""The scale benchmark's reference copies what the operator made, minus what others filled in."""

from bench import operator_scale


def _made(kind_spec: dict, **metadata: object) -> dict:
    return {
        "metadata": {
            "name": "r0001",
            "uid": "u-1",
            "resourceVersion": "7",
            "labels": {"gitquorum.io/repository": "r0001", "gitquorum.io/replica": "r0001-0"},
            "ownerReferences": [{"kind": "GitRepository", "name": "r0001"}],
            **metadata,
        },
        **kind_spec,
    }


def test_copy_of_a_service_drops_its_cluster_ip_and_renames_its_selector() -> None:
    made = _made(
        {
            "spec": {
                "clusterIP": "10.96.0.7",
                "clusterIPs": ["10.96.0.7"],
                "selector": {"gitquorum.io/repository": "r0001"},
                "ports": [{"port": 80}],
            },
            "status": {"loadBalancer": {}},
        }
    )

    copy = operator_scale._copy("Service", made)

    assert copy["apiVersion"] == "v1" and copy["kind"] == "Service"
    assert copy["spec"] == {
        "selector": {"bench.gitquorum.io/repository": "r0001"},
        "ports": [{"port": 80}],
    }
    assert set(copy["metadata"]) == {"name", "labels"}
    assert "gitquorum.io/repository" not in copy["metadata"]["labels"]


def test_copy_of_a_secret_keeps_its_data_and_type_without_owner() -> None:
    made = _made({"type": "Opaque", "data": {"password": "cw=="}}, annotations={"a": "b"})

    copy = operator_scale._copy("Secret", made)

    assert copy["data"] == {"password": "cw=="} and copy["type"] == "Opaque"
    assert copy["metadata"]["annotations"] == {"a": "b"}
    assert "ownerReferences" not in copy["metadata"] and "spec" not in copy


def test_copy_of_a_claim_drops_the_binders_marks_and_volume() -> None:
    made = _made(
        {"spec": {"volumeName": "pv-1", "resources": {"requests": {"storage": "1Gi"}}}},
        annotations={"volume.kubernetes.io/selected-node": "hollow-1"},
    )

    copy = operator_scale._copy("PersistentVolumeClaim", made)

    assert "annotations" not in copy["metadata"]
    assert copy["spec"] == {"resources": {"requests": {"storage": "1Gi"}}}


def test_copy_of_a_budget_gets_its_api_group() -> None:
    copy = operator_scale._copy("PodDisruptionBudget", _made({"spec": {"maxUnavailable": 1}}))

    assert copy["apiVersion"] == "policy/v1"
