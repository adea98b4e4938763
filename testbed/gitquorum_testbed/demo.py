"""``make demo``: a replicated repository on the local testbed surviving the loss of a node.

Brings the testbed up (four worker nodes over three zones, so that a lost replica has
somewhere to go), installs the chart with helm, applies ``examples/minimal.yaml``, pushes a
first commit with the real git CLI through the repository's Service, then stops the node of a
follower and shows the operator replacing that replica with a new one on another node. It says
which replica was lost and which replaced it only once the GitRepository's status shows the
replacement InSync, then clones the commit back. It ends by printing how to clone, push, stop a
node and watch the heal by hand.

Every wait polls the GitRepository's status until a deadline and, when the deadline passes,
says what it waited for and what it saw last.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gitquorum_testbed import binaries, cluster, install

NAMESPACE = "gitquorum-demo"
EXAMPLE = "examples/minimal.yaml"
POLL_INTERVAL = 1.0
"""Seconds between two reads of the GitRepository while waiting; the status changes per pass."""

T = TypeVar("T")
Entry = Mapping[str, Any]


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
    replicas = _replicas(kubectl, name)
    step("pushing a first commit through the repository's Service")
    with tempfile.TemporaryDirectory() as work:
        pushed = _push_first_commit(Path(work), url)
        before = wait_for(
            kubectl,
            name,
            f"all {replicas} replicas InSync",
            lambda status: status if all_in_sync(status, replicas=replicas) else None,
        )
        lost = next(e for e in before["replicaStatuses"] if e["name"] != before["leader"])
        original = {entry["name"] for entry in before["replicaStatuses"]}
        kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", show=True)

        step(f"stopping {lost['node']}, the node of follower {lost['name']}")
        bed.node_stop(lost["node"])
        try:
            started = time.monotonic()
            new = wait_for(
                kubectl,
                name,
                f"a new replica InSync in place of {lost['name']} (lost with {lost['node']})",
                lambda status: replacement(status, lost=lost, original=original, replicas=replicas),
                timeout=240,
            )
            kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", show=True)
            kubectl("get", "gitrepositories.gitquorum.io", "-n", NAMESPACE, show=True)
            print(
                f"replica {lost['name']} was lost with {lost['node']}; {new['name']} replaced it"
                f" on {new['node']} and is InSync at generation {new.get('generation', '?')}"
                f" ({time.monotonic() - started:.0f} s after the node stopped)"
            )
            step(f"cloning through the Service: commit {pushed[:12]} survived the loss of a node")
            _show_clone(url, Path(work) / "after", pushed=pushed)
        finally:
            bed.node_start(lost["node"])
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

  eval "$({env})"                       # the pinned kubectl and helm, the object store
  git clone {url}
  kubectl get gitrepositories.gitquorum.io -n {NAMESPACE} -w     # watch the status
  kubectl get pods -n {NAMESPACE} -o wide                          # who runs where
  .venv/bin/gitquorum-testbed node stop <node of a replica>        # power loss
  kubectl get events -n {NAMESPACE} -w                             # the operator's decisions
  .venv/bin/gitquorum-testbed node start <node>
  kubectl scale gitrepositories.gitquorum.io/{name} -n {NAMESPACE} --replicas=1   # or 3, 5
  kubectl get gqbackup -n {NAMESPACE}                              # backups: docs/backups.md
  make testbed-down                                                # stop everything
""")
    return 0


def _example_name() -> str:
    documents = yaml.safe_load_all((binaries.repo_root() / EXAMPLE).read_text())
    repository = next(d for d in documents if d and d.get("kind") == "GitRepository")
    return str(repository["metadata"]["name"])


def _repository(kubectl: Kubectl, name: str) -> dict[str, Any]:
    body = kubectl("get", "gitrepositories.gitquorum.io", name, "-n", NAMESPACE, "-o", "json")
    return dict(json.loads(body))


def _status(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict(_repository(kubectl, name).get("status") or {})


def _replicas(kubectl: Kubectl, name: str) -> int:
    return int(_repository(kubectl, name)["spec"]["replicas"])


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


def all_in_sync(status: Mapping[str, Any], *, replicas: int) -> bool:
    """``replicas`` voting members, each ready and InSync at one generation and checksum."""
    entries = status.get("replicaStatuses") or []
    return (
        len(entries) == replicas
        and status.get("readyReplicas") == replicas
        and all(entry.get("state") == "InSync" and entry.get("voter") for entry in entries)
        and len({(entry.get("generation"), entry.get("checksum")) for entry in entries}) == 1
    )


def replacement(
    status: Mapping[str, Any], *, lost: Entry, original: set[str], replicas: int
) -> Entry | None:
    """The replica that replaced ``lost``, once ``lost`` left the members and all ``replicas``
    are InSync with a newcomer (a name not in ``original``) on another node; else None.

    Counting only InSync replicas is not enough: between the lost replica's removal and its
    replacement's creation the survivors alone are all InSync.
    """
    members = {member.get("name") for member in status.get("members") or []}
    if lost["name"] in members or not all_in_sync(status, replicas=replicas):
        return None
    newcomers = [
        entry
        for entry in status.get("replicaStatuses") or []
        if entry["name"] not in original and entry.get("node") != lost["node"]
    ]
    return newcomers[0] if newcomers else None


def describe(status: Mapping[str, Any]) -> str:
    """One line: each replica's name, state and node, as the wait prints it when it changes."""
    entries = status.get("replicaStatuses") or []
    return ", ".join(
        f"{e.get('name')} {e.get('state') or '-'} on {e.get('node') or '-'}" for e in entries
    )


def wait_for(
    kubectl: Kubectl,
    name: str,
    what: str,
    probe: Callable[[dict[str, Any]], T | None],
    *,
    timeout: float = 120,
) -> T:
    """Polls the status until ``probe`` returns a value, printing each change of the replicas."""
    print(f"  waiting for {what} (at most {timeout:.0f} s)", flush=True)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        status = _status(kubectl, name)
        line = describe(status)
        if line != last:
            print(f"  {time.strftime('%H:%M:%S')}  {line}", flush=True)
            last = line
        found = probe(status)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last}"
            )
        time.sleep(POLL_INTERVAL)


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "demo",
        "GIT_AUTHOR_EMAIL": "demo@example.org",
        "GIT_COMMITTER_NAME": "demo",
        "GIT_COMMITTER_EMAIL": "demo@example.org",
    }
    result = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        check=True,
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
    )
    return result.stdout


def _push_first_commit(work: Path, url: str) -> str:
    """Pushes one commit to ``main``; returns its id."""
    repo = work / "demo"
    _git("init", "-q", str(repo))
    (repo / "README.md").write_text(f"Pushed by make demo at {time.ctime()}\n")
    _git("add", "README.md", cwd=repo)
    _git("commit", "-q", "-m", "First commit", cwd=repo)
    _git("push", "-q", url, "HEAD:refs/heads/main", cwd=repo)
    commit = _git("rev-parse", "HEAD", cwd=repo).strip()
    print(f"pushed {commit[:12]}: " + (repo / "README.md").read_text(), end="")
    return commit


def _show_clone(url: str, clone: Path, *, pushed: str) -> None:
    """Clones ``url`` showing the commands and what they print; fails unless ``pushed`` is HEAD."""
    shown = url.replace(f":{urllib.parse.urlsplit(url).password}@", ":<password>@", 1)
    print(f"$ git clone {shown} {clone.name}")
    print(_git("clone", url, str(clone)), end="", flush=True)
    print(f"$ git -C {clone.name} log --oneline")
    print(_git("log", "--oneline", cwd=clone), end="")
    print(f"$ cat {clone.name}/README.md")
    print((clone / "README.md").read_text(), end="")
    head = _git("rev-parse", "HEAD", cwd=clone).strip()
    if head != pushed:
        raise SystemExit(f"the clone's HEAD is {head}, not the pushed commit {pushed}")


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
