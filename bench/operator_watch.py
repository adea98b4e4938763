"""A burst of repositories, then a new one: does the operator still see new pods at once?

The operator's first delivery once stopped seeing new pods' addresses after a burst of 300
repositories (NoLeader for 3 minutes while the replicas answered; a fresh operator pod fixed
it): a watch that stalled silently. This benchmark repeats that sequence on the testbed:

1. a 3-replica GitRepository on real nodes, ``kubectl apply`` to Ready (the baseline);
2. ``--watch-repositories`` GitRepositories at once, on hollow nodes (their pods never run),
   left in place;
3. while they exist, another 3-replica GitRepository on real nodes, to Ready.

Printed: both times to Ready (ratio: after the burst / before it; a stalled watch shows as
minutes), and how often the operator had to read a pod again because its cached view stayed
wrong (``gitquorum_operator_stale_cache_total``: each is a watch event that never came).
"""

import argparse
import time

from bench import kube, operator, operator_scale

NAME = "watch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operator watch")
    group.add_argument(
        "--watch-repositories",
        type=int,
        default=300,
        help="GitRepositories of the burst (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    bed, api = operator.installed()
    with api.namespace("watch-before") as namespace:
        before = api.create_ready(namespace)
    print(f"   before the burst: Ready in {before:.1f} s", flush=True)
    stale_before = _stale(api)
    hollow = [bed.node_add(None, hollow=True).name for _ in range(operator_scale.HOLLOW_NODES)]
    for name in hollow:
        pool = {operator_scale.POOL_LABEL: operator_scale.POOL}
        api.core.patch_node(name, {"metadata": {"labels": pool}})
    try:
        with api.namespace("watch-burst") as burst:
            started = time.monotonic()
            operator_scale.create_hollow(api, burst, args.watch_repositories, prefix="b")
            print(
                f"   burst: {args.watch_repositories} GitRepositories taken by the API in "
                f"{time.monotonic() - started:.1f} s",
                flush=True,
            )
            with api.namespace("watch-after") as namespace:
                after = api.create_ready(namespace)
            print(f"   after the burst, while it exists: Ready in {after:.1f} s", flush=True)
            stale = _stale(api) - stale_before
            rss = api.operator_metrics()["process_resident_memory_bytes"] / 1e6
    finally:
        operator_scale.remove_hollow(bed, api, hollow)
    print(
        f"   summary: Ready {before:.1f} s before the burst, {after:.1f} s after "
        f"(ratio {after / before:.2f}); pods read again for a stale cache: {stale:.0f}; "
        f"operator RSS {rss:.0f} MB",
        flush=True,
    )
    return {"ready_after_burst": after / before}


def _stale(api: kube.Kube) -> float:
    series = "gitquorum_operator_stale_cache_total"
    return sum(v for k, v in api.operator_metrics().items() if k.startswith(series))
