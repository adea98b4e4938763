"""``kubectl gitquorum status``: the summary, the table, the JSON, and the errors people see.

No cluster: the summary and its renderings are fed a fake snapshot; the whole command runs
against a fake API server on loopback (a thread answering the four reads with canned JSON),
or against an address where nothing listens.
"""

from __future__ import annotations

import datetime
import http.server
import json
import pathlib
import socket
import threading
import tomllib
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import yaml

from gitquorum.kube import names
from gitquorum.plugin import cli, gathering, rendering, summary

pytestmark = pytest.mark.unit

NOW = datetime.datetime(2026, 11, 21, 12, 0, 0, tzinfo=datetime.UTC)
NAMESPACE = "team-a"
NAME = "minimal"
REPO = pathlib.Path(__file__).resolve().parents[2]


def ago(seconds: int) -> str:
    return (NOW - datetime.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def repository() -> dict[str, Any]:
    """A repository mid-update: minimal-2 behind on an old revision, minimal-3 lost, and
    minimal-4's pod created but not reported yet."""
    return {
        "apiVersion": f"{names.GROUP}/{names.VERSION}",
        "kind": names.KIND,
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {"replicas": 3},
        "status": {
            "leader": "minimal-1",
            "term": 4,
            "generation": 17,
            "readyReplicas": 1,
            "updatedReplicas": 1,
            "url": f"http://{NAME}.{NAMESPACE}.svc/{NAME}.git",
            "updateRevision": "new0000001",
            "currentRevision": "old0000001",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "NoQuorumInSync",
                    "message": "1 of 3 replicas in sync; 2 are needed",
                    "lastTransitionTime": ago(300),
                },
                {"type": "Available", "status": "True", "reason": "LeaderServes", "message": "ok"},
            ],
            "replicaStatuses": [
                {
                    "name": "minimal-1", "pod": "minimal-1", "node": "node-1", "role": "leader",
                    "state": "InSync", "generation": 17, "voter": True, "revision": "new0000001",
                },
                {
                    "name": "minimal-2", "pod": "minimal-2", "node": "node-2", "role": "follower",
                    "state": "Behind", "generation": 15, "voter": True, "revision": "old0000001",
                    "message": "catching up",
                },
                {
                    "name": "minimal-3", "node": "node-3", "role": "follower", "state": "Lost",
                    "generation": 9, "voter": False, "message": "node node-3 is gone",
                },
            ],
        },
    }  # fmt: skip


def pod(name: str, node: str | None, *, ready: bool, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": names.labels(NAME, name),
            "annotations": {names.REVISION: "new0000001" if name != "minimal-2" else "old0000001"},
        },
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


PODS = [
    pod("minimal-1", "node-1", ready=True),
    pod("minimal-2", "node-2", ready=False),
    pod("minimal-4", None, ready=False, phase="Pending"),
]
ZONES = {"node-1": "zone-a", "node-2": "zone-b", "node-3": None}


def event(reason: str, seconds: int, message: str, kind: str = "Normal") -> dict[str, Any]:
    return {
        "metadata": {"name": f"{NAME}.{reason}", "creationTimestamp": ago(seconds)},
        "type": kind,
        "reason": reason,
        "message": message,
        "lastTimestamp": ago(seconds),
        "count": 2 if reason == "Waiting" else 1,
    }


EVENTS = [
    event("ReplicaLost", 200, "minimal-3 lost with node node-3", "Warning"),
    event("LeaderElected", 3 * 86400, "minimal-1 leads term 4"),
    event("Waiting", 30, "waiting for minimal-2 to catch up", "Warning"),
]


class FakeReader:
    """The API server's answers, from the data above."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def repository(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.asked.append(f"repository {namespace}/{name}")
        return repository()

    def pods(self, namespace: str, selector: str) -> Sequence[Mapping[str, Any]]:
        self.asked.append(f"pods {namespace} {selector}")
        return PODS

    def zone(self, node: str) -> str | None:
        self.asked.append(f"zone {node}")
        return ZONES.get(node)

    def events(self, namespace: str, name: str) -> Sequence[Mapping[str, Any]]:
        self.asked.append(f"events {namespace}/{name}")
        return EVENTS


def status(events: int = 10) -> summary.Summary:
    snapshot = gathering.gather(FakeReader(), namespace=NAMESPACE, name=NAME)
    return summary.summarize(snapshot, events=events)


def test_gather_reads_the_repository_its_pods_their_zones_and_events() -> None:
    reader = FakeReader()
    snapshot = gathering.gather(reader, namespace=NAMESPACE, name=NAME)
    assert reader.asked == [
        f"repository {NAMESPACE}/{NAME}",
        f"pods {NAMESPACE} {names.selector(NAME)}",
        "zone node-1",
        "zone node-2",
        "zone node-3",
        f"events {NAMESPACE}/{NAME}",
    ]
    assert snapshot.zones == ZONES


def test_summary_joins_reported_replicas_and_pods() -> None:
    replicas = {replica.name: replica for replica in status().replicas}
    assert list(replicas) == ["minimal-1", "minimal-2", "minimal-3", "minimal-4"]
    leader, behind, lost, new = replicas.values()
    assert (leader.role, leader.state, leader.zone, leader.lag, leader.updated) == (
        "leader",
        "InSync",
        "zone-a",
        0,
        True,
    )
    assert (behind.lag, behind.updated, behind.pod_status) == (2, False, "Running (not ready)")
    assert (lost.lag, lost.pod, lost.pod_status, lost.voter) == (None, None, "none", False)
    assert (new.role, new.state, new.node, new.generation) == ("", "Pending", None, None)


def test_summary_keeps_the_newest_events_oldest_first() -> None:
    assert [e.reason for e in status(events=2).events] == ["ReplicaLost", "Waiting"]
    assert [e.reason for e in status().events] == ["LeaderElected", "ReplicaLost", "Waiting"]
    assert status(events=0).events == ()


def test_table_shows_the_repository_at_a_glance() -> None:
    text = rendering.as_text(status(), now=NOW)
    lines = text.splitlines()
    assert lines[:5] == [
        f"GitRepository:  {NAMESPACE}/{NAME}: Not ready (NoQuorumInSync)",
        "Leader:         minimal-1, term 4, generation 17",
        "Replicas:       3 wanted, 1 ready, 1 updated",
        "Revision:       updating old0000001 -> new0000001",
        f"URL:            http://{NAME}.{NAMESPACE}.svc/{NAME}.git",
    ]
    replicas = lines[lines.index("Replicas:") + 1 :]
    assert replicas[0].split() == [
        "NAME", "ROLE", "STATE", "VOTER", "NODE", "ZONE", "GENERATION", "LAG", "REVISION",
        "POD", "MESSAGE",
    ]  # fmt: skip
    assert replicas[1].split() == [
        "minimal-1", "leader", "InSync", "yes", "node-1", "zone-a", "17", "0", "new0000001",
        "Running",
    ]  # fmt: skip
    assert replicas[2].split()[:9] == [
        "minimal-2", "follower", "Behind", "yes", "node-2", "zone-b", "15", "2", "old0000001*",
    ]  # fmt: skip
    assert replicas[2].endswith("Running (not ready)  catching up")
    assert replicas[3].split()[:9] == [
        "minimal-3", "follower", "Lost", "no", "node-3", "-", "9", "-", "-",
    ]  # fmt: skip
    assert replicas[4].split()[:4] == ["minimal-4", "-", "Pending", "-"]
    assert "Ready      False   NoQuorumInSync  5m   1 of 3 replicas in sync; 2 are needed" in text
    assert "Available  True    LeaderServes    -    ok" in text
    events = lines[lines.index("Events (last 3):") + 1 :]
    assert [line.split()[:3] for line in events[1:4]] == [
        ["3d", "Normal", "LeaderElected"],
        ["3m", "Warning", "ReplicaLost"],
        ["30s", "Warning", "Waiting"],
    ]
    assert events[3].endswith("waiting for minimal-2 to catch up (x2)")
    assert lines[-1].startswith("* not of the updateRevision")
    assert all(line == line.rstrip() for line in lines)


def test_table_of_a_new_repository_says_what_is_missing() -> None:
    bare = gathering.Snapshot(
        {"metadata": {"name": NAME, "namespace": NAMESPACE}, "spec": {"replicas": 3}},
        pods=[],
        zones={},
        events=[],
    )
    text = rendering.as_text(summary.summarize(bare, events=10), now=NOW)
    assert "Leader:         none, term -, generation -" in text
    assert "Replicas:       3 wanted, 0 ready, - updated" in text
    assert "Conditions: none" in text and "Replicas: none" in text
    assert "Events (last 0): none" in text


def test_json_output_is_the_whole_summary() -> None:
    data = json.loads(rendering.as_json(status()))
    assert data["name"] == NAME and data["namespace"] == NAMESPACE
    assert (data["leader"], data["term"], data["generation"]) == ("minimal-1", 4, 17)
    assert data["desiredReplicas"] == 3 and data["updateRevision"] == "new0000001"
    assert data["conditions"][0]["since"] == ago(300)
    behind = data["replicas"][1]
    assert behind == {
        "name": "minimal-2",
        "role": "follower",
        "state": "Behind",
        "voter": True,
        "node": "node-2",
        "zone": "zone-b",
        "generation": 15,
        "lag": 2,
        "revision": "old0000001",
        "updated": False,
        "pod": "minimal-2",
        "podStatus": "Running (not ready)",
        "message": "catching up",
    }
    assert [e["reason"] for e in data["events"]] == ["LeaderElected", "ReplicaLost", "Waiting"]
    assert data["events"][2] == {
        "time": ago(30),
        "type": "Warning",
        "reason": "Waiting",
        "message": "waiting for minimal-2 to catch up",
        "count": 2,
    }


def test_package_installs_the_plugin_program() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-gitquorum"] == "gitquorum.plugin.cli:main"


# --- the whole command against a fake API server -----------------------------------------------


class FakeApi(http.server.ThreadingHTTPServer):
    """Answers GETs from ``routes`` (path -> status, body); records every path asked."""

    def __init__(self, routes: dict[str, tuple[int, Any]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.asked: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeApi

    def do_GET(self) -> None:
        self.server.asked.append(urllib.parse.unquote(self.path))
        path = urllib.parse.urlsplit(self.path).path
        code, body = self.server.routes.get(path, (404, not_found("the server could not find")))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def not_found(message: str) -> dict[str, Any]:
    return {"kind": "Status", "status": "Failure", "message": message, "code": 404}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi({})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def kubeconfig(path: pathlib.Path, server: str, namespace: str | None = NAMESPACE) -> str:
    context: dict[str, Any] = {"cluster": "fake", "user": "someone"}
    if namespace:
        context["namespace"] = namespace
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "someone", "user": {"token": "t"}}],
                "contexts": [{"name": "fake", "context": context}],
                "current-context": "fake",
            }
        )
    )
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["status", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


REPOSITORY_PATH = (
    f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NAMESPACE}/{names.PLURAL}/{NAME}"
)


def test_status_reads_the_cluster_of_the_kubeconfig_context(
    api: FakeApi, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.routes.update(
        {
            REPOSITORY_PATH: (200, repository()),
            f"/api/v1/namespaces/{NAMESPACE}/pods": (200, {"items": PODS}),
            f"/api/v1/namespaces/{NAMESPACE}/events": (200, {"items": EVENTS}),
            "/api/v1/nodes/node-1": (200, {"metadata": {"labels": {gathering.ZONE_LABEL: "z1"}}}),
            "/api/v1/nodes/node-2": (403, {"kind": "Status", "message": "forbidden", "code": 403}),
        }
    )
    config = kubeconfig(tmp_path / "config", api.url)
    code, out, err = run(capsys, NAME, "--kubeconfig", config, "-o", "json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert [r["zone"] for r in data["replicas"]] == ["z1", None, None, None]
    assert f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={names.selector(NAME)}" in api.asked
    assert (
        f"/api/v1/namespaces/{NAMESPACE}/events?fieldSelector=involvedObject.kind="
        f"{names.KIND},involvedObject.name={NAME}"
    ) in api.asked
    code, out, _ = run(capsys, NAME, "--kubeconfig", config)
    assert code == 0 and out.startswith(f"GitRepository:  {NAMESPACE}/{NAME}: Not ready")


def test_status_of_a_missing_repository_says_so(
    api: FakeApi, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = kubeconfig(tmp_path / "config", api.url, namespace=None)
    code, out, err = run(capsys, "absent", "--kubeconfig", config)
    assert (code, out) == (1, "")
    assert err == (
        f'kubectl gitquorum: {names.PLURAL}.{names.GROUP} "absent" in namespace "default" not '
        "found (is the name right, and the gitquorum CRD installed?)\n"
    )


def test_status_refused_by_rbac_names_what_was_refused(
    api: FakeApi, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = 'gitrepositories.gitquorum.io "minimal" is forbidden: User "someone" cannot get'
    api.routes[REPOSITORY_PATH] = (403, {"kind": "Status", "message": message, "code": 403})
    config = kubeconfig(tmp_path / "config", api.url)
    code, _, err = run(capsys, NAME, "--kubeconfig", config)
    assert code == 1
    assert err.startswith(f'kubectl gitquorum: cannot get {names.PLURAL}.{names.GROUP} "{NAME}"')
    assert err.rstrip().endswith(message)


def test_status_without_a_reachable_cluster_says_where_it_looked(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as placeholder:  # a port nothing listens on once it is closed
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    server = f"http://127.0.0.1:{port}"
    code, _, err = run(capsys, NAME, "--kubeconfig", kubeconfig(tmp_path / "config", server))
    assert code == 1
    assert err.startswith(f"kubectl gitquorum: cannot reach the cluster at {server} to get ")
    assert err.rstrip().endswith("Connection refused")
    assert "HTTPConnection(" not in err, "the address is said once"


def test_status_without_a_kubeconfig_says_how_to_give_one(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, NAME, "--kubeconfig", str(tmp_path / "absent"))
    assert (code, err) == (
        1,
        f"kubectl gitquorum: kubeconfig {tmp_path / 'absent'} does not exist\n",
    )
    empty = tmp_path / "empty"
    empty.write_text("")
    code, _, err = run(capsys, NAME, "--kubeconfig", str(empty))
    assert code == 1 and "cannot use the kubeconfig" in err


def test_status_unknown_context_is_a_clear_error(
    api: FakeApi, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = kubeconfig(tmp_path / "config", api.url)
    code, _, err = run(capsys, NAME, "--kubeconfig", config, "--context", "elsewhere")
    assert code == 1 and "elsewhere" in err
