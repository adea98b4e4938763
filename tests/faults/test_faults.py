"""Replication under faults: pushes and reads by concurrent clients while replicas are killed
or cut off, then the invariants checked (see ``checking``).

Each test runs a few rounds of one fault on one ``gitquorum local`` cluster of three replicas,
with two clients pushing to ``main`` and two to branches of their own; the checker runs after
every round. The last test holds the checker itself to account: records that break each
invariant on purpose must be reported, so that a clean verdict means something.
"""

import time

import pytest

from tests.faults import checking, clients, localcluster, scenarios

pytestmark = pytest.mark.integration

ROUNDS = 2
"""Faults per test: enough to fail over and back, and to keep the file within ~90 s."""


def test_invariants_hold_with_follower_killed() -> None:
    verdict = scenarios.run_scenario(scenarios.kill_follower, rounds=ROUNDS)
    assert verdict.acknowledged > 0


def test_invariants_hold_with_leader_killed() -> None:
    verdict = scenarios.run_scenario(scenarios.kill_leader, rounds=ROUNDS)
    assert verdict.acknowledged > 0


def test_invariants_hold_with_follower_cut_off() -> None:
    verdict = scenarios.run_scenario(scenarios.cut_follower, rounds=ROUNDS)
    assert verdict.acknowledged > 0


def test_invariants_hold_with_leader_cut_off() -> None:
    verdict = scenarios.run_scenario(scenarios.cut_leader, rounds=ROUNDS)
    assert verdict.acknowledged > 0


def test_checker_reports_each_broken_invariant() -> None:
    with localcluster.LocalCluster() as cluster:
        workload = clients.Workload(cluster, shared=1, own=1)
        records = workload.records
        seed = records.acknowledgements[0]
        work = workload.clients[0].work
        never_pushed = []
        for message in ("never pushed", "never pushed either"):
            workload.git.out("commit", "-q", "--allow-empty", "-m", message, cwd=work)
            never_pushed.append(workload.git.out("rev-parse", "HEAD", cwd=work).strip())
        lost, other = never_pushed
        now = time.monotonic()
        records.acknowledged(
            clients.Acknowledgement("c0", "main", seed.new, lost, "r0", now, now + 0.1)
        )
        records.acknowledged(
            clients.Acknowledgement("c1", "main", seed.new, other, "r1", now, now + 0.2)
        )
        records.observed(clients.Observation("c0", "r1", now + 0.3, now + 0.4, {"main": lost}))
        records.observed(clients.Observation("c0", "r2", now + 0.5, now + 0.6, {"main": seed.new}))
        # A ref only one replica has, behind its back: refs and checksums differ.
        replica = cluster.followers()[0]
        workload.git.out(
            "--git-dir",
            str(cluster.repository(replica)),
            "update-ref",
            "refs/heads/stray",
            seed.new,
        )

        verdict = checking.Checker(cluster, workload).check(timeout=5)

        described = verdict.describe()
        assert not verdict.ok
        assert verdict.lost_pushes == 2, described
        assert any(lost[:12] in line for line in verdict.lost), described
        assert any("then at" in line for line in verdict.regressions), described
        assert any("ends with" in line for line in verdict.regressions), described
        assert any(other[:12] in line for line in verdict.stale_reads), described
        assert len(verdict.conflicts) == 1 and other[:12] in verdict.conflicts[0], described
        assert any("refs/heads/stray" in line for line in verdict.divergence), described
        assert any("refs on disk give" in line for line in verdict.divergence), described
