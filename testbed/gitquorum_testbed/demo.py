"""``make demo``: a replicated repository on the local testbed surviving the loss of a node.

Brings the testbed up (four worker nodes over three zones, so that a lost replica has
somewhere to go), installs the chart with helm, applies ``examples/minimal.yaml``, pushes a
first commit with the real git CLI through the repository's Service, then stops the node of a
follower and shows the operator rebuilding that replica on another node, the commit intact.
It ends by printing how to clone, push, stop a node and watch the heal by hand.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from gitquorum_testbed import binaries, cluster, install

NAMESPACE = "gitquorum-demo"
EXAMPLE = "examples/minimal.yaml"


def main() -> int:
    root = Path(os.environ.get("GITQUORUM_TESTBED_ROOT", binaries.repo_root() / ".testbed"))
    bed = cluster.Testbed(root)
    step("starting the testbed: a real Kubernetes control plane and 4 simulated nodes")
    bed.up(nodes=4, zones=3)
    for node in bed.node_configs():
        if (bed.layout.node_dir(node.name) / "stopped").exists():
            bed.node_start(node.name)
    kubectl = Kubectl(bed.layout.kubeconfig)

    step("installing the operator with helm (charts/gitquorum)")
    install.install_chart(bed, node_loss_grace=10)
    kubectl("get", "pods", "-n", install.NAMESPACE, "-o", "wide", show=True)

    step(f"applying {EXAMPLE}")
    name = _example_name()
    kubectl.apply_generated("create", "namespace", NAMESPACE)
    kubectl("apply", "-n", NAMESPACE, "-f", str(binaries.repo_root() / EXAMPLE), show=True)
    started = time.monotonic()
    repository = f"gitrepositories.gitquorum.io/{name}"
    kubectl("wait", "-n", NAMESPACE, "--for=condition=Ready", repository, "--timeout=120s")
    print(f"Ready after {time.monotonic() - started:.1f} s")
    kubectl("get", "gitrepositories.gitquorum.io", "-n", NAMESPACE, show=True)

    url = _clone_url(kubectl, name)
    step("pushing a first commit through the repository's Service")
    with tempfile.TemporaryDirectory() as work:
        _push_first_commit(Path(work), url)
        pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-o", "json"))["items"]
        status = _status(kubectl, name)
        follower = next(p for p in pods if p["metadata"]["name"] != status["leader"])
        node = follower["spec"]["nodeName"]
        kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", show=True)

        step(f"stopping {node}, the node of follower {follower['metadata']['name']}")
        bed.node_stop(node)
        try:
            healed = _wait_healed(kubectl, name, lost=follower["metadata"]["name"])
            kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", show=True)
            kubectl("get", "gitrepositories.gitquorum.io", "-n", NAMESPACE, show=True)
            print(f"replica {healed} rebuilt on another node and in sync")
            step("cloning again: the commit survived the node loss")
            clone = Path(work) / "after"
            _git("clone", "-q", url, str(clone))
            print((clone / "README.md").read_text(), end="")
        finally:
            bed.node_start(node)
    kubectl(
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        "involvedObject.kind=GitRepository",
        show=True,
    )
    env = f"{Path(sys.executable).parent}/gitquorum-testbed env"
    print(f"""
A replicated repository runs on the testbed and survived the loss of a node.

  eval "$({env})"                       # the pinned kubectl and helm
  git clone {url}
  kubectl get gitrepositories.gitquorum.io -n {NAMESPACE} -w     # watch the status
  kubectl get pods -n {NAMESPACE} -o wide                          # who runs where
  .venv/bin/gitquorum-testbed node stop <node of a replica>        # power loss
  kubectl get events -n {NAMESPACE} -w                             # the operator's decisions
  .venv/bin/gitquorum-testbed node start <node>
  kubectl scale gitrepositories.gitquorum.io/{name} -n {NAMESPACE} --replicas=1   # or 3, 5
  make testbed-down                                                # stop everything
""")
    return 0


def _example_name() -> str:
    documents = yaml.safe_load_all((binaries.repo_root() / EXAMPLE).read_text())
    repository = next(d for d in documents if d and d.get("kind") == "GitRepository")
    return str(repository["metadata"]["name"])


def _status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    body = json.loads(
        kubectl("get", "gitrepositories.gitquorum.io", name, "-n", NAMESPACE, "-o", "json")
    )
    return dict(body.get("status") or {})


def _clone_url(kubectl: Kubectl, name: str) -> str:
    secret = json.loads(
        kubectl(
            "get",
            "secret",
            _status(kubectl, name)["credentialsSecret"],
            "-n",
            NAMESPACE,
            "-o",
            "json",
        )
    )
    user, password = (
        base64.b64decode(secret["data"][k]).decode() for k in ("username", "password")
    )
    ip = kubectl("get", "service", name, "-n", NAMESPACE, "-o", "jsonpath={.spec.clusterIP}")
    return f"http://{user}:{password}@{ip.strip()}/{name}.git"


def _wait_healed(kubectl: Kubectl, name: str, *, lost: str, timeout: float = 180) -> str:
    """Polls until ``lost`` left the members and a new replica is in sync; returns its name."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        status = _status(kubectl, name)
        states = {r["name"]: r["state"] for r in status.get("replicaStatuses", [])}
        line = ", ".join(f"{n} {s}" for n, s in states.items())
        if line != last:
            print(f"  {time.strftime('%H:%M:%S')}  {line}", flush=True)
            last = line
        new = [n for n, s in states.items() if n != lost and s == "InSync"]
        if lost not in states and len(new) == len(states) and states:
            newest: str = max(new, key=lambda n: int(n.rsplit("-", 1)[-1]))
            return newest
        time.sleep(1)
    raise SystemExit(
        f"the replica lost with its node was not rebuilt within {timeout:.0f}s: {last}"
    )


def _git(*args: str, cwd: Path | None = None) -> None:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "demo",
        "GIT_AUTHOR_EMAIL": "demo@example.org",
        "GIT_COMMITTER_NAME": "demo",
        "GIT_COMMITTER_EMAIL": "demo@example.org",
    }
    subprocess.run(["git", "-c", "init.defaultBranch=main", *args], check=True, env=env, cwd=cwd)


def _push_first_commit(work: Path, url: str) -> None:
    repo = work / "demo"
    _git("init", "-q", str(repo))
    (repo / "README.md").write_text(f"Pushed by make demo at {time.ctime()}\n")
    _git("add", "README.md", cwd=repo)
    _git("commit", "-q", "-m", "First commit", cwd=repo)
    _git("push", "-q", url, "HEAD:refs/heads/main", cwd=repo)
    print("pushed: " + (repo / "README.md").read_text(), end="")


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        self.binary = str(binaries.kubectl())

    def __call__(self, *args: str, show: bool = False) -> str:
        result = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, check=False
        )
        if result.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        if show:
            print(result.stdout, end="")
        return result.stdout

    def apply_generated(self, *create: str) -> None:
        """Apply what ``kubectl create ... --dry-run`` generates: create or update, idempotent."""
        manifest = self(*create, "--dry-run=client", "-o", "yaml")
        subprocess.run(
            [self.binary, "apply", "-f", "-"],
            input=manifest,
            text=True,
            env=self.env,
            check=True,
            capture_output=True,
        )


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
