"""A leader deposed by a peer's message while it still answers: ``gitquorum local`` elects again.

A well-formed, authenticated message of a newer term makes the leader adopt that term and
step down (that is the protocol: a newer term exists). It goes on answering its controller,
as a Follower of a term above the controller's. Issue 15: the controller acted only on a
leader gone or silent, so writes stayed down for good. Now it must elect again, in a term
above every term reported, and pushes must be acknowledged again.
"""

import json
import pathlib
import urllib.request
from typing import Any

import pytest

from tests.faults import gitcli, localcluster

pytestmark = pytest.mark.integration

PUSH_TIMEOUT = 30.0


def _send(
    cluster: localcluster.LocalCluster, replica: str, path: str, message: dict[str, Any]
) -> Any:
    """A replication message, as a peer would send it (with the shared token)."""
    token = pathlib.Path(cluster.cluster()["token_file"]).read_text().strip()
    request = urllib.request.Request(
        cluster.replica(replica)["peer_url"] + path,
        data=json.dumps(message).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=localcluster.STATUS_TIMEOUT) as answer:
        return json.load(answer)


def _push(
    git: gitcli.Git, cluster: localcluster.LocalCluster, work: pathlib.Path, name: str
) -> None:
    git.out("commit", "-q", "--allow-empty", "-m", name, cwd=work)
    leader, _ = cluster.leader()
    git.out(
        "push", "-q", cluster.url(leader), "HEAD:refs/heads/main", cwd=work, timeout=PUSH_TIMEOUT
    )


@pytest.mark.parametrize(
    "path,message",
    [
        pytest.param(
            "/replication/commit",
            {"term": 50, "transaction": "f" * 32, "generation": 1},
            id="commit-not-held",
        ),
        pytest.param(
            "/replication/heartbeat",
            {
                "term": 50,
                "leader": "r2",
                "generation": 0,
                "transaction": "",
                "checksum": "0" * 64,
                "settled": False,
            },
            id="heartbeat-of-another-leader",
        ),
    ],
)
def test_local_elects_again_when_the_leader_reports_a_newer_term(
    tmp_path: pathlib.Path, path: str, message: dict[str, Any]
) -> None:
    git = gitcli.Git(tmp_path / "home")
    work = tmp_path / "work"
    git.out("init", "-q", str(work))
    with localcluster.LocalCluster() as cluster:
        _push(git, cluster, work, "before")
        leader, term = cluster.leader()
        if message.get("leader") == leader:
            message = {**message, "leader": next(r for r in cluster.ids() if r != leader)}

        assert term < 50

        _send(cluster, leader, path, message)

        # It took the term (the controller may already have given it a newer one).
        assert cluster.status(leader)["term"] >= 50
        new_leader, new_term = cluster.wait_new_leader(50)
        assert new_term > 50
        assert cluster.status(new_leader)["term"] == new_term
        _push(git, cluster, work, "after")
        statuses = cluster.wait_converged()
        assert {status["term"] for status in statuses.values()} == {new_term}
