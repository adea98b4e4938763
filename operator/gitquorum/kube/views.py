"""What the watch caches keep of pods, volume claims and nodes: only the fields a pass reads.

kopf's indexes hold whatever their handlers return, for as long as the object lives. A whole
pod is a few kilobytes of JSON and, as Python dicts and strings, tens of kilobytes in memory;
a node, with its images and capacity, more. At 1,000 repositories that is 3,000 pods and
3,000 claims held whole for a handful of fields. The views keep the shape of the objects (the
same keys, nested the same way) so that code reading a view reads a full object too, as
``observing`` does with a pod read again from the API server.

Whatever a pass starts reading of these objects must be added here: ``tests/unit/test_views``
feeds the pass's readers a view and the full object and expects the same answers.
"""

from collections.abc import Mapping
from typing import Any

from gitquorum.kube import names

SELECTED_NODE = "volume.kubernetes.io/selected-node"
"""The claim annotation naming the node its volume was provisioned for."""

Body = dict[str, Any]


def pod(body: Mapping[str, Any]) -> Body:
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return {
        "metadata": {
            **_identity(metadata),
            "labels": dict(metadata.get("labels") or {}),
            "annotations": _only(metadata.get("annotations"), names.REVISION),
            **_present(metadata, "deletionTimestamp"),
        },
        "spec": _present(spec, "nodeName"),
        "status": {
            **_present(status, "phase", "podIP"),
            "conditions": [
                _present(condition, "type", "status", "reason", "message")
                for condition in status.get("conditions") or ()
            ],
        },
    }


def claim(body: Mapping[str, Any]) -> Body:
    metadata = body.get("metadata") or {}
    return {
        "metadata": {
            **_identity(metadata),
            "annotations": _only(metadata.get("annotations"), SELECTED_NODE),
            **_present(metadata, "deletionTimestamp"),
        }
    }


def node(body: Mapping[str, Any]) -> Body:
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    return {
        "metadata": {"name": metadata.get("name")},
        "spec": _present(body.get("spec") or {}, "unschedulable"),
        "status": {
            "conditions": [
                _present(condition, "type", "status", "lastTransitionTime")
                for condition in status.get("conditions") or ()
                if condition.get("type") == "Ready"
            ]
        },
    }


def _identity(metadata: Mapping[str, Any]) -> Body:
    return _present(metadata, "name", "namespace", "uid", "resourceVersion")


def _only(values: Mapping[str, Any] | None, *keys: str) -> Body:
    return {key: values[key] for key in keys if values and key in values}


def _present(source: Mapping[str, Any], *keys: str) -> Body:
    return {key: source[key] for key in keys if key in source}
