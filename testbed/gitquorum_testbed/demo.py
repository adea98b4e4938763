"""``make demo``: the main job on the local testbed.

Until the operator exists, the demo brings the cluster up, runs the single git server preview
(``examples/standalone-server.yaml``) behind a Service, pushes a first commit with the real git
CLI and clones it back, then says plainly what is and is not there yet.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gitquorum_testbed import binaries, cluster

NAMESPACE = "gitquorum-demo"
USER = "demo"


def main() -> int:
    root = Path(os.environ.get("GITQUORUM_TESTBED_ROOT", binaries.repo_root() / ".testbed"))
    bed = cluster.Testbed(root)
    step("starting the testbed: a real Kubernetes control plane and 3 simulated nodes")
    bed.up(nodes=3, zones=3)
    kubectl = Kubectl(bed.layout.kubeconfig)
    kubectl("get", "nodes", "-L", "topology.kubernetes.io/zone", show=True)

    step("deploying the git server preview (examples/standalone-server.yaml)")
    token = _credentials(kubectl, bed.layout.root)
    kubectl(
        "apply",
        "-n",
        NAMESPACE,
        "-f",
        str(binaries.repo_root() / "examples" / "standalone-server.yaml"),
        show=True,
    )
    kubectl("rollout", "status", "-n", NAMESPACE, "deployment/git", "--timeout=120s", show=True)
    ip = kubectl(
        "get", "service", "-n", NAMESPACE, "git", "-o", "jsonpath={.spec.clusterIP}"
    ).strip()
    url = f"http://{USER}:{token}@{ip}/demo.git"
    _wait_answering(f"http://{ip}/readyz")

    step(f"pushing a first commit through the Service at {ip}")
    with tempfile.TemporaryDirectory() as work:
        _push_first_commit(Path(work), url)
    kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", show=True)
    print(f"""
The testbed is up and a git server answers at http://{ip}/demo.git.

  eval "$({sys.executable.rsplit("/", 1)[0]}/gitquorum-testbed env)"
  git clone {url}
  kubectl get pods -n {NAMESPACE} -o wide
  .venv/bin/gitquorum-testbed node stop <the node in the NODE column>   # power loss
  kubectl get pods -n {NAMESPACE} -w       # the volume is local: the pod waits for its node
  .venv/bin/gitquorum-testbed node start <node>
  make testbed-down                        # stop everything

Not there yet: the operator (GitRepository, quorum replication across 3 replicas, healing
onto another node). This preview is one server on one volume; when its node stops, the
repository is unavailable until the node comes back. Replication removes exactly that.
""")
    return 0


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


def _credentials(kubectl: Kubectl, root: Path) -> str:
    """Reuse the demo token across runs; the auth file holds only its hash."""
    token_file = root / "demo-token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(24))
        token_file.chmod(0o600)
    token = token_file.read_text().strip()
    users = root / "demo-users"
    subprocess.run(
        [str(Path(sys.executable).parent / "gitquorum"), "passwd", "--auth-file", str(users), USER],
        input=token,
        text=True,
        check=True,
        capture_output=True,
    )
    kubectl.apply_generated("create", "namespace", NAMESPACE)
    kubectl.apply_generated(
        "create", "secret", "generic", "git-users", "-n", NAMESPACE, f"--from-file=users={users}"
    )
    return token


def _push_first_commit(work: Path, url: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "demo",
        "GIT_AUTHOR_EMAIL": "demo@example.org",
        "GIT_COMMITTER_NAME": "demo",
        "GIT_COMMITTER_EMAIL": "demo@example.org",
    }
    repo = work / "demo"
    git = ["git", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True, env=env)
    (repo / "README.md").write_text(f"Pushed by make demo at {time.ctime()}\n")
    subprocess.run([*git, "-C", str(repo), "add", "README.md"], check=True, env=env)
    subprocess.run(
        [*git, "-C", str(repo), "commit", "-q", "-m", "First commit"], check=True, env=env
    )
    subprocess.run(
        [*git, "-C", str(repo), "push", "-q", url, "HEAD:refs/heads/main"], check=True, env=env
    )
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", url, str(clone)], check=True, env=env)
    print((clone / "README.md").read_text(), end="")


def _wait_answering(url: str, timeout: float = 60) -> None:
    """The Service answers once the proxy has seen the ready endpoint: poll for it."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = response.status
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise SystemExit(f"the Service did not answer at {url} within {timeout:.0f}s: {last}")


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
