"""The operator's API calls share their connections: an answer it does not decode is still read,
so its connection goes back to the pool (a local HTTP/1.1 server counts the connections). What
they send is what was built: manifests as they are, models in the API's JSON form."""

import datetime
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import urllib3
from kubernetes import client

from gitquorum.kube import api, manifests
from gitquorum.kube.spec import RepositorySpec


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    connections = 0

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.bodies: list[object] = []

    def get_request(self):  # type: ignore[no-untyped-def]  # socketserver's own signature
        self.connections += 1
        return super().get_request()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server
    disable_nagle_algorithm = True  # headers and body go in two writes

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(length)
        if sent:
            self.server.bodies.append(json.loads(sent))  # type: ignore[attr-defined]
        body = json.dumps({"kind": "Status", "status": "Success"}).encode()
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PATCH = do_DELETE = do_GET = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    listening = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=listening.serve_forever, daemon=True)
    thread.start()
    yield listening
    listening.shutdown()
    listening.server_close()


def _api(server: Server) -> api.Api:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    return api.Api(api.Client(configuration))


OWNER = {"metadata": {"name": "app", "namespace": "team", "uid": "u-1"}}


def test_api_calls_without_decoding_reuse_one_connection(server: Server) -> None:
    kube = _api(server)

    for number in range(3):
        assert kube.create("team", manifests.secret(OWNER, f"s{number}", {"k": "v"}))
        kube.label_pod("team", f"p{number}", "gitquorum.io/serving", "true")
        kube.delete_claim("team", f"c{number}")
        kube.patch_budget("team", "app", 2)
        assert kube.read_pod("team", f"p{number}") == {"kind": "Status", "status": "Success"}

    assert server.connections == 1


def test_api_call_without_an_answer_ends_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    monkeypatch.setattr(api, "REQUEST_TIMEOUT", (1.0, 0.5))
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{silent.getsockname()[1]}"
    kube = api.Api(api.Client(configuration))
    started = time.monotonic()

    with pytest.raises(urllib3.exceptions.MaxRetryError, match="Read timed out"):
        kube.read_secret("team", "anything")

    assert time.monotonic() - started < 5
    silent.close()


def test_api_manifest_is_sent_as_built_without_the_clients_copy(server: Server) -> None:
    kube = _api(server)
    pod = manifests.replica_pod(OWNER, "app-0", RepositorySpec(), image="img:1")

    assert kube.create("team", pod)

    assert server.bodies == [pod]
    assert kube.core.api_client.sanitize_for_serialization(pod) is pod


def test_api_model_with_times_is_sent_in_the_apis_json_form(server: Server) -> None:
    coordination = client.CoordinationV1Api(_api(server).core.api_client)
    renewed = datetime.datetime(2026, 11, 30, 4, 5, 6, 789000, tzinfo=datetime.UTC)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="gitquorum"),
        spec=client.V1LeaseSpec(holder_identity="me", renew_time=renewed),
    )

    coordination.create_namespaced_lease("team", lease, _preload_content=False)

    assert server.bodies == [
        {
            "metadata": {"name": "gitquorum"},
            "spec": {"holderIdentity": "me", "renewTime": "2026-11-30T04:05:06.789000+00:00"},
        }
    ]


@pytest.mark.parametrize(
    "value",
    [{"a": [1, 2.5, "x", None, True, {"b": []}]}, [], "text", 3],
)
def test_api_json_data_is_recognised(value: object) -> None:
    assert api.is_json_data(value)


@pytest.mark.parametrize(
    "value",
    [{"at": datetime.datetime.now(datetime.UTC)}, {1: "x"}, {"a": [("t",)]}, {"m": client.V1Pod()}],
)
def test_api_json_data_with_anything_else_goes_the_clients_way(value: object) -> None:
    assert not api.is_json_data(value)
