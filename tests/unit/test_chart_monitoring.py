"""The chart's monitoring: PodMonitor, ServiceMonitor and the Grafana dashboard.

Rendered by the pinned helm like the rest of the chart (test_chart.py). The dashboard is
checked against the metrics the processes really export: their names and labels are read
from the definitions in the metrics modules (``Counter(...)``, ``Histogram(...)``,
``Gauge(...)``, ``StateSet(...)``), never from a copy kept here.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gitquorum.kube import manifests, names
from gitquorum.kube.spec import RepositorySpec
from gitquorum_testbed import binaries
from tests.unit.test_chart import CHART, FULLNAME, NAMESPACE, REPO, find, render, run_helm

pytestmark = pytest.mark.unit

PACKAGE = REPO / "operator" / "gitquorum"
REPLICA_METRICS = (PACKAGE / "server" / "metrics.py", PACKAGE / "replication" / "metrics.py")
"""What a replica process exports: the git server's metrics and its own."""
OPERATOR_METRICS = (PACKAGE / "kube" / "metrics.py", PACKAGE / "server" / "metrics.py")
"""What the operator exports: its own metrics and the process figures."""
DASHBOARD = CHART / "dashboards" / "gitquorum.json"
MONITORING = ("monitoring.coreos.com/v1",)
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance", "service"}
"""Labels the Prometheus Operator gives every target of a PodMonitor or ServiceMonitor."""
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "or", "and"}
PROMQL_WORDS |= {"unless", "bool", "offset"}
ALL_ON = (
    "monitoring.podMonitor.enabled=true",
    "monitoring.serviceMonitor.enabled=true",
    "monitoring.grafanaDashboard.enabled=true",
)


@pytest.fixture(scope="module")
def helm() -> str:
    try:
        directory = binaries.directory(build=False)
    except binaries.BinariesMissing as error:
        pytest.skip(f"the pinned helm is not built ({error}); make setup builds it")
    return str(directory / "helm")


# --- what the processes export ----------------------------------------------------------------


def _constants(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Module-level tuples of strings (``LABELS = ("endpoint", ...)``)."""
    found: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
            values = tuple(ast.literal_eval(node.value))
            found.update(
                {target.id: values for target in node.targets if isinstance(target, ast.Name)}
            )
    return found


def _labels(call: ast.Call, kind: str, constants: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    if kind == "StateSet":
        return (ast.literal_eval(keywords["label"]),)
    given = keywords.get("labels")
    if given is None:  # the classes' defaults: Counter and Histogram take LABELS
        return constants["LABELS"] if kind in ("Counter", "Histogram", "GaugeFamily") else ()
    if isinstance(given, ast.Name):
        return constants[given.id]
    return tuple(ast.literal_eval(given))


def exported(modules: tuple[Path, ...]) -> dict[str, set[str]]:
    """Every series name the modules define, with its labels (histograms as Prometheus
    writes them: ``_bucket`` with ``le``, ``_sum``, ``_count``)."""
    constants = _constants(ast.parse((PACKAGE / "server" / "metrics.py").read_text()))
    series: dict[str, set[str]] = {}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            kind = getattr(node.func, "attr", getattr(node.func, "id", ""))
            first = node.args[0]
            if kind not in ("Counter", "Histogram", "Gauge", "GaugeFamily", "StateSet"):
                continue
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            labels = set(_labels(node, kind, constants))
            if kind == "Histogram":
                series[f"{first.value}_bucket"] = labels | {"le"}
                series[f"{first.value}_sum"] = labels
                series[f"{first.value}_count"] = labels
            else:
                series[first.value] = labels
    return series


def test_metric_definitions_are_found_in_every_module() -> None:
    replica, operator = exported(REPLICA_METRICS), exported(OPERATOR_METRICS)
    assert {"endpoint", "service", "outcome"} <= replica["gitquorum_http_requests_total"]
    assert "le" in replica["gitquorum_http_request_duration_seconds_bucket"]
    assert replica["gitquorum_replica_state"] == {"state"}
    assert any(name.startswith("gitquorum_replica_") for name in replica)
    assert operator["gitquorum_operator_decisions_total"] == {"decision"}
    assert (
        "process_resident_memory_bytes" in replica and "process_resident_memory_bytes" in operator
    )


# --- what the dashboard queries ---------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def queried(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and label names a PromQL expression uses."""
    labels = {
        name
        for matchers in re.findall(r"\{([^}]*)\}", expr)
        for name in re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers)
    }
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
    labels |= {name.strip() for group in re.findall(grouping, expr) for name in group.split(",")}
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(grouping, "", re.sub(r"\[[^\]]*\]", "", re.sub(r"\{[^}]*\}", "", bare)))
    metrics = {
        match.group(1)
        for match in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\()?", bare)
        if not match.group(2) and match.group(1) not in PROMQL_WORDS
    }
    return metrics, labels - {""}


def expressions() -> list[tuple[str, str]]:
    """(panel title, expression) for every query of the dashboard, variables included."""
    found = [(panel["title"], target["expr"]) for panel in panels() for target in panel["targets"]]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            # label_values(metric{matchers}, label): a Grafana function around a selector.
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query["query"])
            assert match, query
            found.append((f"variable {variable['name']}", f"sum by ({match[2]}) ({match[1]})"))
    return found


def test_dashboard_queries_only_metrics_the_processes_export() -> None:
    series = exported(REPLICA_METRICS) | exported(OPERATOR_METRICS)
    for title, expr in expressions():
        metrics, labels = queried(expr)
        assert metrics, f"{title}: {expr} queries no metric"
        unknown = metrics - set(series)
        assert not unknown, f"{title}: {sorted(unknown)} is exported by no process"
        known = set().union(*(series[name] for name in metrics)) | TARGET_LABELS
        known |= pod_monitor_labels()
        assert labels <= known, f"{title}: labels {sorted(labels - known)} exist on no series"


def test_dashboard_shows_every_replica_and_operator_metric() -> None:
    used = set().union(*(queried(expr)[0] for _, expr in expressions()))
    defined = {
        name
        for name in exported(REPLICA_METRICS[1:]) | exported(OPERATOR_METRICS[:1])
        if not name.startswith("process_")
    }
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in defined}
    shown = {family for family in families if any(name.startswith(family) for name in used)}
    assert shown == families, f"not on the dashboard: {sorted(families - shown)}"


def test_dashboard_covers_the_topics_and_uses_its_variables() -> None:
    titles = {panel["title"] for panel in panels()}
    for topic in ("Leader", "Term", "Replication lag", "Push latency", "Clone and fetch latency"):
        assert topic in titles
    assert {"Errors", "Copies and rebuilds", "Reconcile pass duration", "Passes"} <= titles
    variables = [variable["name"] for variable in dashboard()["templating"]["list"]]
    assert variables == ["datasource", "namespace", "repository"]
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["description"], panel["title"]
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


# --- the rendered objects ---------------------------------------------------------------------


def pod_monitor_labels() -> set[str]:
    text = (CHART / "templates" / "podmonitor.yaml").read_text()
    return set(re.findall(r"targetLabel: (\w+)", text))


def check_object(manifest: dict[str, Any]) -> None:
    """What the API server would check of any object, and the Prometheus Operator's kinds."""
    metadata = manifest["metadata"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata["name"])
    assert len(metadata["name"]) <= 63
    for key, value in metadata["labels"].items():
        assert re.fullmatch(r"([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", key), key
        assert isinstance(value, str) and len(value) <= 63, (key, value)
    if manifest["apiVersion"] in MONITORING:
        assert set(manifest["spec"]["selector"]) == {"matchLabels"}
        assert set(manifest["spec"]["namespaceSelector"]) <= {"any", "matchNames"}


def monitoring_objects(helm: str, *settings: str) -> list[dict[str, Any]]:
    rendered = render(helm, *settings)
    return [
        m
        for m in rendered
        if m["apiVersion"] in MONITORING or m["metadata"]["name"].endswith("-dashboard")
    ]


def test_chart_monitoring_is_off_by_default(helm: str) -> None:
    assert monitoring_objects(helm) == []


def test_chart_pod_monitor_scrapes_every_replica_git_port(helm: str) -> None:
    manifests_ = render(helm, *ALL_ON, "monitoring.podMonitor.labels.release=prom")
    monitor = find(manifests_, "PodMonitor", f"{FULLNAME}-replicas")
    check_object(monitor)
    assert monitor["metadata"]["labels"]["release"] == "prom"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"any": True}
    pod = manifests.replica_pod(
        {"metadata": {"name": "repo", "namespace": "ns", "uid": "u"}},
        "repo-1",
        RepositorySpec.from_body({}),
        image="img",
    )
    pod_labels = pod["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    [endpoint] = spec["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports[endpoint["port"]] == names.GIT_PORT, "the git server serves /metrics"
    assert (endpoint["path"], endpoint["interval"], endpoint["honorLabels"]) == (
        "/metrics",
        "30s",
        True,
    )
    sources = {
        r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"] if "targetLabel" in r
    }
    for target, label in (("repository", names.REPOSITORY_LABEL), ("replica", names.REPLICA_LABEL)):
        assert label in pod_labels
        meta = "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", label)
        assert sources[target] == [meta]


def test_chart_pod_monitor_follows_the_watched_namespaces(helm: str) -> None:
    settings = (*ALL_ON, "watchNamespaces={team-a,team-b}", "monitoring.podMonitor.interval=")
    monitor = find(render(helm, *settings), "PodMonitor", f"{FULLNAME}-replicas")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}
    assert "interval" not in monitor["spec"]["podMetricsEndpoints"][0]


def test_chart_service_monitor_scrapes_the_operator_metrics_service(helm: str) -> None:
    rendered = render(helm, *ALL_ON, "monitoring.serviceMonitor.interval=1m")
    monitor = find(rendered, "ServiceMonitor", f"{FULLNAME}-operator")
    check_object(monitor)
    service = find(rendered, "Service", f"{FULLNAME}-metrics")
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = spec["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "1m"}
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}


def test_chart_dashboard_config_map_carries_the_sidecar_label(helm: str) -> None:
    config_map = find(render(helm, *ALL_ON), "ConfigMap", f"{FULLNAME}-dashboard")
    check_object(config_map)
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["gitquorum.json"]) == dashboard()

    custom = render(
        helm,
        *ALL_ON,
        "monitoring.grafanaDashboard.namespace=grafana",
        "monitoring.grafanaDashboard.sidecarLabel=dashboards",
        "monitoring.grafanaDashboard.sidecarLabelValue=gitquorum",
        "monitoring.grafanaDashboard.annotations.grafana_folder=Git",
    )
    config_map = find(custom, "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["namespace"] == "grafana"
    assert config_map["metadata"]["labels"]["dashboards"] == "gitquorum"
    assert "grafana_dashboard" not in config_map["metadata"]["labels"]
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Git"}


def test_chart_lint_is_strictly_clean_with_monitoring_on(helm: str) -> None:
    sets = [arg for setting in ALL_ON for arg in ("--set", setting)]
    result = run_helm(helm, "lint", "--strict", str(CHART), *sets)
    assert result.returncode == 0, f"helm lint --strict failed:\n{result.stdout}{result.stderr}"
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("monitoring.podMonitor.interval=soon", "/monitoring/podMonitor/interval"),
        ("monitoring.serviceMonitor.enabled=maybe", "/monitoring/serviceMonitor/enabled"),
        ("monitoring.grafanaDashboard.sidecarLabel=", "/monitoring/grafanaDashboard/sidecarLabel"),
        ("monitoring.grafanaDashboard.namespace=Not_A_Name", "/monitoring/grafanaDashboard"),
        ("monitoring.podMonitor.scrape=1", "scrape"),
    ],
)
def test_chart_schema_rejects_bad_monitoring_values(helm: str, setting: str, named: str) -> None:
    result = run_helm(helm, "template", "gq", str(CHART), "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert named in result.stderr, result.stderr
