"""Reading a repository's objects from the API server, the way kubectl finds its cluster.

What is read is kept as the API server's JSON (camelCase, as ``kubectl get -o json`` shows
it), so that ``summary`` works on the same shapes in tests as against a cluster. Failures
become the package's errors with a sentence a person can act on: no kubeconfig, a cluster
that does not answer, a repository that does not exist, a request RBAC refuses.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from gitquorum import errors
from gitquorum.kube import names

ZONE_LABEL = "topology.kubernetes.io/zone"
IN_CLUSTER_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# Seconds one API request may take: an address that swallows packets must not hang a
# command a person is waiting on.
REQUEST_TIMEOUT = 10.0

Object = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the plugin read about one repository."""

    repository: Object
    """The GitRepository."""
    pods: Sequence[Object]
    """Its replica pods."""
    zones: Mapping[str, str | None]
    """Node name -> its ``topology.kubernetes.io/zone`` (None: no label, or not readable)."""
    events: Sequence[Object]
    """Its Events (the operator's decisions), in any order."""


class Reader(Protocol):
    """The few reads the plugin makes; a fake stands in for the API server in tests."""

    def repository(self, namespace: str, name: str) -> Object: ...

    def pods(self, namespace: str, selector: str) -> Sequence[Object]: ...

    def zone(self, node: str) -> str | None: ...

    def events(self, namespace: str, name: str) -> Sequence[Object]: ...


def gather(reader: Reader, *, namespace: str, name: str) -> Snapshot:
    """Everything the status shows about the repository ``namespace/name``."""
    repository = reader.repository(namespace, name)
    pods = reader.pods(namespace, names.selector(name))
    nodes = {pod["spec"]["nodeName"] for pod in pods if pod.get("spec", {}).get("nodeName")}
    statuses = repository.get("status", {}).get("replicaStatuses") or []
    nodes |= {entry["node"] for entry in statuses if entry.get("node")}
    zones = {node: reader.zone(node) for node in sorted(nodes)}
    return Snapshot(repository, pods, zones, reader.events(namespace, name))


@dataclasses.dataclass(frozen=True)
class Connection:
    """An API client and the namespace kubectl would use with it."""

    api: client.ApiClient
    namespace: str
    server: str


def connect(*, kubeconfig: str | None, context: str | None) -> Connection:
    """The cluster of ``kubeconfig`` (paths joined by ':') and ``context``, or of the pod.

    As kubectl: the kubeconfig's current context unless one is named, its namespace or
    ``default``; in a pod without a kubeconfig, the pod's service account and namespace.
    """
    _check_exists(kubeconfig)
    configuration = client.Configuration()
    try:
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        namespace = _context_namespace(kubeconfig, context)
    except (config.ConfigException, OSError) as error:
        if kubeconfig is not None or context is not None:
            raise errors.ConfigError(f"cannot use the kubeconfig: {error}") from error
        namespace = _in_cluster(configuration, reason=str(error))
    # No retries: a cluster that does not answer is reported at once, not after minutes.
    configuration.retries = 0
    return Connection(client.ApiClient(configuration), namespace, configuration.host)


def _check_exists(kubeconfig: str | None) -> None:
    """The client says "no configuration found" for a path with a typo; say what is wrong."""
    paths = (kubeconfig or "").split(os.pathsep)
    missing = [path for path in paths if path and not os.path.exists(path)]
    if missing:
        raise errors.ConfigError(f"kubeconfig {', '.join(missing)} does not exist")


def _context_namespace(kubeconfig: str | None, context: str | None) -> str:
    contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    chosen = next((c for c in contexts if c["name"] == context), current) if context else current
    namespace: str = (chosen or {}).get("context", {}).get("namespace") or "default"
    return namespace


def _in_cluster(configuration: client.Configuration, *, reason: str) -> str:
    try:
        config.load_incluster_config(client_configuration=configuration)
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    except (config.ConfigException, OSError) as error:
        raise errors.ConfigError(
            f"no cluster configured: no usable kubeconfig ({reason}; give --kubeconfig or set "
            "KUBECONFIG) and not running in a pod"
        ) from error


class KubeReader:
    """The reads, made with the Kubernetes client."""

    def __init__(self, connection: Connection) -> None:
        self._server = connection.server
        # Any: with _preload_content=False the client returns the raw response, which its
        # type hints do not know.
        self._core: Any = client.CoreV1Api(connection.api)
        self._custom: Any = client.CustomObjectsApi(connection.api)

    def repository(self, namespace: str, name: str) -> Object:
        what = f'{names.PLURAL}.{names.GROUP} "{name}" in namespace "{namespace}"'
        with self._calling(f"get {what}"):
            try:
                found: Object = self._custom.get_namespaced_custom_object(
                    names.GROUP, names.VERSION, namespace, names.PLURAL, name,
                    _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
            except ApiException as error:
                if error.status == 404:
                    raise errors.RepositoryNotFound(
                        f"{what} not found (is the name right, and the gitquorum CRD installed?)"
                    ) from error
                raise
        return found

    def pods(self, namespace: str, selector: str) -> Sequence[Object]:
        with self._calling(f'list the replica pods in namespace "{namespace}"'):
            answer = self._core.list_namespaced_pod(namespace, label_selector=selector, **_RAW)
        items: list[Object] = json.loads(answer.data)["items"]
        return items

    def zone(self, node: str) -> str | None:
        """None also when the node cannot be read: a user may see pods but not nodes, and a
        lost node may be gone."""
        with self._calling(f'get node "{node}"'):
            try:
                answer = self._core.read_node(node, **_RAW)
            except ApiException as error:
                if error.status in (403, 404):
                    return None
                raise
        zone: str | None = json.loads(answer.data)["metadata"].get("labels", {}).get(ZONE_LABEL)
        return zone

    def events(self, namespace: str, name: str) -> Sequence[Object]:
        selector = f"involvedObject.kind={names.KIND},involvedObject.name={name}"
        with self._calling(f'list the events in namespace "{namespace}"'):
            answer = self._core.list_namespaced_event(namespace, field_selector=selector, **_RAW)
        items: list[Object] = json.loads(answer.data)["items"]
        return items

    @contextlib.contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Turns the client's failures into errors that say what failed and where."""
        try:
            yield
        except ApiException as error:
            message = _api_message(error)
            if error.status in (401, 403):
                raise errors.Forbidden(f"cannot {what}: {message}") from error
            raise errors.GitquorumError(
                f"cannot {what}: the API server answered {error.status} {message}"
            ) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise errors.Unavailable(
                f"cannot reach the cluster at {self._server} to {what}: {_reason(error)}"
            ) from error


# The answers are read as the API server's JSON rather than as client models: the same
# shapes as kubectl's -o json, and no decoding into objects nobody reads.
_RAW: dict[str, Any] = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT}


def _api_message(error: ApiException) -> str:
    try:
        status = json.loads(error.body or "")
    except (TypeError, ValueError):
        return str(error.reason)
    return str(status.get("message") or error.reason)


def _reason(error: BaseException) -> str:
    text = str(getattr(error, "reason", None) or error)
    # urllib3 names its connection object first ("HTTPConnection(host=..., port=...): ..."),
    # which repeats the address the message gives already.
    return text.split("): ", 1)[1] if text.startswith("HTTP") and "): " in text else text
