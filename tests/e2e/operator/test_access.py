"""Who may read and change what, and who is told, through the operator (issue 12): protected
refs from the spec reach every replica and refuse force pushes and deletion; deploy keys give
git over SSH through the Service, read-only keys refused pushes; read tokens; changes apply
without a restart; a webhook is called, signed, after each push."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
from pathlib import Path
from typing import ClassVar

import pytest
from kubernetes import client

from gitquorum_testbed import settings
from tests import waiting
from tests.conftest import Kubectl
from tests.e2e.operator import repos

pytestmark = pytest.mark.e2e


def test_protected_refs_refuse_force_push_and_deletion_until_the_rule_allows_it(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    spec = {"replicas": 3, "protectedRefs": [{"pattern": "refs/heads/main"}]}
    repository = repos.serving(kubectl, api_client, core, namespace, "guarded", spec)
    url = repository.push_url(core)
    work = repos.Work(tmp_path / "work")
    first = work.commit()
    work.commit()
    work.push(url)
    pods = {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(namespace).items}

    repos.git("reset", "-q", "--hard", first, cwd=work.path)
    work.commit("rewritten\n")
    forced = repos.git("push", "--force", url, "main", cwd=work.path, check=False)
    assert forced.returncode != 0
    assert "(protected ref refs/heads/main: force push" in forced.stderr, forced.stderr
    deleted = repos.git("push", url, ":main", cwd=work.path, check=False)
    assert "(protected ref refs/heads/main: deletion is not allowed)" in deleted.stderr

    kubectl(
        "patch",
        f"{repos.CRD}/guarded",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"protectedRefs":[{"pattern":"refs/heads/main","allowForcePush":true}]}}',
    )
    waiting.until(
        "the force push to be allowed once the rule says so (the Secret reaches the pods)",
        lambda: (
            repos.git("push", "-q", "--force", url, "main", cwd=work.path, check=False).returncode
            == 0
        ),
        timeout=120,
        interval=2,
    )
    after = {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(namespace).items}
    assert after == pods, "the rule change restarted replicas"
    repository.wait_in_sync(3)


def _ssh(key: Path, known_hosts: Path, alias: str) -> dict[str, str]:
    """git over SSH with ``key``, checking the host key against ``known_hosts`` under the
    Service's in-cluster name (the test reaches the Service by its ClusterIP)."""
    command = (
        f"ssh -i {key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes "
        f"-o UserKnownHostsFile={known_hosts} -o HostKeyAlias={alias} -o ConnectTimeout=10"
    )
    return {"GIT_SSH_COMMAND": command}


def test_ssh_deploy_keys_clone_push_and_read_only_refused_through_the_service(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    reader, reader_public = repos.ssh_key(tmp_path, "reader")
    writer, writer_public = repos.ssh_key(tmp_path, "writer")
    spec = {
        "replicas": 3,
        "auth": {"deployKeys": [{"publicKey": reader_public, "access": "read"}]},
    }
    repository = repos.serving(kubectl, api_client, core, namespace, "keyed", spec)
    ssh = repository.wait("status.ssh published", lambda s: (s.get("ssh") or {}).get("knownHosts"))
    assert ssh["ssh"]["url"] == f"ssh://git@keyed.{namespace}.svc/keyed.git"
    secret = core.read_namespaced_secret(ssh["ssh"]["knownHostsSecret"], namespace)
    line = base64.b64decode(secret.data["known_hosts"]).decode()
    assert line.strip() == ssh["ssh"]["knownHosts"], line
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(line)
    alias = f"keyed.{namespace}.svc"
    address = repository.address(core)
    url = f"ssh://git@{address}:22/keyed.git"
    work = repos.Work(tmp_path / "work")
    pushed = work.commit()
    work.push(repository.push_url(core))
    repository.wait_in_sync(3)

    clone = tmp_path / "clone"
    repos.git("clone", "-q", url, str(clone), env=_ssh(reader, known_hosts, alias))
    assert repos.commits(clone) == {pushed}
    work.commit()
    refused = repos.git(
        "push", url, "main", cwd=work.path, check=False, env=_ssh(reader, known_hosts, alias)
    )
    assert refused.returncode != 0 and "may only read" in refused.stderr, refused.stderr

    pods = {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(namespace).items}
    keys = [
        {"publicKey": reader_public, "access": "read"},
        {"publicKey": writer_public, "access": "write"},
    ]
    kubectl(
        "patch",
        f"{repos.CRD}/keyed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"auth": {"deployKeys": keys}}}),
    )
    waiting.until(
        "a push over SSH with the write key added to the spec",
        lambda: (
            repos.git(
                "push",
                "-q",
                url,
                "main",
                cwd=work.path,
                check=False,
                env=_ssh(writer, known_hosts, alias),
            ).returncode
            == 0
        ),
        timeout=120,
        interval=2,
    )
    after = {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(namespace).items}
    assert after == pods, "a deploy key change restarted replicas"
    repository.wait_in_sync(3)


def test_read_token_clones_and_is_refused_pushes(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    token = {"username": "flux", "password": "a-read-only-token-for-flux"}
    repos.secret(core, namespace, "flux-token", token)
    spec = {"replicas": 1, "auth": {"tokens": [{"secret": "flux-token", "access": "read"}]}}
    repository = repos.serving(kubectl, api_client, core, namespace, "tokens", spec)
    work = repos.Work(tmp_path / "work")
    pushed = work.commit()
    work.push(repository.push_url(core))

    reader = repository.url(core, user="flux", password="a-read-only-token-for-flux")
    clone = repos.clone(reader, tmp_path / "clone")
    assert repos.commits(clone) == {pushed}
    work.commit()
    refused = repos.git("push", reader, "main", cwd=work.path, check=False)
    assert refused.returncode != 0, refused.stderr
    assert repos.remote_refs(reader)["refs/heads/main"] == pushed


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Records every POST with its headers; the server is on the testbed's bridge, which every
    pod reaches (as it reaches the object store)."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def test_webhook_signed_delivery_after_each_push(
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    server = http.server.ThreadingHTTPServer((str(settings.BRIDGE_ADDRESS), 0), _Receiver)
    _Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = "an-hmac-key-shared-with-the-receiver"
        repos.secret(core, namespace, "hook", {"token": token})
        url = f"http://{settings.BRIDGE_ADDRESS}:{server.server_address[1]}/hook"
        spec = {
            "replicas": 3,
            "notifications": {"webhooks": [{"name": "flux", "url": url, "secret": "hook"}]},
        }
        repository = repos.serving(kubectl, api_client, core, namespace, "notified", spec)
        work = repos.Work(tmp_path / "work")
        pushed = work.commit()
        work.push(repository.push_url(core))
        headers, payload = waiting.until(
            "a webhook delivery naming the pushed commit",
            lambda: next((r for r in _Receiver.received if pushed.encode() in r[1]), None),
            timeout=60,
            seen=lambda: _Receiver.received,
        )
        signature = hmac.new(token.encode(), payload, hashlib.sha256).hexdigest()
        assert headers["x-signature"] == f"sha256={signature}", headers
        status = repository.wait(
            "status.notifications with the push delivered",
            lambda s: any(
                item.get("deliveredGeneration", 0) >= 1 for item in s.get("notifications") or ()
            ),
        )
        assert repository.condition("NotificationsDelivered", status).get("status") == "True"
    finally:
        server.shutdown()
