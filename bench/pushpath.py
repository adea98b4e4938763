"""Where a replicated push's time and CPU go, for ``bench replication``.

- Time: the leader logs a trace of every push it decides (``replication/tracing.py``); the
  traces of a run are read back from the replicas' logs, summarised step by step (p50, p99,
  share of the total) and kept whole in ``bench/results/push-traces.tsv``.
- CPU: the CPU seconds every process of a system used while a client pushed to it alone, per
  acknowledged push: for the cluster its controller, its replicas and every git they ran
  (children are counted once reaped), for the single server the same of its one process.
  Background work (heartbeats, status polls) counts too: it is part of what a push costs.
"""

import os
import pathlib
import statistics
from collections.abc import Callable, Iterable

from gitquorum.replication import tracing

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
CPU_TARGET = 3.0
"""CPU per acknowledged push with 3 replicas, against one server (issue: at most 3x)."""
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User and system CPU of ``pids`` and of their reaped children, in seconds."""
    total = 0
    for pid in pids:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
        # Fields after the command name: utime, stime, cutime, cstime are the 12th to 15th.
        fields = raw[raw.rindex(")") + 2 :].split()
        total += sum(int(value) for value in fields[11:15])
    return total / _TICKS


def cpu_per_push(pids: Callable[[], list[int]], push: Callable[[int], None], count: int) -> float:
    """CPU seconds per push of ``count`` pushes made one after another by ``push``."""
    watched = pids()
    before = cpu_seconds(watched)
    for index in range(count):
        push(index)
    if pids() != watched:
        raise RuntimeError(f"processes changed while measuring CPU: {watched} -> {pids()}")
    return (cpu_seconds(watched) - before) / count


def traces(logs: Iterable[pathlib.Path]) -> list[dict[str, float]]:
    """Every push trace in ``logs``, in milliseconds per field."""
    found = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            fields = tracing.parse(line)
            if fields is not None:
                found.append(fields)
    return found


def report_traces(found: list[dict[str, float]]) -> pathlib.Path:
    """Prints where the time of the traced pushes went; writes them all to a TSV file."""
    if not found:
        raise RuntimeError("no push trace in the replicas' logs (is the leader's log at INFO?)")
    total = statistics.median(trace["total"] for trace in found)
    print(f"   where a replicated push's time goes on the leader ({len(found)} traced pushes)")
    print(f"     {'step':14} {'p50 ms':>8} {'p99 ms':>8} {'share of p50 total':>19}")
    for step in tracing.STEPS:
        values = sorted(trace.get(step, 0.0) for trace in found)
        p50 = statistics.median(values)
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(f"     {step:14} {p50:8.1f} {p99:8.1f} {p50 / total:18.0%}")
    print(f"     {'total':14} {total:8.1f}")
    answers = sorted({name for trace in found for name in trace} - {*tracing.STEPS, "total"})
    for answer in answers:
        values = [trace[answer] for trace in found if answer in trace]
        print(
            f"     in the prepare round, {answer} after p50 {statistics.median(values):.1f} ms "
            f"(counted toward the quorum in {len(values)} of {len(found)} pushes)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "push-traces.tsv"
    columns = ["total", *tracing.STEPS, *answers]
    rows = ["\t".join(columns)]
    rows += ["\t".join(f"{trace.get(c, float('nan')):.1f}" for c in columns) for trace in found]
    path.write_text("\n".join(rows) + "\n")
    print(f"   every trace: {path}", flush=True)
    return path
