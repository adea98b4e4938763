"""Push notifications under load: how long after a push's acknowledgement its webhook arrives.

Three ``gitquorum replica`` processes on loopback (``tests.integration.replicas``), r0 leading,
each given a notifications file naming one ``generic-hmac`` webhook on a receiver in this
process (``tests.webhooks``). One client pushes ``--webhook-pushes`` commits at
``--webhook-rate`` pushes a second (each push starts on its schedule, or at once when the
previous one ran late). The latency of a delivery is the receiver's clock at arrival minus
the ``acknowledgedAt`` the payload carries (one machine, one clock). Target (issue 12): p99
within 1 s under 10 pushes a second; the ratio is p99 against that second.
"""

import argparse
import json
import pathlib
import statistics
import tempfile
import time

from tests import waiting
from tests.integration import helpers
from tests.integration.replicas import Replicas
from tests.webhooks import Receiver

TARGET_SECONDS = 1.0
DELIVERY_DEADLINE = 60.0
"""Seconds after the last push for every delivery to have arrived."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("webhooks")
    group.add_argument(
        "--webhook-pushes", type=int, default=300, help="pushes (default: %(default)s)"
    )
    group.add_argument(
        "--webhook-rate",
        type=float,
        default=10.0,
        help="pushes a second the client aims at (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gitquorum-bench-webhooks-") as temporary:
        work = pathlib.Path(temporary)
        receiver = Receiver()
        group = _replicas(work, receiver)
        try:
            group.start_all()
            rate = _push(work, group, args.webhook_pushes, args.webhook_rate)
            latencies = _latencies(receiver, args.webhook_pushes, group)
        finally:
            group.stop_all()
            receiver.close()
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    verdict = "meets" if p99 <= TARGET_SECONDS else "MISSES"
    print(
        f"   summary: {len(latencies)} webhooks at {rate:.1f} pushes/s: after the "
        f"acknowledgement p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max "
        f"{latencies[-1] * 1000:.1f} ms (target p99 <= {TARGET_SECONDS:g} s: {verdict})",
        flush=True,
    )
    return {"p99": p99 / TARGET_SECONDS}


def _replicas(work: pathlib.Path, receiver: Receiver) -> Replicas:
    notifications = work / "notifications.json"
    document = {
        "repository": {"fullName": "bench/webhooks", "url": "http://127.0.0.1/webhooks.git"},
        "webhooks": [
            {
                "name": "bench",
                "url": receiver.url("/bench"),
                "format": "generic-hmac",
                "secret": "bench-secret",
            }
        ],
    }
    notifications.write_text(json.dumps(document))
    auth_file = helpers.write_auth_file(work / "users")
    return Replicas(
        work / "replicas",
        auth_file,
        3,
        extra_args=("--notifications-file", str(notifications), "--log-level", "INFO"),
    )


def _push(work: pathlib.Path, group: Replicas, count: int, rate: float) -> float:
    """``count`` pushes to the leader on a schedule of ``rate`` a second; the rate achieved."""
    git = helpers.Git(home=work / "home")
    (work / "home").mkdir()
    clone = work / "clone"
    git.run("init", "-q", str(clone))
    started = time.monotonic()
    for index in range(count):
        due = started + index / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())  # the client's pace, not a synchronisation
        git.commit(clone, "file", f"{index}\n")
        git.run("push", "-q", group.url("r0"), "main", cwd=clone)
        if (index + 1) % 50 == 0:
            print(f"   [push {index + 1}/{count}]", flush=True)
    return count / (time.monotonic() - started)


def _latencies(receiver: Receiver, count: int, group: Replicas) -> list[float]:
    delivered = waiting.until(
        f"{count} deliveries",
        lambda: (found := receiver.delivered("/bench")) and len(found) >= count and found,
        timeout=DELIVERY_DEADLINE,
        interval=0.1,
        seen=lambda: group.status("r0").get("notifications"),
    )
    bodies = [(item["at"], json.loads(item["body"])) for item in delivered]
    generations = sorted(body["generation"] for _, body in bodies)
    if generations != list(range(1, count + 1)):
        raise RuntimeError(f"deliveries for generations {generations[:5]}..., not 1..{count}")
    return sorted(at - body["acknowledgedAt"] for at, body in bodies)
