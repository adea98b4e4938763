"""Maintenance and scrubs while clients push: nothing acknowledged is lost, no invariant
breaks, no scrub mistakes a push in flight for damage, and every replica passes git fsck.

One ``gitquorum local`` cluster of three replicas, told to look at maintenance every few
pushes, to repack fully (with cruft packs and expiry) every couple of seconds and to scrub
every second, under the fault harness's clients (two on ``main``, two on branches of their
own); the harness's checker then proves the replication invariants from what they recorded.
"""

import subprocess
import time
from typing import Any

import pytest

from tests import waiting
from tests.faults import checking, clients, localcluster

pytestmark = pytest.mark.integration

ARGUMENTS = (
    "--maintenance-pushes=3",
    "--maintenance-interval=0.5",
    "--full-repack-interval=2",
    "--prune-expiry=60",
    "--ref-history=5",
    "--scrub-interval=1",
)
PUSHES = 30
RUNS = 3
"""Maintenance runs every replica must have done while the clients pushed."""


def _upkeep(cluster: localcluster.LocalCluster, replica: str) -> dict[str, Any]:
    upkeep: dict[str, Any] = cluster.status(replica).get("upkeep") or {}
    return upkeep


def test_maintenance_and_scrubs_during_concurrent_pushes_lose_nothing() -> None:
    with localcluster.LocalCluster(replica_arguments=ARGUMENTS) as cluster:
        workload = clients.Workload(cluster, shared=2, own=2)
        started = time.time()
        with workload.running():
            workload.wait_for_pushes(
                PUSHES, since=time.monotonic(), what="pushes while replicas maintain"
            )
            runs = {replica: 0 for replica in cluster.ids()}

            def maintained() -> bool:
                for replica in cluster.ids():
                    last = _upkeep(cluster, replica).get("lastMaintenance") or {}
                    logged = (cluster.directory / "replicas" / replica / "replica.log").read_text()
                    runs[replica] = logged.count(f"maintenance on {replica} ok")
                    assert last.get("outcome") in (None, "ok"), last
                return all(count >= RUNS for count in runs.values())

            waiting.until(
                f"{RUNS} maintenance runs on every replica while clients push",
                maintained,
                timeout=localcluster.STATE_TIMEOUT,
                seen=lambda: runs,
            )
        verdict = checking.Checker(cluster, workload).check()
        verdict.assert_ok()
        assert verdict.acknowledged >= PUSHES
        for replica in cluster.ids():
            upkeep = _upkeep(cluster, replica)
            assert (upkeep.get("lastFullRepack") or 0) > started, (replica, upkeep)
            assert (upkeep.get("lastScrub") or {}).get("outcome") == "ok", (replica, upkeep)
            assert not upkeep.get("damaged"), (replica, upkeep)
            log = (cluster.directory / "replicas" / replica / "replica.log").read_text()
            assert "found damage" not in log, f"{replica} took a push in flight for damage"
        # git fsck is not safe against a concurrent repack (a pack it listed can vanish before
        # it opens the index), and maintenance runs every half second: stop the replicas first.
        repositories = {replica: cluster.repository(replica) for replica in cluster.ids()}
        cluster.stop()
        for replica, repository in repositories.items():
            fsck = subprocess.run(
                ["git", "fsck", "--full", "--strict", "--no-dangling"],
                cwd=repository,
                capture_output=True,
                text=True,
                check=False,
            )
            assert fsck.returncode == 0, f"{replica}: {fsck.stdout}{fsck.stderr}"
