"""The few Kubernetes API calls the operator makes, blocking (run them in a thread).

Creating something that already exists and deleting something already gone are successes:
every pass is level-based and may repeat the previous pass's work.
"""

import json
import logging
from collections.abc import Mapping
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from gitquorum import errors
from gitquorum.kube import names

log = logging.getLogger(__name__)


THREADS = 16
"""Threads that make the operator's API calls (the event loop's default executor), and the
connections kept to the API server for them. Each call waits on the API server most of its
time: with Python's default (cores + 4) a thousand repositories arriving at once queued
behind six calls in flight (measured with py-spy: all six threads waiting on answers)."""


REQUEST_TIMEOUT = (5.0, 60.0)
"""Seconds to connect, and to wait for an answer, for every call without a timeout of its own.
The client's own default is to wait for ever: one answer lost (a connection cut without a
reset) would hold a thread, and the pass waiting on it, until the process ends."""


class Client(client.ApiClient):
    """The Kubernetes client, every call with a deadline (:data:`REQUEST_TIMEOUT`)."""

    def call_api(
        self,
        method: Any,
        url: Any,
        header_params: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        return super().call_api(
            method,
            url,
            header_params=header_params,
            body=body,
            post_params=post_params,
            _request_timeout=_request_timeout or REQUEST_TIMEOUT,
        )

    def sanitize_for_serialization(self, obj: Any) -> Any:
        # The operator's manifests are JSON data already; the client would rebuild each one,
        # value by value, looking for models to convert: 0.75 ms of a pod create's 1.3 ms of
        # client CPU, measured, in a process whose CPU the API server needs while a thousand
        # repositories arrive. Models (the Lease, delete options) still go the client's way.
        if isinstance(obj, dict) and is_json_data(obj):
            return obj
        return super().sanitize_for_serialization(obj)


JSON_LEAVES = (str, int, float, type(None))


def is_json_data(value: Any) -> bool:
    """Whether ``value`` is made of dicts with string keys, lists and JSON scalars only."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and is_json_data(item) for key, item in value.items())
    if isinstance(value, list):
        return all(is_json_data(item) for item in value)
    return isinstance(value, JSON_LEAVES)


def connect(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = THREADS
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    else:
        config.load_kube_config(kubeconfig, client_configuration=configuration)
    return Client(configuration)


class Api:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.policy = client.PolicyV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)

    def create(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        """Creates the object; False when it already existed."""
        create: Any = {
            "Pod": self.core.create_namespaced_pod,
            "PersistentVolumeClaim": self.core.create_namespaced_persistent_volume_claim,
            "Service": self.core.create_namespaced_service,
            "Secret": self.core.create_namespaced_secret,
            "PodDisruptionBudget": self.policy.create_namespaced_pod_disruption_budget,
            "NetworkPolicy": self.networking.create_namespaced_network_policy,
        }[manifest["kind"]]
        try:
            # The answer is not needed: skipping its decoding into client models saves most
            # of the CPU a create costs (hundreds of repositories create thousands).
            discard(create(namespace, manifest, _preload_content=False))
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A pod as the API server has it now (not the watch cache), None if gone."""
        try:
            # Read as JSON: decoding into the client's models and back cost more CPU than the
            # request itself.
            answer: Any = self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        found: dict[str, Any] = json.loads(answer.data)
        discard(answer)
        return found

    def delete_pod(self, namespace: str, name: str, *, force: bool) -> None:
        """``force`` for a pod on a lost node: its kubelet will never confirm the end."""
        options = client.V1DeleteOptions(grace_period_seconds=0) if force else None
        self._gone_ok(
            self.core.delete_namespaced_pod, name, namespace, body=options, _preload_content=False
        )

    def patch_service(
        self,
        namespace: str,
        name: str,
        selector: Mapping[str, str],
        ports: list[Mapping[str, Any]],
    ) -> bool:
        """Brings a Service made by an older operator to the selector and ports this one uses
        (ports merge by port number: one added, none lost); False when there is none."""
        patch = {"spec": {"selector": dict(selector), "ports": [dict(p) for p in ports]}}
        return self._gone_ok(
            self.core.patch_namespaced_service, name, namespace, patch, _preload_content=False
        )

    def label_pod(self, namespace: str, name: str, key: str, value: str) -> None:
        self._gone_ok(
            self.core.patch_namespaced_pod,
            name,
            namespace,
            {"metadata": {"labels": {key: value}}},
            _preload_content=False,
        )

    def delete_claim(self, namespace: str, name: str) -> None:
        self._gone_ok(
            self.core.delete_namespaced_persistent_volume_claim,
            name,
            namespace,
            _preload_content=False,
        )

    def repository_claims(self, namespace: str, repository: str) -> list[str]:
        claims = self.core.list_namespaced_persistent_volume_claim(
            namespace, label_selector=f"{names.REPOSITORY_LABEL}={repository}"
        )
        return _claim_names(claims.items)

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data, decoded; None when it does not exist."""
        import base64

        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}

    def secret_annotations(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict((secret.metadata and secret.metadata.annotations) or {})

    def patch_secret(self, namespace: str, manifest: Mapping[str, Any]) -> None:
        """Merges the manifest's data and annotations into the Secret (RBAC: patch only)."""
        self.core.patch_namespaced_secret(
            manifest["metadata"]["name"],
            namespace,
            {
                "metadata": {"annotations": manifest["metadata"].get("annotations", {})},
                "stringData": manifest["stringData"],
            },
        )

    def patch_budget(self, namespace: str, name: str, min_available: int) -> bool:
        """False when the PodDisruptionBudget does not exist."""
        return self._gone_ok(
            self.policy.patch_namespaced_pod_disruption_budget,
            name,
            namespace,
            {"spec": {"minAvailable": min_available}},
            _preload_content=False,
        )

    def read_repository(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: Any = self.custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(body)

    def remove_annotation(self, namespace: str, name: str, key: str) -> None:
        """Removes one annotation of a GitRepository (a request that has been answered)."""
        try:
            self.custom.patch_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                namespace,
                names.PLURAL,
                name,
                {"metadata": {"annotations": {key: None}}},
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def replace_status(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Writes the status if nobody changed the object since ``body`` was read.

        The API server compares ``metadata.resourceVersion``; that comparison is what makes a
        term written here linearizable, whoever else tries to write one.
        """
        metadata = body["metadata"]
        try:
            result: Any = self.custom.replace_namespaced_custom_object_status(
                names.GROUP,
                names.VERSION,
                metadata["namespace"],
                names.PLURAL,
                metadata["name"],
                dict(body),
            )
        except ApiException as error:
            if error.status in (409, 404):
                raise errors.StaleObject(f"{metadata['name']} changed: {error.reason}") from error
            raise
        return dict(result)

    # -- backups ------------------------------------------------------------------------------

    def create_backup(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        """Creates a GitRepositoryBackup; False when one of that name exists."""
        try:
            self.custom.create_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.BACKUP_PLURAL, dict(manifest)
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def read_backup(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: Any = self.custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.BACKUP_PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(body)

    def list_backups(self, namespace: str, repository: str) -> list[dict[str, Any]]:
        """The GitRepositoryBackups of one repository (by spec, not by label: a user's too)."""
        listed: Any = self.custom.list_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.BACKUP_PLURAL
        )
        return [
            dict(item)
            for item in listed.get("items", [])
            if (item.get("spec") or {}).get("repository") == repository
        ]

    def delete_backup(self, namespace: str, name: str) -> None:
        self._gone_ok(
            self.custom.delete_namespaced_custom_object,
            names.GROUP,
            names.VERSION,
            namespace,
            names.BACKUP_PLURAL,
            name,
        )

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, plural: str
    ) -> None:
        """Merges ``status`` into the status of a GitRepository or GitRepositoryBackup."""
        self._gone_ok(
            self.custom.patch_namespaced_custom_object_status,
            names.GROUP,
            names.VERSION,
            namespace,
            plural,
            name,
            {"status": dict(status)},
        )

    def _gone_ok(self, call: Any, *args: Any, **kwargs: Any) -> bool:
        """The call; False when its object was not there."""
        try:
            answer = call(*args, **kwargs)
        except ApiException as error:
            if error.status != 404:
                raise
            return False
        if kwargs.get("_preload_content") is False:
            discard(answer)
        return True


def discard(answer: Any) -> None:
    """Reads and drops an answer the client did not decode (``_preload_content=False``).

    urllib3 gives a connection back to its pool only once its answer has been read: one left
    unread holds the connection until it is collected, and the next call opens a TLS
    connection of its own (seen: every create a new handshake, on both sides)."""
    answer.drain_conn()
    answer.release_conn()


def message(error: ApiException) -> str:
    """The API server's own sentence for a refusal, else its reason."""
    try:
        return str(json.loads(error.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(error.reason)


def _claim_names(items: Any) -> list[str]:
    return sorted(item.metadata.name for item in items)
