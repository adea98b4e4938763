"""Faults on a ``gitquorum local`` cluster, and rounds of them under load, checked.

A scenario (:data:`SCENARIOS`) is one kind of fault, repeated for some rounds on one cluster,
each round checked; the tests and ``bench/faults.py`` run the same ones. The faults through
the operator on Kubernetes are in ``operated``.
"""

from __future__ import annotations

import pathlib
import random
import time
from collections.abc import Callable

from tests.faults.checking import Checker, Verdict
from tests.faults.clients import Workload
from tests.faults.localcluster import LocalCluster

Fault = Callable[[LocalCluster, Workload], None]
"""One round of a fault: inject it while clients run, wait through it, recover."""

PUSHES_PER_PHASE = 3
"""Acknowledged pushes awaited before a fault, during it and after it: proof of progress."""


def kill_follower(cluster: LocalCluster, workload: Workload) -> None:
    victim = workload.rng.choice(cluster.followers())
    pid = cluster.kill(victim)
    killed = time.monotonic()
    workload.records.event(f"SIGKILL follower {victim} (pid {pid})")
    workload.wait_for_pushes(PUSHES_PER_PHASE, since=killed, what=f"after {victim} was killed")
    cluster.wait_restarted(victim, pid)
    cluster.wait_healthy(f"{victim} back and every replica InSync")
    workload.records.event(f"{victim} back, every replica InSync")


def kill_leader(cluster: LocalCluster, workload: Workload) -> None:
    victim, term = cluster.leader()
    pid = cluster.kill(victim)
    killed = time.monotonic()
    workload.records.event(f"SIGKILL leader {victim} (pid {pid}) of term {term}")
    leader, new_term = cluster.wait_new_leader(term)
    workload.records.event(f"{leader} leads term {new_term}")
    assert leader != victim, f"{victim} was killed, yet leads term {new_term} after it"
    workload.wait_for_pushes(PUSHES_PER_PHASE, since=killed, what=f"after {victim} was killed")
    cluster.wait_healthy(f"{victim} back as a follower and every replica InSync")
    workload.records.event(f"{victim} back, every replica InSync")


def cut_follower(cluster: LocalCluster, workload: Workload) -> None:
    victim = workload.rng.choice(cluster.followers())
    cluster.cut(victim)
    cut = time.monotonic()
    workload.records.event(f"cut follower {victim} off")
    try:
        workload.wait_for_pushes(PUSHES_PER_PHASE, since=cut, what=f"while {victim} is cut off")
    finally:
        cluster.heal(victim)
        workload.records.event(f"healed {victim}")
    cluster.wait_healthy(f"{victim} healed and every replica InSync")
    workload.records.event("every replica InSync")


def cut_leader(cluster: LocalCluster, workload: Workload) -> None:
    victim, term = cluster.leader()
    cluster.cut(victim)
    cut = time.monotonic()
    workload.records.event(f"cut leader {victim} of term {term} off")
    try:
        leader, new_term = cluster.wait_new_leader(term)
        workload.records.event(f"{leader} leads term {new_term}")
        workload.wait_for_pushes(PUSHES_PER_PHASE, since=cut, what=f"while {victim} is cut off")
    finally:
        cluster.heal(victim)
        workload.records.event(f"healed {victim}")
    cluster.wait_healthy(f"{victim} healed, following, and every replica InSync")
    workload.records.event("every replica InSync")


SCENARIOS: dict[str, Fault] = {
    "follower-killed": kill_follower,
    "leader-killed": kill_leader,
    "follower-cut": cut_follower,
    "leader-cut": cut_leader,
}


def run_scenario(
    fault: Fault,
    *,
    rounds: int,
    shared: int = 2,
    own: int = 2,
    seed: int | None = None,
    strict: bool = True,
    progress: Callable[[int, Verdict], None] | None = None,
    directory: pathlib.Path | None = None,
) -> Verdict:
    """Runs ``rounds`` rounds of ``fault`` on one cluster under load, checking after each.

    A round: clients push until some pushes are acknowledged, the fault is injected and
    recovered from while they keep going, then they stop and the checker runs over
    everything recorded so far. With ``strict`` a broken invariant fails at once (inside the
    cluster's block, so that the logs are printed); otherwise the verdict is returned and the
    rounds stop at the first broken one. With ``directory`` the cluster's data, logs and
    client clones stay there afterwards.
    """
    verdict = Verdict()
    seed = random.randrange(2**32) if seed is None else seed
    with LocalCluster(directory=directory) as cluster:
        workload = Workload(cluster, shared=shared, own=own, seed=seed)
        workload.records.event(f"workload seed {seed} ({fault.__name__}, {rounds} rounds)")
        checker = Checker(cluster, workload)
        try:
            for index in range(rounds):
                verdict = _round(cluster, workload, checker, fault, index + 1)
                if progress is not None:
                    progress(index, verdict)
                if not verdict.ok:
                    break
        except BaseException:
            print("timeline (since the workload started):\n" + workload.records.timeline())
            raise
        if not verdict.ok:
            if strict:
                verdict.assert_ok()
            print(verdict.describe(), flush=True)
            print(cluster.report(), flush=True)
            cluster.keep = True
    return verdict


def _round(
    cluster: LocalCluster, workload: Workload, checker: Checker, fault: Fault, number: int
) -> Verdict:
    with workload.running():
        workload.wait_for_pushes(
            PUSHES_PER_PHASE, since=time.monotonic(), what=f"before the fault of round {number}"
        )
        workload.records.event(f"round {number}")
        fault(cluster, workload)
        workload.wait_for_pushes(
            PUSHES_PER_PHASE, since=time.monotonic(), what=f"after round {number}'s recovery"
        )
    workload.records.event(f"round {number}: clients stopped")
    return checker.check()
