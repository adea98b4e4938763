"""Any Kubernetes cluster, given its kubeconfig, behind the few testbed calls the end-to-end
tests make: so that the same suite runs on a kind cluster (or any other) as on the testbed.

Set ``GITQUORUM_KUBECONFIG`` to the cluster's kubeconfig. Node failures are commands the user
gives, with ``{node}`` replaced by the node's name (kind's nodes are containers):

    GITQUORUM_NODE_STOP='docker stop {node}'    (the default)
    GITQUORUM_NODE_START='docker start {node}'  (the default)

Growing the cluster (what the autoscaler does) is not possible on kind; instead, nodes made
ready beforehand and labelled ``gitquorum.io/spare=true`` are cordoned, and "adding a node"
uncordons one of them. ``hack/kind-e2e.sh`` sets such a cluster up.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from pathlib import Path

from kubernetes import client, config

from gitquorum_testbed import settings

SPARE_LABEL = "gitquorum.io/spare"
ZONE_LABEL = "topology.kubernetes.io/zone"


class ExternalError(RuntimeError):
    """A node operation the cluster could not do."""


@dataclasses.dataclass(frozen=True)
class ExternalLayout:
    kubeconfig: Path


class ExternalCluster:
    """The subset of ``cluster.Testbed`` the end-to-end tests use."""

    def __init__(self, kubeconfig: Path) -> None:
        self.layout = ExternalLayout(kubeconfig)
        self.stop_command = os.environ.get("GITQUORUM_NODE_STOP", "docker stop {node}")
        self.start_command = os.environ.get("GITQUORUM_NODE_START", "docker start {node}")

    def core_api(self) -> client.CoreV1Api:
        configuration = client.Configuration()
        config.load_kube_config(str(self.layout.kubeconfig), client_configuration=configuration)
        return client.CoreV1Api(client.ApiClient(configuration))

    def node_configs(self) -> list[settings.NodeConfig]:
        """Schedulable worker nodes (spares excluded until added)."""
        nodes = self.core_api().list_node().items
        return [
            settings.NodeConfig(
                name=node.metadata.name,
                index=index,
                zone=(node.metadata.labels or {}).get(ZONE_LABEL, ""),
            )
            for index, node in enumerate(nodes, start=1)
            if not (node.metadata.labels or {}).get(SPARE_LABEL)
        ]

    def node_add(self, name: str | None = None, *, hollow: bool = False) -> settings.NodeConfig:
        """Makes a spare node schedulable; ``name`` is ignored (the spare keeps its own)."""
        if hollow:
            raise ExternalError("hollow nodes exist only on the testbed")
        core = self.core_api()
        spares = core.list_node(label_selector=f"{SPARE_LABEL}=true").items
        if not spares:
            raise ExternalError(
                f"no spare node left: label a cordoned node {SPARE_LABEL}=true "
                "(hack/kind-e2e.sh makes two)"
            )
        node = spares[0]
        core.patch_node(
            node.metadata.name,
            {"metadata": {"labels": {SPARE_LABEL: None}}, "spec": {"unschedulable": False}},
        )
        zone = (node.metadata.labels or {}).get(ZONE_LABEL, "")
        return settings.NodeConfig(name=node.metadata.name, index=0, zone=zone)

    def node_stop(self, name: str) -> None:
        self._run(self.stop_command, name)

    def node_start(self, name: str) -> None:
        self._run(self.start_command, name)

    def leftovers(self) -> list[str]:
        return []

    def _run(self, template: str, node: str) -> None:
        command = shlex.split(template.format(node=node))
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ExternalError(f"{' '.join(command)} failed: {result.stderr.strip()}")
