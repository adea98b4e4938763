"""GitRepositories as a user meets them: kubectl apply, the status, the Secret, the Service,
and the git CLI against the Service's ClusterIP (the testbed has no DNS)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client

from tests import waiting
from tests.conftest import Kubectl

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
CRD = "gitrepositories.gitquorum.io"
GROUP, VERSION, PLURAL = "gitquorum.io", "v1alpha1", "gitrepositories"

Status = dict[str, Any]


def manifest(name: str, spec: Mapping[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "GitRepository",
            "metadata": {"name": name},
            "spec": dict(spec),
        }
    )


def apply(kubectl: Kubectl, namespace: str, document: str | Path) -> None:
    """``kubectl apply`` of a file or of a manifest's text."""
    if isinstance(document, Path):
        kubectl("apply", "-n", namespace, "-f", str(document))
    else:
        kubectl("apply", "-n", namespace, "-f", "-", input=document)


@dataclasses.dataclass
class Repository:
    """One GitRepository of a test's namespace."""

    api: client.ApiClient
    namespace: str
    name: str

    # -- the object ------------------------------------------------------------------------

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name
        )
        return body

    def status(self) -> Status:
        status: Status = self.body().get("status") or {}
        return status

    def describe(self) -> str:
        """The status in a few lines, for failure messages."""
        try:
            status = self.status()
        except client.ApiException as error:
            return f"{self.namespace}/{self.name}: API {error.status} {error.reason}"
        return summary(status)

    def condition(self, kind: str, status: Status | None = None) -> dict[str, Any]:
        conditions = (status if status is not None else self.status()).get("conditions") or []
        found: dict[str, Any] = next((c for c in conditions if c.get("type") == kind), {})
        return found

    def wait(self, what: str, probe: Callable[[Status], object], *, timeout: float = 120) -> Status:
        """The first status that ``probe`` accepts, polled with a deadline."""
        started = time.monotonic()
        status = waiting.until(
            f"{self.namespace}/{self.name}: {what}",
            lambda: (lambda status: status if probe(status) else None)(self.status()),
            timeout=timeout,
            interval=0.5,
            seen=self.describe,
        )
        print(f"{self.namespace}/{self.name}: {what} after {time.monotonic() - started:.1f}s")
        return status

    def wait_ready(self, *, timeout: float = 120) -> Status:
        return self.wait(
            "condition Ready True",
            lambda status: self.condition("Ready", status).get("status") == "True",
            timeout=timeout,
        )

    def wait_in_sync(self, replicas: int, *, timeout: float = 120) -> Status:
        return self.wait(
            f"{replicas} voting replicas ready and InSync at one generation and checksum",
            lambda status: in_sync(status, replicas),
            timeout=timeout,
        )

    # -- how clients reach it -----------------------------------------------------------------

    def credentials(self, core: client.CoreV1Api) -> tuple[str, str]:
        """(username, password) from the Secret the status names."""
        name = self.status().get("credentialsSecret") or f"{self.name}-credentials"
        data = core.read_namespaced_secret(name, self.namespace).data or {}
        return (
            base64.b64decode(data["username"]).decode(),
            base64.b64decode(data["password"]).decode(),
        )

    def address(self, core: client.CoreV1Api) -> str:
        ip: str = core.read_namespaced_service(self.name, self.namespace).spec.cluster_ip
        return ip

    def url(self, core: client.CoreV1Api, *, user: str | None = None, password: str = "") -> str:
        """The clone URL through the Service, with credentials when ``user`` is given."""
        account = ""
        if user is not None:
            account = (
                f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@"
            )
        return f"http://{account}{self.address(core)}/{self.name}.git"

    def wait_serving(self, core: client.CoreV1Api, *, timeout: float = 30) -> None:
        """A replica answers through the Service. Ready comes from the replicas' reports;
        the Service's endpoints follow the pods' readiness a moment later."""
        url = f"http://{self.address(core)}/{self.name}.git/info/refs?service=git-upload-pack"

        def answer() -> int:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return error.code

        started = time.monotonic()
        waiting.until(
            f"{url} to answer 200 or 401", lambda: answer() in (200, 401), timeout=timeout
        )
        print(f"{self.namespace}/{self.name}: served after {time.monotonic() - started:.1f}s")

    def push_url(self, core: client.CoreV1Api) -> str:
        user, password = self.credentials(core)
        return self.url(core, user=user, password=password)


def serving(
    kubectl: Kubectl,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
) -> Repository:
    """A GitRepository of ``spec`` applied, Ready, and served through its Service."""
    apply(kubectl, namespace, manifest(name, spec))
    repository = Repository(api, namespace, name)
    repository.wait_ready()
    repository.wait_serving(core)
    return repository


def secret(core: client.CoreV1Api, namespace: str, name: str, data: Mapping[str, str]) -> None:
    body = client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=dict(data))
    core.create_namespaced_secret(namespace, body)


def ssh_key(directory: Path, name: str) -> tuple[Path, str]:
    """A new ed25519 key pair: the private key's path and the public key's line."""
    path = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return path, path.with_suffix(".pub").read_text().strip()


def in_sync(status: Status, replicas: int) -> bool:
    """``replicas`` voting members, each serving and InSync at one generation and checksum."""
    entries = status.get("replicaStatuses") or []
    return (
        len(entries) == replicas
        and len(status.get("members") or []) == replicas
        and status.get("readyReplicas") == replicas
        and all(entry.get("state") == "InSync" and entry.get("voter") for entry in entries)
        and len({(entry.get("generation"), entry.get("checksum")) for entry in entries}) == 1
    )


def summary(status: Status) -> str:
    conditions = ", ".join(
        f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
        for c in status.get("conditions") or []
    )
    replicas = "; ".join(
        f"{e.get('name')} on {e.get('node') or '-'} {e.get('role') or '-'} {e.get('state')}"
        f" gen={e.get('generation')} sum={str(e.get('checksum', ''))[:8]} voter={e.get('voter')}"
        + (f" ({e['message']})" if e.get("message") else "")
        for e in status.get("replicaStatuses") or []
    )
    return (
        f"leader={status.get('leader')} term={status.get('term')} "
        f"generation={status.get('generation')} ready={status.get('readyReplicas')}"
        f"/{status.get('replicas')}; conditions: {conditions}; replicas: {replicas}"
    )


# -- git -------------------------------------------------------------------------------------

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "e2e",
    "GIT_AUTHOR_EMAIL": "e2e@example.org",
    "GIT_COMMITTER_NAME": "e2e",
    "GIT_COMMITTER_EMAIL": "e2e@example.org",
    # No user or system configuration (credential helpers, proxies) may change what we test.
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(
    *args: str,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """git with a deadline. git runs helpers (git-remote-http) that hold its output pipes:
    on timeout the whole process group is killed, or waiting for the pipes would hang."""
    process = subprocess.Popen(
        ["git", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **GIT_ENV, **(env or {})},
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        stderr += f"\n(killed after {timeout:.0f}s)"
        process.returncode = -signal.SIGKILL
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"git {' '.join(_redacted(args))} failed ({result.returncode}): {result.stderr}"
        )
    return result


def _redacted(args: tuple[str, ...]) -> list[str]:
    """Arguments with the password of any URL hidden."""
    out = []
    for arg in args:
        parts = urllib.parse.urlsplit(arg) if arg.startswith("http") else None
        if parts is not None and parts.password:
            arg = arg.replace(f":{parts.password}@", ":***@")
        out.append(arg)
    return out


class Work:
    """A local repository on branch main that makes commits and pushes them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        git("init", "-q", "-b", "main", str(path))
        self.count = 0

    def commit(self, text: str | None = None) -> str:
        self.count += 1
        name = f"file-{self.count}.txt"
        (self.path / name).write_text(text or f"commit {self.count}\n")
        git("add", name, cwd=self.path)
        git("commit", "-q", "-m", f"commit {self.count}", cwd=self.path)
        return git("rev-parse", "HEAD", cwd=self.path).stdout.strip()

    def push(
        self, url: str, *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return git("push", "-q", url, "main", cwd=self.path, check=check, timeout=timeout)


def clone(url: str, destination: Path) -> Path:
    git("clone", "-q", url, str(destination))
    return destination


def commits(path: Path) -> set[str]:
    """Every commit reachable from HEAD of a clone."""
    return set(git("rev-list", "HEAD", cwd=path).stdout.split())


def remote_refs(url: str) -> dict[str, str]:
    """ref name -> sha as the server advertises them."""
    lines = git("ls-remote", url).stdout.splitlines()
    return {ref: sha for sha, ref in (line.split("\t") for line in lines if line)}
