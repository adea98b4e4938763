"""What an idle repository costs: API requests and operator CPU while nothing happens.

On the testbed with the chart installed: the API server's request rate is measured over a
window with no GitRepository (the reference: nodes, controllers and the operator's own
Lease), then ``--idle-repositories`` 3-replica GitRepositories are created and brought to
Ready, left alone to settle, and measured over a window of the same length. The difference,
per repository, is what the operator costs the API server for a repository where nothing
happens (target 0.05 requests a second); the operator's CPU over the window, per repository,
against 0.5% of a core. The requests are counted by the API server itself. The operator's are
those its API Priority and Fairness classifies under the ``service-accounts`` flow schema
(``apiserver_flowcontrol_dispatched_requests_total``): the operator is the only client here
with a service account outside kube-system (the testbed's node agents use the admin
credentials, ``exempt``). All requests by verb and resource (``apiserver_request_total``,
watches excluded) are printed too, to show where they go, the node agents' included.
"""

import argparse
import collections
import time

from bench import kube, operator

REQUESTS_TARGET = 0.05
"""API requests per second per idle repository."""
CPU_TARGET = 0.005
"""Cores of operator CPU per idle repository."""
SETTLE_SECONDS = 60.0
"""After the last repository is Ready: its first resync and the status writes of its start."""
SHOWN = 8
OPERATOR_FLOW = "service-accounts"
Counts = dict[tuple[str, str], float]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operator idle")
    group.add_argument(
        "--idle-repositories",
        type=int,
        default=10,
        help="idle 3-replica GitRepositories (default: %(default)s)",
    )
    group.add_argument(
        "--idle-window",
        type=float,
        default=180.0,
        help="seconds of each measurement window (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    _, api = operator.installed()
    window = args.idle_window
    print(f"   reference: {window:.0f} s with no GitRepository", flush=True)
    reference, reference_flows, _ = _window(api, window)
    count = args.idle_repositories
    with api.namespace("idle") as namespace:
        for index in range(count):
            seconds = api.create_ready(namespace, f"idle-{index}")
            print(f"     idle-{index} Ready in {seconds:.1f} s", flush=True)
        print(f"   settling {SETTLE_SECONDS:.0f} s, then {window:.0f} s idle", flush=True)
        time.sleep(SETTLE_SECONDS)  # a settling time, not a synchronisation: nothing to await
        idle, idle_flows, cpu = _window(api, window)
    added = {key: value - reference.get(key, 0.0) for key, value in idle.items()}
    flows = {key: value - reference_flows.get(key, 0.0) for key, value in idle_flows.items()}
    per_repository = flows.get(OPERATOR_FLOW, 0.0) / window / count
    everything = sum(added.values()) / window / count
    cpu_per_repository = cpu / window / count
    print("   requests added by the idle repositories, by flow schema (per minute, all):")
    for flow, requests in sorted(flows.items(), key=lambda kv: -kv[1]):
        print(f"     {flow:36} {requests * 60 / window:8.1f}", flush=True)
    print(f"   API requests that grew most with {count} idle repositories (per minute, all):")
    for (verb, resource), requests in sorted(added.items(), key=lambda kv: -kv[1])[:SHOWN]:
        print(f"     {verb:8} {resource:28} {requests * 60 / window:8.1f}", flush=True)
    print(
        f"   summary: the operator made {per_repository:.3f} API requests/s per idle "
        f"repository (target <= {REQUESTS_TARGET}; {everything:.3f}/s from every client); "
        f"operator CPU {cpu_per_repository * 100:.2f}% of a core per repository (target "
        f"<= {CPU_TARGET * 100:.1f}%)",
        flush=True,
    )
    return {
        "idle_requests": per_repository / REQUESTS_TARGET,
        "idle_cpu": cpu_per_repository / CPU_TARGET,
    }


def _window(api: kube.Kube, seconds: float) -> tuple[Counts, dict[str, float], float]:
    """Requests by (verb, resource) and by flow schema during ``seconds``, and the
    operator's CPU seconds."""
    text, cpu_before = _api_metrics(api), _operator_cpu(api)
    requests_before, flows_before = _requests(text), _flows(text)
    time.sleep(seconds)  # the measurement window itself
    text, cpu_after = _api_metrics(api), _operator_cpu(api)
    requests_after, flows_after = _requests(text), _flows(text)
    counts = {key: value - requests_before.get(key, 0.0) for key, value in requests_after.items()}
    flows = {key: value - flows_before.get(key, 0.0) for key, value in flows_after.items()}
    return counts, flows, cpu_after - cpu_before


def _api_metrics(api: kube.Kube) -> str:
    host = api.api_client.configuration.host
    response = api.api_client.call_api("GET", f"{host}/metrics")
    response.read()
    return str(response.data.decode())


def _flows(text: str) -> dict[str, float]:
    """Requests dispatched by API Priority and Fairness, by flow schema."""
    totals: dict[str, float] = collections.defaultdict(float)
    prefix = "apiserver_flowcontrol_dispatched_requests_total{"
    for line in text.splitlines():
        if line.startswith(prefix):
            labels_text, _, value = line[len(prefix) :].rpartition("} ")
            labels = dict(part.split("=", 1) for part in labels_text.split(",") if "=" in part)
            totals[labels.get("flow_schema", '""').strip('"')] += float(value)
    return totals


def _requests(text: str) -> Counts:
    """``apiserver_request_total`` summed by verb and resource, watches left out."""
    totals: Counts = collections.defaultdict(float)
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        labels = dict(part.split("=", 1) for part in labels_text.split(",") if "=" in part)
        verb = labels.get("verb", '""').strip('"')
        if verb in ("WATCH", "CONNECT"):
            continue
        resource = labels.get("resource", '""').strip('"')
        subresource = labels.get("subresource", '""').strip('"')
        name = f"{resource}/{subresource}" if subresource else resource
        totals[(verb, name)] += float(value)
    return totals


def _operator_cpu(api: kube.Kube) -> float:
    return api.operator_metrics()["process_cpu_seconds_total"]
