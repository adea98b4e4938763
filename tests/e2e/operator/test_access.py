"""Who may change what, through the operator: protected refs from the spec reach every
replica and refuse force pushes and deletion, and a change of the rules applies without a
restart (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

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
    repos.apply(kubectl, namespace, repos.manifest("guarded", spec))
    repository = repos.Repository(api_client, namespace, "guarded")
    repository.wait_ready()
    repository.wait_serving(core)
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
