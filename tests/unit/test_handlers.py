"""kopf wiring (``kube/handlers``): the copy of kopf's live body a pass works on."""

from gitquorum.kube import handlers


def test_plain_copies_the_body_without_managed_fields() -> None:
    live = {
        "metadata": {"name": "app", "managedFields": [{"manager": "kopf"}], "labels": {"a": "b"}},
        "spec": {"replicas": 3, "placement": {"tolerations": [{"key": "k"}]}},
        "status": {"members": [{"name": "app-1"}]},
    }

    plain = handlers._plain(live)
    plain["spec"]["placement"]["tolerations"][0]["key"] = "changed"
    plain["status"]["members"].append({"name": "app-2"})
    plain["metadata"]["labels"]["a"] = "changed"

    assert "managedFields" not in plain["metadata"]
    assert live["spec"]["placement"]["tolerations"] == [{"key": "k"}]
    assert live["status"]["members"] == [{"name": "app-1"}]
    assert live["metadata"]["labels"] == {"a": "b"}
