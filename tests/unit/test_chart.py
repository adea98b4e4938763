"""The GitRepository CRD and the Helm chart, checked without a cluster.

The CRD is read as data; the chart is linted and rendered by the pinned helm, and the
rendered manifests are checked for what the operator and the testbed rely on: an explicit
command, a non-root read-only container, exactly the RBAC rules the operator needs, a values
schema that refuses mistakes, and a helm test that cannot be adopted by the Deployment.
tests/e2e/test_crd.py checks the CRD's validation on a real API server.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitquorum_testbed import binaries

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "gitrepositories.gitquorum.io.yaml"
CHART = REPO / "charts" / "gitquorum"
RELEASE = "gq"
NAMESPACE = "gq-system"
FULLNAME = "gq-gitquorum"

ALL = {"get", "list", "watch", "create", "patch", "delete"}
READ = {"get", "list", "watch"}
CLUSTER_RULES: dict[tuple[str, str], set[str]] = {
    ("gitquorum.io", "gitrepositories"): {"get", "list", "watch", "patch", "update"},
    ("gitquorum.io", "gitrepositories/status"): {"get", "patch", "update"},
    ("gitquorum.io", "gitrepositories/finalizers"): {"update"},
    ("gitquorum.io", "gitrepositorybackups"): {
        "get",
        "list",
        "watch",
        "patch",
        "update",
        "create",
        "delete",
    },
    ("gitquorum.io", "gitrepositorybackups/status"): {"get", "patch", "update"},
    ("", "pods"): ALL,
    ("", "persistentvolumeclaims"): ALL,
    ("", "services"): ALL,
    ("", "secrets"): ALL,
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "nodes"): READ,
    ("policy", "poddisruptionbudgets"): ALL,
    ("networking.k8s.io", "networkpolicies"): ALL,
    ("apiextensions.k8s.io", "customresourcedefinitions"): READ,
    ("", "namespaces"): READ,
}
"""(API group, resource) -> verbs: everything the operator's ClusterRole may grant."""
SECTIONS = {"image", "serviceAccount"}
"""values.yaml keys whose own keys are settings, each documented."""
NESTED_SECTIONS = {"monitoring"}
"""values.yaml keys whose keys at every depth are settings, each documented."""


# --- the CRD -------------------------------------------------------------------------------


def load_crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return document


def the_version() -> dict[str, Any]:
    versions = load_crd()["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    version: dict[str, Any] = versions[0]
    return version


def spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = the_version()["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def fields(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field below ``schema`` with its dotted path: properties, items, map values."""
    for name, child in schema.get("properties", {}).items():
        yield f"{path}.{name}", child
        yield from fields(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from fields(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from fields(schema["additionalProperties"], f"{path}{{}}")


def test_crd_chart_copy_is_identical() -> None:
    copy = CHART / "crds" / CRD.name
    assert copy.read_bytes() == CRD.read_bytes(), (
        f"{copy.relative_to(REPO)} differs from {CRD.relative_to(REPO)}: edit the latter and "
        "run hack/sync-crds.sh"
    )


def test_crd_names_avoid_the_flux_short_name() -> None:
    spec = load_crd()["spec"]
    assert spec["group"] == "gitquorum.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "GitRepository",
        "listKind": "GitRepositoryList",
        "plural": "gitrepositories",
        "singular": "gitrepository",
        "shortNames": ["gqrepo"],
        "categories": ["gitquorum"],
    }
    assert "gitrepo" not in spec["names"]["shortNames"], "Flux's GitRepository owns gitrepo"


def test_crd_scale_subresource_points_at_replicas_and_selector() -> None:
    subresources = the_version()["subresources"]
    assert subresources["status"] == {}
    assert subresources["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_crd_printer_columns_show_replicas_leader_and_readiness() -> None:
    columns = {c["name"]: c for c in the_version()["additionalPrinterColumns"]}
    assert {name: c["jsonPath"] for name, c in columns.items()} == {
        "Replicas": ".spec.replicas",
        "Ready": ".status.readyReplicas",
        "Updated": ".status.updatedReplicas",
        "Leader": ".status.leader",
        "Status": '.status.conditions[?(@.type=="Ready")].status',
        "Term": ".status.term",
        "Age": ".metadata.creationTimestamp",
    }
    assert columns["Term"].get("priority") == 1
    assert columns["Age"]["type"] == "date"


def test_crd_every_field_has_a_description() -> None:
    schema = the_version()["schema"]["openAPIV3Schema"]
    missing = [
        path
        for part in ("spec", "status")
        for path, field in fields(schema["properties"][part], part)
        # A map's values and int-or-string quantities are described by their map.
        if not field.get("description") and not path.endswith("{}")
    ]
    assert missing == [], f"fields without a description: {missing}"


def test_crd_spec_defaults_make_an_empty_spec_valid() -> None:
    spec = spec_schema()
    assert spec["default"] == {}
    properties = spec["properties"]
    replicas = properties["replicas"]
    assert (replicas["minimum"], replicas["maximum"], replicas["default"]) == (1, 7, 3)
    assert properties["storage"]["properties"]["size"]["default"] == "1Gi"
    assert properties["reclaimPolicy"] == {
        **properties["reclaimPolicy"],
        "enum": ["Retain", "Delete"],
        "default": "Retain",
    }
    zone_spread = properties["placement"]["properties"]["zoneSpread"]
    assert zone_spread["enum"] == ["Preferred", "Required", "None"]
    assert zone_spread["default"] == "Preferred"
    assert properties["anonymousRead"]["default"] is False
    # Objects holding defaulted fields default to {} so that their fields' defaults apply.
    for name in ("storage", "placement", "auth"):
        assert properties[name]["default"] == {}, name


def test_crd_validation_rules_carry_messages() -> None:
    rules = [
        (path, rule)
        for path, field in fields(spec_schema(), "spec")
        for rule in field.get("x-kubernetes-validations", [])
    ]
    assert rules, "the spec has no CEL rules"
    assert [path for path, rule in rules if not rule.get("message")] == []
    messages = {rule["message"] for _, rule in rules}
    assert "storage.size must be a quantity such as 1Gi or 500Mi" in messages
    storage_rules = spec_schema()["properties"]["storage"]["x-kubernetes-validations"]
    assert any(
        "oldSelf" in rule["rule"] and "immutable" in rule["message"] for rule in storage_rules
    )


def test_crd_status_lists_are_maps_keyed_for_merging() -> None:
    status = the_version()["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    keys = {
        name: status["properties"][name]["x-kubernetes-list-map-keys"]
        for name in ("conditions", "members", "replicaStatuses")
    }
    assert keys == {"conditions": ["type"], "members": ["name"], "replicaStatuses": ["name"]}
    condition = status["properties"]["conditions"]["items"]["properties"]
    assert condition["status"]["enum"] == ["True", "False", "Unknown"]
    assert condition["lastTransitionTime"]["format"] == "date-time"


# --- the chart -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    try:
        directory = binaries.directory(build=False)
    except binaries.BinariesMissing as error:
        pytest.skip(f"the pinned helm is not built ({error}); make setup builds it")
    return str(directory / "helm")


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60, check=False)


def render(helm: str, *settings: str) -> list[dict[str, Any]]:
    """``helm template`` with ``--set`` for each setting: the manifests, hooks included."""
    sets = [arg for setting in settings for arg in ("--set", setting)]
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *sets)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return [m for m in yaml.safe_load_all(result.stdout) if m]


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, (
        f"expected one {kind} {name}, rendered: "
        f"{[(m['kind'], m['metadata']['name']) for m in manifests]}"
    )
    return found[0]


def operator_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])
    return verbs


def test_chart_lint_is_strictly_clean(helm: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART))
    assert result.returncode == 0, f"helm lint --strict failed:\n{result.stdout}{result.stderr}"
    problems = [
        line for line in result.stdout.splitlines() if "[WARNING]" in line or "[ERROR]" in line
    ]
    assert problems == []


def test_chart_operator_command_is_explicit(helm: str) -> None:
    command = operator_container(render(helm))["command"]
    image = "ghcr.io/gitquorum/gitquorum:0.1.0"
    assert command == [
        "gitquorum",
        "operator",
        "--lease-namespace",
        "$(POD_NAMESPACE)",
        "--lease-name",
        FULLNAME,
        "--metrics-listen",
        "0.0.0.0:8080",
        "--image",
        image,
        "--node-loss-grace",
        "20",
        "--max-concurrent-updates",
        "2",
        "--max-maintenance-per-node",
        "1",
        "--log-level",
        "INFO",
    ]


def test_chart_operator_memory_tracing_is_off_unless_asked(helm: str) -> None:
    assert "--trace-memory" not in operator_container(render(helm))["command"]
    command = operator_container(render(helm, "traceMemoryFrames=4"))["command"]
    assert command[command.index("--trace-memory") + 1] == "4"


def test_chart_watch_namespaces_become_namespace_flags(helm: str) -> None:
    command = operator_container(
        render(helm, "watchNamespaces={team-a,team-b}", "logLevel=DEBUG", "image.tag=dev")
    )["command"]
    pairs = list(itertools.pairwise(command))
    assert [value for flag, value in pairs if flag == "--namespace"] == ["team-a", "team-b"]
    assert ("--log-level", "DEBUG") in pairs
    assert ("--image", "ghcr.io/gitquorum/gitquorum:dev") in pairs


def test_chart_operator_runs_non_root_with_a_read_only_root(helm: str) -> None:
    manifests = render(helm)
    pod = find(manifests, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = operator_container(manifests)
    assert container["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["HOME"]["value"] == "/tmp"
    assert pod["serviceAccountName"] == FULLNAME
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_chart_metrics_service_selects_the_operator_pods(helm: str) -> None:
    manifests = render(helm, "replicas=2")
    deployment = find(manifests, "Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 2
    service = find(manifests, "Service", f"{FULLNAME}-metrics")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "gitquorum-operator",
        "app.kubernetes.io/instance": RELEASE,
    }


def test_chart_cluster_role_grants_exactly_what_the_operator_needs(helm: str) -> None:
    manifests = render(helm)
    rules = find(manifests, "ClusterRole", FULLNAME)["rules"]
    assert not any(
        "*" in rule[key] for rule in rules for key in ("apiGroups", "resources", "verbs")
    )
    assert not any("nonResourceURLs" in rule for rule in rules)
    assert granted(rules) == CLUSTER_RULES
    binding = find(manifests, "ClusterRoleBinding", FULLNAME)
    assert binding["roleRef"]["name"] == FULLNAME
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]


def test_chart_lease_role_is_namespaced_and_names_the_lease(helm: str) -> None:
    manifests = render(helm)
    role = find(manifests, "Role", FULLNAME)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert granted(role["rules"]) == {
        ("coordination.k8s.io", "leases"): {"get", "create", "update"}
    }
    for rule in role["rules"]:
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == [FULLNAME]
    assert find(manifests, "RoleBinding", FULLNAME)["roleRef"]["name"] == FULLNAME


def test_chart_schema_rejects_an_unknown_log_level(helm: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", "logLevel=LOUD")
    assert result.returncode != 0
    assert "logLevel" in result.stderr and "'DEBUG', 'INFO', 'WARNING', 'ERROR'" in result.stderr, (
        result.stderr
    )


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("replicas=0", "/replicas"),
        ("nodeLossGraceSeconds=0", "/nodeLossGraceSeconds"),
        ("replica=2", "replica"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ],
)
def test_chart_schema_rejects_bad_values(helm: str, setting: str, named: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert named in result.stderr, result.stderr


def test_chart_values_are_all_documented_and_in_the_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) == set(schema["properties"])
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    section = ""
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z]\w*):", line)
        if not match:
            continue
        indent, key = match.groups()
        if not indent:
            section = key
        # Top-level keys, the keys of the image and serviceAccount sections and every key of
        # monitoring; other deeper keys (resources.requests.cpu) are parts of a documented
        # default.
        documented = number > 0 and lines[number - 1].lstrip().startswith("#")
        setting = (
            not indent or (indent == "  " and section in SECTIONS) or section in NESTED_SECTIONS
        )
        if not documented and setting:
            undocumented.append(f"{section}.{key}" if indent else key)
    assert undocumented == [], f"values without a comment above them: {undocumented}"


def test_chart_test_hook_checks_the_metrics_service_with_least_privilege(helm: str) -> None:
    manifests = render(helm)
    test = f"{FULLNAME}-test"
    pod = find(manifests, "Pod", test)
    annotations = pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    weight = int(annotations["helm.sh/hook-weight"])
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        hook = find(manifests, kind, test)["metadata"]["annotations"]
        assert hook["helm.sh/hook"] == "test", kind
        assert int(hook["helm.sh/hook-weight"]) < weight, f"{kind} must exist before the Pod"
    role = find(manifests, "Role", test)
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["services"],
            "resourceNames": [f"{FULLNAME}-metrics"],
            "verbs": ["get"],
        }
    ]

    spec = pod["spec"]
    assert spec["serviceAccountName"] == test
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 65532
    [container] = spec["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    command = container["command"]
    assert command[:2] == ["python3", "-c"]
    script = command[2]
    compile(script, "test-operator.yaml", "exec")
    assert "/healthz" in script and "/metrics" in script
    assert "$(" not in script, "Kubernetes would expand $(...) in a command"

    # The operator's ReplicaSet would adopt a Pod its selector matches.
    selector = find(manifests, "Deployment", FULLNAME)["spec"]["selector"]["matchLabels"]
    labels = pod["metadata"]["labels"]
    assert any(labels.get(key) != value for key, value in selector.items())
