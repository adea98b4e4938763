"""Replication under faults, at length: every fault scenario of the fault tests, many rounds.

The fault tests (tests/faults) run each scenario for two rounds; this runs each one for
``--fault-rounds`` rounds on one cluster, with the same harness, clients and checker, so that
rarer interleavings (a leader killed between prepare and commit, a cut during a catch-up)
get their chance. Per scenario it prints the rounds completed, the acknowledged pushes, the
lost ones, and the regressions observed; a broken invariant stops that scenario's rounds and
prints the checker's report with the replicas' logs.

There is no reference to compare against: the ratios are failures per opportunity, and the
right value of every one is 0. ``lost_pushes`` is per acknowledged push, ``regressions`` and
``stale_reads`` per observation, ``conflicts`` per acknowledged push, and ``failed_rounds``
per round attempted (an invariant broken, or the cluster stuck: no leader, no progress).
"""

import argparse
import time

from tests.faults import checking, scenarios


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faults")
    group.add_argument(
        "--fault-rounds",
        type=int,
        default=20,
        help="rounds of each fault scenario, on one cluster per scenario (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    totals = dict.fromkeys(
        ("acknowledged", "observations", "lost", "regressions", "stale_reads", "conflicts"), 0
    )
    rounds = failed = 0
    for name, fault in scenarios.SCENARIOS.items():
        print(f"   {name}: {args.fault_rounds} rounds", flush=True)
        started = time.monotonic()
        checked, stuck = _scenario(fault, args.fault_rounds)
        verdict = checked[-1] if checked else checking.Verdict()
        rounds += len(checked) + stuck
        failed += stuck or not verdict.ok
        totals["acknowledged"] += verdict.acknowledged
        totals["observations"] += verdict.observations
        totals["lost"] += verdict.lost_pushes
        totals["regressions"] += len(verdict.regressions)
        totals["stale_reads"] += len(verdict.stale_reads)
        totals["conflicts"] += len(verdict.conflicts)
        print(
            f"   {name}: rounds {len(checked)}, acknowledged pushes {verdict.acknowledged}, "
            f"lost pushes {verdict.lost_pushes}, regressions observed "
            f"{len(verdict.regressions)}, stale reads {len(verdict.stale_reads)}, "
            f"divergence alarms in logs {len(verdict.alarms)}"
            f"{', stuck' if stuck else ''}, in {time.monotonic() - started:.0f}s",
            flush=True,
        )
    return {
        "lost_pushes": totals["lost"] / max(totals["acknowledged"], 1),
        "regressions": totals["regressions"] / max(totals["observations"], 1),
        "stale_reads": totals["stale_reads"] / max(totals["observations"], 1),
        "conflicts": totals["conflicts"] / max(totals["acknowledged"], 1),
        "failed_rounds": failed / max(rounds, 1),
    }


def _scenario(fault: scenarios.Fault, rounds: int) -> tuple[list[checking.Verdict], bool]:
    """The verdict after each round checked, and whether the cluster got stuck."""
    started = time.monotonic()
    checked: list[checking.Verdict] = []

    def progress(index: int, verdict: checking.Verdict) -> None:
        checked.append(verdict)
        print(
            f"     round {index + 1}/{rounds} ({time.monotonic() - started:.0f}s): "
            f"{verdict.summary()}",
            flush=True,
        )

    try:
        scenarios.run_scenario(fault, rounds=rounds, strict=False, progress=progress)
    except AssertionError as error:  # no leader, no progress, a client failed: not checked
        print(f"     stuck in round {len(checked) + 1}: {error}", flush=True)
        return checked, True
    return checked, False
