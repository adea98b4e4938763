"""Scale and memory at 300 and 1,000 repositories: creation against the same objects created
directly, the operator's resident memory and where it goes, and its API requests while idle.

For each count of ``--scale-counts`` (default 300 and 1,000), on three hollow nodes
(``operator_scale``): the GitRepositories are created and timed until every object the
operator makes for them exists, against the same objects created directly (target: at most
2x; also printed: the pods and claims alone, against those alone created directly); the
operator's resident memory is sampled while they arrive (targets 200 MB at 300, 300 MB at
1,000). While they are all present:

- idle: the operator's API requests over ``--scale-idle-window`` seconds, counted by the API
  server under the operator's flow schema (as ``operator_idle``), less those of a window with
  no repository (the Lease), per repository. Hollow replicas never start, so this is what
  repositories waiting for their pods cost, not running ones (``operator-idle`` measures those);
- restart: the operator restarted, and its resident memory once it has made a pass over every
  repository and ``RESTART_SETTLE`` seconds later: what it holds in steady state, without the
  arrival's garbage;
- profile: the operator restarted with ``traceMemoryFrames=1`` (``kube/profiling``), and its
  Python memory by package and by line once it has made a pass over every repository; then it is
  restarted once more without tracing.
"""

import argparse
import json
import time
import urllib.request
from typing import Any

from bench import kube, operator, operator_idle, operator_scale
from gitquorum.kube import profiling
from gitquorum_testbed import cluster, install

RSS_TARGETS = {300: 200.0, 1000: 300.0}
"""Operator resident memory targets in MB by repository count (others: scaled between)."""
CREATE_RATIO_TARGET = 2.0
RESTART_SETTLE = 45.0
"""Seconds after a restarted operator's first pass over every repository at which its resident
memory is read again (it trims every 30 s: ``gitquorum.allocator``)."""
SHOWN = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operator scale and memory")
    group.add_argument(
        "--scale-counts",
        default="300,1000",
        help="repository counts, comma-separated (default: %(default)s)",
    )
    group.add_argument(
        "--scale-idle-window",
        type=float,
        default=60.0,
        help="seconds of the idle request windows (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    bed, api = operator.installed()
    window = args.scale_idle_window
    print(f"   reference idle window: {window:.0f} s with no GitRepository", flush=True)
    _, flows, _ = operator_idle._window(api, window)
    lease_rate = flows.get(operator_idle.OPERATOR_FLOW, 0.0) / window
    ratios: dict[str, float] = {}
    for count in (int(part) for part in args.scale_counts.split(",")):
        ratios.update(_at(bed, api, count, window, lease_rate))
    return ratios


def _at(
    bed: cluster.Testbed, api: kube.Kube, count: int, window: float, lease_rate: float
) -> dict[str, float]:
    seen: dict[str, Any] = {}
    scale = operator_scale.measure(
        bed, api, count, while_present=lambda _: seen.update(_present(bed, api, count, window))
    )
    return _report(count, scale, seen, lease_rate, window)


def _present(bed: cluster.Testbed, api: kube.Kube, count: int, window: float) -> dict[str, Any]:
    print(f"   idle: {window:.0f} s with {count} repositories waiting for hollow pods", flush=True)
    _, flows, cpu = operator_idle._window(api, window)
    print("   restart: the operator restarted; RSS once it has passed over every repository")
    restarted_mb = _restart(bed, api, count, trace=False)
    print("   profile: the operator restarted with memory tracing", flush=True)
    traced_mb = _restart(bed, api, count, trace=True)
    profile = api.operator_get("/debug/memory", _read_profile)
    _print_profile(count, profile)
    _restart(bed, api, count, trace=False)
    return {
        "requests": flows.get(operator_idle.OPERATOR_FLOW, 0.0),
        "cpu": cpu,
        "restarted_mb": restarted_mb,
        "traced_mb": traced_mb,
        "profile": profile,
    }


def _restart(bed: cluster.Testbed, api: kube.Kube, count: int, *, trace: bool) -> float:
    """The operator restarted (with tracing or not); its RSS in MB after a pass per repository."""
    install.install_chart(
        bed,
        node_loss_grace=operator.NODE_LOSS_GRACE,
        extra=("--set", f"traceMemoryFrames={1 if trace else 0}"),
    )
    api.restart_operator()
    started = time.monotonic()
    metrics = kube.wait(
        f"the restarted operator to pass over all {count} repositories",
        lambda: _passed(api, count),
        timeout=600,
        interval=2.0,
    )
    passed_mb = metrics["process_resident_memory_bytes"] / 1e6
    print(
        f"     passed over {count} repositories {time.monotonic() - started:.0f} s after "
        f"leading; RSS {passed_mb:.0f} MB",
        flush=True,
    )
    # Steady state: the restart's burst over, and the allocator's periodic trim past.
    time.sleep(RESTART_SETTLE)
    settled_mb = api.operator_metrics()["process_resident_memory_bytes"] / 1e6
    print(f"     RSS {settled_mb:.0f} MB {RESTART_SETTLE:.0f} s later", flush=True)
    return settled_mb


def _passed(api: kube.Kube, count: int) -> dict[str, float] | None:
    metrics = api.operator_metrics()
    watched = metrics.get("gitquorum_operator_repositories", 0.0)
    passes = metrics.get("gitquorum_operator_reconcile_seconds_count", 0.0)
    return metrics if watched >= count and passes >= count else None


def _read_profile(url: str) -> profiling.Profile:
    with urllib.request.urlopen(url, timeout=60) as response:
        return profiling.Profile.from_json(json.loads(response.read()))


def _report(
    count: int,
    scale: operator_scale.Scale,
    seen: dict[str, Any],
    lease_rate: float,
    window: float,
) -> dict[str, float]:
    target_mb = _rss_target(count)
    create_ratio = scale.exist_all / scale.reference_all
    pods_ratio = scale.exist / scale.reference
    per_repository = (seen["requests"] / window - lease_rate) / count
    print(
        f"   summary at {count} repositories: every object the operator makes exists after "
        f"{scale.exist_all:.1f} s, the same objects created directly after "
        f"{scale.reference_all:.1f} s: ratio {create_ratio:.2f} (target <= "
        f"{CREATE_RATIO_TARGET:.0f}); its pods and claims alone after {scale.exist:.1f} s, "
        f"created directly after {scale.reference:.1f} s: ratio {pods_ratio:.2f}; "
        f"operator RSS {scale.rss_before_mb:.0f} MB before, peak "
        f"{scale.peak_mb:.0f} MB while they arrived, {seen['restarted_mb']:.0f} MB settled "
        f"after a restart (target <= {target_mb:.0f} MB; "
        f"{seen['traced_mb']:.0f} MB while tracing); idle {per_repository:.4f} API requests/s "
        f"per repository beyond the Lease's {lease_rate:.2f}/s, operator CPU "
        f"{seen['cpu'] / window * 100:.1f}% of a core for all; while they arrived, operator CPU "
        f"{scale.cpu_seconds:.0f} s until every pod was scheduled, {scale.passes:.0f} passes",
        flush=True,
    )
    return {
        f"create_{count}": create_ratio,
        f"create_pods_claims_{count}": pods_ratio,
        f"memory_{count}": scale.peak_mb / target_mb,
        f"memory_restarted_{count}": seen["restarted_mb"] / target_mb,
        f"idle_requests_{count}": per_repository / operator_idle.REQUESTS_TARGET,
    }


def _print_profile(count: int, profile: profiling.Profile) -> None:
    print(f"   where the memory goes at {count} repositories (traced Python memory):")
    print(
        f"     traced {profile.traced_bytes / 1e6:.0f} MB, peak {profile.peak_bytes / 1e6:.0f} MB"
    )
    for site in profile.packages[:SHOWN]:
        share = site.bytes / max(profile.traced_bytes, 1) * 100
        print(
            f"     {site.where:48} {site.bytes / 1e6:7.1f} MB {share:5.1f}%  {site.blocks} blocks"
        )
    print("   lines holding most:")
    for site in profile.lines[:SHOWN]:
        print(f"     {site.where:48} {site.bytes / 1e6:7.1f} MB  {site.blocks} blocks")


def _rss_target(count: int) -> float:
    if count in RSS_TARGETS:
        return RSS_TARGETS[count]
    low, high = min(RSS_TARGETS), max(RSS_TARGETS)
    share = (min(max(count, low), high) - low) / (high - low)
    return RSS_TARGETS[low] + share * (RSS_TARGETS[high] - RSS_TARGETS[low])
