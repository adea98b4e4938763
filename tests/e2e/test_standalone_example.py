"""examples/standalone-server.yaml on a cluster: push and clone through its Service with git."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests import waiting

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TOKEN = "e2e-token-0123456789"


def _git(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result


def test_standalone_example_serves_push_and_clone(kubectl, namespace, tmp_path: Path):
    users = tmp_path / "users"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "gitquorum"),
            "passwd",
            "--auth-file",
            str(users),
            "alice",
        ],
        input=TOKEN,
        text=True,
        check=True,
    )
    kubectl(
        "create", "secret", "generic", "git-users", "-n", namespace, f"--from-file=users={users}"
    )
    kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "standalone-server.yaml"))
    kubectl("rollout", "status", "-n", namespace, "deployment/git", "--timeout=120s")
    ip = kubectl(
        "get", "service", "git", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"
    ).stdout.strip()

    def answers() -> bool:
        with urllib.request.urlopen(f"http://{ip}/readyz", timeout=2) as response:
            return bool(response.status == 200)

    waiting.until(f"the git Service at {ip} to answer", answers, timeout=60)

    work = tmp_path / "work"
    _git("init", "-q", "-b", "main", str(work))
    (work / "file.txt").write_text("replicated soon\n")
    _git("add", "file.txt", cwd=work)
    _git("commit", "-q", "-m", "first", cwd=work)
    _git("push", "-q", f"http://alice:{TOKEN}@{ip}/e2e.git", "main", cwd=work)

    clone = tmp_path / "clone"
    _git("clone", "-q", f"http://alice:{TOKEN}@{ip}/e2e.git", str(clone))
    assert (clone / "file.txt").read_text() == "replicated soon\n"

    denied = _git("push", f"http://alice:wrong@{ip}/e2e.git", "main", cwd=work, check=False)
    assert denied.returncode != 0
    assert "Authentication failed" in denied.stderr or "401" in denied.stderr, denied.stderr
