"""The objects the operator owns for a repository, as plain manifests (pure functions).

Replicas are bare pods with one PVC each, named alike (CloudNativePG's way, not a
StatefulSet): the operator must choose which replica to replace and when. Placement keeps
replicas of one repository on different nodes (required: a replica that fits nowhere stays
Pending, which is what makes the cluster autoscaler add a node) and spreads them over zones.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gitquorum.kube import names
from gitquorum.kube.spec import RepositorySpec
from gitquorum.replication import decisions, invocation

Manifest = dict[str, Any]

REPLICATION_MOUNT = "/etc/gitquorum/replication"
AUTH_MOUNT = "/etc/gitquorum/auth"
DATA_MOUNT = "/data"
ZONE_KEY = "topology.kubernetes.io/zone"
TERMINATION_GRACE_SECONDS = 30
"""A leader pod's deletion is the window of its switchover (the replica waits up to
``LEAVE_SECONDS`` for it), followed by draining the requests in flight."""
LEAVE_SECONDS = 20
STOP_DELAY_SECONDS = 5
"""How long a stopping replica goes on accepting connections while reporting not ready, for its
endpoint to leave every node's Service routing first (kube-proxy applies changes within a
second or two; large clusters take longer). It runs alongside the switchover wait."""
_TEMPLATE_REPLICA = "<replica>"
HOSTNAME_KEY = "kubernetes.io/hostname"


def owner_reference(owner: Mapping[str, Any]) -> Manifest:
    return {
        "apiVersion": f"{names.GROUP}/{names.VERSION}",
        "kind": names.KIND,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(
    name: str, owner: Mapping[str, Any] | None, labels: Mapping[str, str], **extra: Any
) -> Manifest:
    metadata: Manifest = {"name": name, "labels": dict(labels), **extra}
    if owner is not None:
        metadata["ownerReferences"] = [owner_reference(owner)]
    return metadata


def volume_claim(repository: str, replica: str, spec: RepositorySpec) -> Manifest:
    """A replica's volume. Not owned by the GitRepository: ``reclaimPolicy`` decides its fate."""
    claim: Manifest = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(replica, None, names.labels(repository, replica)),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage_size}},
        },
    }
    if spec.storage_class:
        claim["spec"]["storageClassName"] = spec.storage_class
    return claim


def replica_pod(
    owner: Mapping[str, Any], replica: str, spec: RepositorySpec, *, image: str
) -> Manifest:
    """A replica's pod, annotated with the revision of what it renders (``revision``)."""
    pod = _replica_pod(owner, replica, spec, image=image)
    pod["metadata"]["annotations"][names.REVISION] = revision(owner, spec, image=image)
    return pod


def revision(owner: Mapping[str, Any], spec: RepositorySpec, *, image: str) -> str:
    """A short hash of everything rendered into a replica pod that can change (image,
    command, resources, environment, probes, security context, placement, labels and
    annotations), the same for every replica: a pod of another revision is outdated."""
    template = _replica_pod(owner, _TEMPLATE_REPLICA, spec, image=image)
    rendered = {
        "labels": {
            k: v for k, v in template["metadata"]["labels"].items() if k != names.SERVING_LABEL
        },
        "annotations": template["metadata"]["annotations"],
        "spec": template["spec"],
    }
    canonical = json.dumps(rendered, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def _replica_pod(
    owner: Mapping[str, Any], replica: str, spec: RepositorySpec, *, image: str
) -> Manifest:
    repository = owner["metadata"]["name"]
    command = invocation.ReplicaCommand(
        replica=replica,
        name=repository,
        data=DATA_MOUNT,
        listen=f"0.0.0.0:{names.GIT_PORT}",
        peer_listen=f"0.0.0.0:{names.PEER_PORT}",
        peer_token_file=f"{REPLICATION_MOUNT}/peer-token",
        admin_token_file=f"{REPLICATION_MOUNT}/admin-token",
        auth_file=f"{AUTH_MOUNT}/users",
        policy_file=f"{AUTH_MOUNT}/{names.POLICY_KEY}",
        notifications_file=f"{AUTH_MOUNT}/{names.NOTIFICATIONS_KEY}",
        ssh_port=names.SSH_PORT,
        ssh_host_key=f"{REPLICATION_MOUNT}/{names.SSH_HOST_KEY}",
        ssh_keys_file=f"{AUTH_MOUNT}/{names.SSH_KEYS_KEY}",
        anonymous_read=spec.anonymous_read,
        leave_timeout=LEAVE_SECONDS,
        stop_delay=STOP_DELAY_SECONDS,
        # Maintenance and scrubs only under the operator's permits, inside the window.
        maintenance_permits=spec.maintenance_window is not None,
    ).argv()
    resources: Manifest = {"requests": dict(spec.requests)}
    if spec.limits:
        resources["limits"] = dict(spec.limits)
    pod_spec: Manifest = {
        "automountServiceAccountToken": False,  # replicas never talk to the API server
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": names.USER_ID,
            "runAsGroup": names.USER_ID,
            "fsGroup": names.USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": placement(repository, spec),
        "containers": [
            {
                "name": "replica",
                "image": image,
                "command": command,
                "env": [{"name": "HOME", "value": "/tmp"}],
                "ports": [
                    {"name": "git", "containerPort": names.GIT_PORT},
                    {"name": "replication", "containerPort": names.PEER_PORT},
                    {"name": "ssh", "containerPort": names.SSH_PORT},
                ],
                "readinessProbe": {
                    "httpGet": {"path": "/readyz", "port": "git"},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "git"},
                    "periodSeconds": 10,
                    "failureThreshold": 3,
                },
                "resources": resources,
                "securityContext": {
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "data", "mountPath": DATA_MOUNT},
                    {"name": "replication", "mountPath": REPLICATION_MOUNT, "readOnly": True},
                    {"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": replica}},
            {
                "name": "replication",
                "secret": {"secretName": names.replication_secret(repository)},
            },
            {"name": "auth", "secret": {"secretName": names.auth_secret(repository)}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [
            {
                key: value
                for key, value in (
                    ("key", item.key),
                    ("operator", item.operator),
                    ("value", item.value),
                    ("effect", item.effect),
                    ("tolerationSeconds", item.seconds),
                )
                if value is not None
            }
            for item in spec.tolerations
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(
            replica,
            owner,
            {**names.labels(repository, replica), names.SERVING_LABEL: "false"},
            # Bare pods owned by a custom controller block the autoscaler's scale-down unless
            # they say they may go; the PDB still guards the majority, and we heal the rest.
            annotations={names.SAFE_TO_EVICT: "true"},
        ),
        "spec": pod_spec,
    }


def placement(repository: str, spec: RepositorySpec) -> Manifest:
    """One replica per node (required), spread over zones as the spec asks."""
    same_repository = {
        "matchLabels": {names.REPOSITORY_LABEL: repository},
        "matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "In", "values": ["replica"]}
        ],
    }
    anti: Manifest = {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": same_repository, "topologyKey": HOSTNAME_KEY}
        ]
    }
    if spec.zone_spread == "Required":
        anti["requiredDuringSchedulingIgnoredDuringExecution"].append(
            {"labelSelector": same_repository, "topologyKey": ZONE_KEY}
        )
    elif spec.zone_spread == "Preferred":
        anti["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {
                "weight": 100,
                "podAffinityTerm": {"labelSelector": same_repository, "topologyKey": ZONE_KEY},
            }
        ]
    return {"podAntiAffinity": anti}


def service(owner: Mapping[str, Any]) -> Manifest:
    repository = owner["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names.service(repository), owner, names.labels(repository)),
        "spec": {
            "type": "ClusterIP",
            "selector": {
                names.REPOSITORY_LABEL: repository,
                "app.kubernetes.io/component": "replica",
                names.SERVING_LABEL: "true",
            },
            "ports": [
                {"name": "http", "port": 80, "targetPort": "git", "protocol": "TCP"},
                {
                    "name": "ssh",
                    "port": names.SSH_SERVICE_PORT,
                    "targetPort": "ssh",
                    "protocol": "TCP",
                },
            ],
        },
    }


def secret(
    owner: Mapping[str, Any],
    name: str,
    data: Mapping[str, str],
    *,
    annotations: Mapping[str, str] | None = None,
) -> Manifest:
    repository = owner["metadata"]["name"]
    extra = {"annotations": dict(annotations)} if annotations else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(name, owner, names.labels(repository), **extra),
        "stringData": dict(data),
    }


def budget(replicas: int) -> int:
    """minAvailable: one voluntary eviction at a time, never below the majority."""
    return max(decisions.quorum(replicas), replicas - 1)


def disruption_budget(owner: Mapping[str, Any], replicas: int) -> Manifest:
    """Voluntary evictions (drains, autoscaler scale-down) go one at a time and never take
    away the majority."""
    repository = owner["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(names.disruption_budget(repository), owner, names.labels(repository)),
        "spec": {
            "minAvailable": budget(replicas),
            "selector": {
                "matchLabels": {
                    names.REPOSITORY_LABEL: repository,
                    "app.kubernetes.io/component": "replica",
                }
            },
        },
    }


def network_policy(owner: Mapping[str, Any]) -> Manifest:
    """Clients may reach the git ports (HTTP, SSH); only this repository's replicas and the
    operator reach the replication and admin port."""
    repository = owner["metadata"]["name"]
    replicas = {"matchLabels": {names.REPOSITORY_LABEL: repository}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(names.network_policy(repository), owner, names.labels(repository)),
        "spec": {
            "podSelector": replicas,
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "ports": [
                        {"protocol": "TCP", "port": names.GIT_PORT},
                        {"protocol": "TCP", "port": names.SSH_PORT},
                    ]
                },
                {
                    "from": [
                        {"podSelector": replicas},
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": dict(names.OPERATOR_LABELS)},
                        },
                    ],
                    "ports": [{"protocol": "TCP", "port": names.PEER_PORT}],
                },
            ],
        },
    }
