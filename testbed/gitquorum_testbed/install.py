"""Installing the gitquorum chart on the testbed, the way the demo and the end-to-end tests do.

The operator gets a node of its own (labelled and tainted ``gitquorum.io/system``): node-loss
scenarios stop worker nodes, and stopping the operator's node too would test something else
(the Deployment's own rescheduling) on every run.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from gitquorum_testbed import binaries, cluster

SYSTEM_NODE = "node-system"
SYSTEM_LABEL = "gitquorum.io/system"
RELEASE = "gitquorum"
NAMESPACE = "gitquorum-system"


def system_node(bed: cluster.Testbed) -> str:
    """The operator's node: added once, labelled and tainted so that replicas stay off it.

    A cluster that already has a node labelled ``gitquorum.io/system=true`` (hack/kind.yaml
    makes one) uses that one.
    """
    kubectl = _kubectl(bed)
    labelled = _run([*kubectl, "get", "nodes", "-l", f"{SYSTEM_LABEL}=true", "-o", "name"]).split()
    if labelled:
        name = labelled[0].removeprefix("node/")
    else:
        known = {node.name for node in bed.node_configs()}
        name = SYSTEM_NODE if SYSTEM_NODE in known else bed.node_add(SYSTEM_NODE).name
    _run([*kubectl, "label", "node", name, f"{SYSTEM_LABEL}=true", "--overwrite"])
    _run([*kubectl, "taint", "node", name, f"{SYSTEM_LABEL}=true:NoSchedule", "--overwrite"])
    return name


def install_chart(
    bed: cluster.Testbed, *, node_loss_grace: int = 10, extra: tuple[str, ...] = ()
) -> None:
    """``helm upgrade --install`` of charts/gitquorum, waiting until the operator is ready."""
    system_node(bed)
    helm = [str(binaries.directory() / "helm"), "--kubeconfig", str(bed.layout.kubeconfig)]
    _run(
        [
            *helm,
            "upgrade",
            "--install",
            RELEASE,
            str(binaries.repo_root() / "charts" / "gitquorum"),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "3m",
            "--set",
            f"nodeLossGraceSeconds={node_loss_grace}",
            "--set-json",
            "nodeSelector=" + json.dumps({SYSTEM_LABEL: "true"}),
            "--set-json",
            "tolerations="
            + json.dumps(
                [
                    {
                        "key": SYSTEM_LABEL,
                        "operator": "Equal",
                        "value": "true",
                        "effect": "NoSchedule",
                    }
                ]
            ),
            *extra,
        ]
    )


def _kubectl(bed: cluster.Testbed) -> list[str]:
    return [str(binaries.kubectl()), "--kubeconfig", str(bed.layout.kubeconfig)]


def _run(command: list[str]) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, env=dict(os.environ)
    )
    if result.returncode != 0:
        raise cluster.TestbedError(
            f"{Path(command[0]).name} {' '.join(command[1:4])} ... failed:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout
