"""A GitRepository's spec as typed values, with the CRD's defaults applied again.

The CRD schema defaults and validates; reading defensively here keeps the operator correct
against objects stored before a default existed, or a CRD installed without them.
"""

import dataclasses
import json
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Toleration:
    key: str | None
    operator: str | None
    value: str | None
    effect: str | None
    seconds: int | None


CORDONED_NODE_GRACE = 300
"""Default seconds a replica waits for its cordoned node before it is rebuilt elsewhere."""
WAIT_FOREVER = -1
"""``cordonedNodeGraceSeconds: -1``: never rebuild a replica away from a cordoned node."""


@dataclasses.dataclass(frozen=True)
class RepositorySpec:
    replicas: int = 3
    storage_size: str = "1Gi"
    storage_class: str | None = None
    requests: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"cpu": "100m", "memory": "128Mi"}
    )
    limits: Mapping[str, str] = dataclasses.field(default_factory=dict)
    node_selector: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    zone_spread: str = "Preferred"
    credentials_secret: str | None = None
    anonymous_read: bool = False
    reclaim_policy: str = "Retain"
    update_strategy: str = "RollingUpdate"
    """RollingUpdate: the operator replaces outdated replicas; OnDelete: it only reports them."""
    cordoned_node_grace: int = CORDONED_NODE_GRACE
    """Seconds before a replica evicted from a cordoned node is rebuilt elsewhere; -1: never."""
    maintenance_window: Mapping[str, Any] | None = None
    """``spec.maintenance.window`` as given (``kube/windows.py`` reads it); None: any time."""
    deploy_keys: tuple[tuple[str, str], ...] = ()
    """``spec.auth.deployKeys`` as (public key, access) pairs."""
    webhooks: tuple[tuple[str, str, str, str], ...] = ()
    """``spec.notifications.webhooks`` as (name, url, format, Secret) tuples."""
    tokens: tuple[tuple[str, str], ...] = ()
    """``spec.auth.tokens`` as (Secret name, access) pairs: more HTTP accounts."""
    deploy_keys_secret: str | None = None
    """``spec.auth.deployKeysSecret``: a Secret with more deploy keys (``kube/sshaccess.py``)."""
    protected_refs: tuple[Mapping[str, Any], ...] = ()
    """``spec.protectedRefs`` as given (the CRD validates them; the replicas parse them)."""

    def policy(self) -> str:
        """The replicas' policy file (``replication/protection.py``), in one canonical form so
        that an unchanged spec never rewrites it."""
        rules = [
            {
                "pattern": str(rule.get("pattern", "")),
                "allowForcePush": bool(rule.get("allowForcePush", False)),
                "allowDeletion": bool(rule.get("allowDeletion", False)),
            }
            for rule in self.protected_refs
        ]
        return json.dumps({"protectedRefs": rules}, sort_keys=True) + "\n"

    @classmethod
    def from_body(cls, spec: Mapping[str, Any]) -> "RepositorySpec":
        storage = spec.get("storage") or {}
        resources = spec.get("resources") or {}
        placement = spec.get("placement") or {}
        auth = spec.get("auth") or {}
        default = cls()
        return cls(
            replicas=int(spec.get("replicas", default.replicas)),
            storage_size=str(storage.get("size", default.storage_size)),
            storage_class=storage.get("storageClassName"),
            requests=_quantities(resources.get("requests")) or default.requests,
            limits=_quantities(resources.get("limits")),
            node_selector={
                str(k): str(v) for k, v in (placement.get("nodeSelector") or {}).items()
            },
            tolerations=tuple(
                Toleration(
                    key=item.get("key"),
                    operator=item.get("operator"),
                    value=item.get("value"),
                    effect=item.get("effect"),
                    seconds=item.get("tolerationSeconds"),
                )
                for item in placement.get("tolerations") or ()
            ),
            zone_spread=str(placement.get("zoneSpread", default.zone_spread)),
            credentials_secret=auth.get("credentialsSecret"),
            anonymous_read=bool(spec.get("anonymousRead", False)),
            reclaim_policy=str(spec.get("reclaimPolicy", default.reclaim_policy)),
            update_strategy=str(
                (spec.get("updateStrategy") or {}).get("type") or default.update_strategy
            ),
            cordoned_node_grace=_grace(
                (spec.get("maintenance") or {}).get("cordonedNodeGraceSeconds")
            ),
            maintenance_window=(spec.get("maintenance") or {}).get("window") or None,
            protected_refs=tuple(spec.get("protectedRefs") or ()),
            deploy_keys=tuple(
                (str(item.get("publicKey", "")), str(item.get("access") or "read"))
                for item in auth.get("deployKeys") or ()
            ),
            deploy_keys_secret=auth.get("deployKeysSecret") or None,
            webhooks=tuple(
                (
                    str(item.get("name", "")),
                    str(item.get("url", "")),
                    str(item.get("format") or "generic-hmac"),
                    str(item.get("secret", "")),
                )
                for item in (spec.get("notifications") or {}).get("webhooks") or ()
            ),
            tokens=tuple(
                (str(item.get("secret", "")), str(item.get("access") or "read"))
                for item in auth.get("tokens") or ()
            ),
        )


def _quantities(values: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in (values or {}).items()}


def _grace(value: Any) -> int:
    """Absent or null means the default (a manifest may say ``null`` to ask for it)."""
    return CORDONED_NODE_GRACE if value is None else int(value)
