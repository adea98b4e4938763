"""A replica's ``/metrics``: its place in the quorum next to the git server's figures."""

import pathlib
import re
import urllib.request
from collections.abc import Iterator

import pytest

from tests import waiting
from tests.integration.helpers import Git
from tests.integration.replicas import Replicas

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(tmp_path: pathlib.Path, auth_file: pathlib.Path) -> Iterator[Replicas]:
    group = Replicas(tmp_path / "replicas", auth_file, 3)
    try:
        group.start_all()
        yield group
    finally:
        group.stop_all()


def scrape(replicas: Replicas, replica: str) -> dict[str, float]:
    """Every series of the replica's /metrics (name and labels) with its value."""
    url = f"http://127.0.0.1:{replicas.ports[replica][0]}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return {
        match.group(1): float(match.group(2))
        for match in re.finditer(r"^([^#\s]\S*) (\S+)$", text, re.M)
    }


def test_replica_metrics_show_leader_term_generation_and_state(
    git: Git, replicas: Replicas, tmp_path: pathlib.Path
) -> None:
    work = tmp_path / "work"
    git.run("init", "-q", str(work))
    git.commit(work, "README", "hello\n")
    git.run("push", "-q", replicas.url("r1"), "main", cwd=work)
    replicas.wait_in_sync()

    def all_applied() -> list[dict[str, float]] | None:
        scraped = [scrape(replicas, replica) for replica in replicas.ids]
        return scraped if all(s["gitquorum_replica_generation"] == 1 for s in scraped) else None

    leader, *followers = waiting.until(
        "every replica's metrics to show the push applied", all_applied, timeout=10
    )
    assert leader["gitquorum_replica_leader"] == 1
    assert leader["gitquorum_replica_writable"] == 1
    for scraped in (leader, *followers):
        assert scraped["gitquorum_replica_term"] == replicas.term
        assert scraped['gitquorum_replica_state{state="InSync"}'] == 1
        assert scraped['gitquorum_replica_state{state="Rebuilding"}'] == 0
        assert scraped["gitquorum_replica_lag_generations"] == 0
        assert scraped["gitquorum_replica_readable"] == 1
        assert "gitquorum_replica_copies_total" in scraped
        assert "gitquorum_git_processes_running" in scraped
    for scraped in followers:
        assert scraped["gitquorum_replica_leader"] == 0
        assert scraped["gitquorum_replica_writable"] == 0
    push = 'gitquorum_http_requests_total{endpoint="rpc",service="receive-pack",outcome="ok"}'
    assert leader[push] == 1, "the follower forwarded the push: the leader ran it"
