"""Faults through the operator, at length: every scenario of ``tests/faults/operated.py`` for
``--operator-fault-rounds`` rounds on the testbed (the e2e tier runs one round of each).

Per scenario, a 3-replica GitRepository in a fresh namespace, four clients through its
Service (two on ``main``, two on branches of their own), and the nemesis: nodes stopped and
started, partitioned and healed, the operator killed, replica pods deleted, the API server
restarted, and a combination of two. The checker runs after every round. Printed per scenario:
rounds, acknowledged pushes, lost pushes, regressions, stale reads, and the time from the
fault to convergence (every replica InSync at one checksum, the status saying so), p50 and
max. The ratios are failures per opportunity (0 is right) and the slowest convergence against
its target (60 s plus copy time: ``CONVERGE_SECONDS``).
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench import kube, operator
from gitquorum_testbed import install
from tests.faults import checking, operated

NAME = "faults"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operator faults")
    group.add_argument(
        "--operator-fault-rounds",
        type=int,
        default=20,
        help="rounds of each scenario through the operator (default: %(default)s)",
    )
    group.add_argument(
        "--operator-fault-scenarios",
        default=",".join(operated.SCENARIOS),
        help="comma-separated scenarios (default: all)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    bed, api = operator.installed()
    rows = []
    for name in args.operator_fault_scenarios.split(","):
        rows.append(_scenario(bed, api, name, args.operator_fault_rounds))
    print(
        f"   {'scenario':44} {'rounds':>6} {'acked':>6} {'lost':>4} {'regr':>4} {'stale':>5} "
        f"{'converge p50':>12} {'max':>6}",
        flush=True,
    )
    for row in rows:
        print("   " + row.line(), flush=True)
    acknowledged = sum(row.acknowledged for row in rows) or 1
    slowest = max((max(row.converge, default=0.0) for row in rows), default=0.0)
    return {
        "lost_pushes": sum(row.lost for row in rows) / acknowledged,
        "regressions": sum(row.regressions for row in rows) / acknowledged,
        "failed_rounds": sum(row.failed for row in rows) / max(sum(row.rounds for row in rows), 1),
        "converge_max": slowest / operated.CONVERGE_SECONDS,
    }


class Row:
    def __init__(self, name: str) -> None:
        self.name = name
        self.rounds = self.acknowledged = self.lost = self.regressions = self.stale = 0
        self.failed = 0
        self.converge: list[float] = []

    def line(self) -> str:
        p50 = statistics.median(self.converge) if self.converge else 0.0
        top = max(self.converge, default=0.0)
        return (
            f"{self.name:44} {self.rounds:>6} {self.acknowledged:>6} {self.lost:>4} "
            f"{self.regressions:>4} {self.stale:>5} {p50:>11.1f}s {top:>5.1f}s"
            + (f"  ({self.failed} failed)" if self.failed else "")
        )


def _scenario(bed: object, api: kube.Kube, name: str, rounds: int) -> Row:
    row = Row(name)
    started = time.monotonic()
    print(f"   {name}: {rounds} rounds", flush=True)
    with api.namespace(NAME) as namespace, tempfile.TemporaryDirectory() as scratch:
        api.apply(namespace, kube.repository_manifest(NAME, {"replicas": 3}))
        kube.wait(
            f"{namespace}/{NAME} Ready with 3 replicas in sync",
            lambda: _settled(api, namespace),
            timeout=180,
        )
        cluster = operated.OperatedCluster(
            testbed=bed,  # type: ignore[arg-type]
            api=api.api_client,
            namespace=namespace,
            name=NAME,
            directory=Path(scratch) / "faults",
            operator_namespace=install.NAMESPACE,
            operator_selector="app.kubernetes.io/name=gitquorum-operator",
        )

        def progress(index: int, verdict: checking.Verdict, seconds: float) -> None:
            row.rounds = index + 1
            row.acknowledged = verdict.acknowledged
            row.lost = verdict.lost_pushes
            row.regressions = len(verdict.regressions)
            row.stale = len(verdict.stale_reads)
            row.converge.append(seconds)
            row.failed += not verdict.ok
            print(
                f"     round {index + 1}/{rounds} ({time.monotonic() - started:.0f}s): "
                f"{verdict.summary()}; fault to convergence {seconds:.1f}s",
                flush=True,
            )

        try:
            operated.run_scenario(
                cluster, operated.SCENARIOS[name], rounds=rounds, progress=progress
            )
        except AssertionError as error:  # stuck: no progress, no convergence
            row.failed += 1
            row.rounds += 1
            print(f"     stuck: {str(error)[:2000]}", flush=True)
    return row


def _settled(api: kube.Kube, namespace: str) -> bool:
    status = api.repository(namespace, NAME).get("status") or {}
    entries = status.get("replicaStatuses") or []
    return (
        status.get("readyReplicas") == 3
        and len(entries) == 3
        and all(e.get("state") == "InSync" for e in entries)
    )
