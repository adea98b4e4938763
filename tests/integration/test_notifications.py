"""Push notifications from three replicas to a webhook receiver on loopback."""

import hashlib
import hmac
import json
import pathlib
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import waiting
from tests.integration.helpers import Git
from tests.integration.replicas import Replicas
from tests.webhooks import Receiver

pytestmark = pytest.mark.integration

SECRET = "webhook-secret"
ZERO = "0" * 40


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


def _notifications_file(path: pathlib.Path, hooks: dict[str, tuple[str, str]]) -> pathlib.Path:
    document = {
        "repository": {"fullName": "team/repository", "url": "https://git.example/team/r.git"},
        "webhooks": [
            {"name": name, "url": url, "format": format, "secret": SECRET}
            for name, (url, format) in hooks.items()
        ],
    }
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def make_replicas(tmp_path: pathlib.Path, auth_file: pathlib.Path) -> Iterator[Any]:
    started: list[Replicas] = []

    def make(hooks: dict[str, tuple[str, str]]) -> Replicas:
        path = _notifications_file(tmp_path / "notifications.json", hooks)
        group = Replicas(
            tmp_path / "replicas",
            auth_file,
            3,
            extra_args=("--notifications-file", str(path)),
        )
        started.append(group)
        group.start_all()
        return group

    try:
        yield make
    finally:
        for group in started:
            group.stop_all()


def _work(git: Git, tmp_path: pathlib.Path) -> pathlib.Path:
    work = tmp_path / "work"
    git.run("init", "-q", str(work))
    git.commit(work, "README", "hello\n")
    return work


def _verify(item: dict[str, Any], header: str) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), item["body"], hashlib.sha256).hexdigest()
    assert item["headers"][header] == expected


def _webhook_status(replicas: Replicas, replica: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = replicas.status(replica)["notifications"]["webhooks"][name]
    return status


def test_notifications_push_is_delivered_once_per_webhook_signed(
    git: Git, receiver: Receiver, make_replicas: Any, tmp_path: pathlib.Path
) -> None:
    replicas = make_replicas(
        {"flux": (receiver.url("/flux"), "generic-hmac"), "argo": (receiver.url("/argo"), "github")}
    )
    work = _work(git, tmp_path)
    git.run("tag", "v1", cwd=work)
    git.run("push", "-q", replicas.url("r1"), "main", "v1", cwd=work)
    head = git.out("rev-parse", "HEAD", cwd=work)
    waiting.until(
        "both webhooks to have generation 1",
        lambda: all(_webhook_status(replicas, "r0", n)["delivered"] == 1 for n in ("flux", "argo")),
        timeout=10,
        interval=0.05,
        seen=lambda: replicas.status("r0").get("notifications"),
    )
    [flux] = receiver.delivered("/flux")
    _verify(flux, "X-Signature")
    body = json.loads(flux["body"])
    assert body["id"] == "repository-1" and body["generation"] == 1 and not body["catchUp"]
    assert sorted((r["ref"], r["before"], r["after"]) for r in body["refs"]) == [
        ("refs/heads/main", ZERO, head),
        ("refs/tags/v1", ZERO, head),
    ]
    argo = receiver.delivered("/argo")
    assert len(argo) == 2  # one push event per ref
    for item in argo:
        _verify(item, "X-Hub-Signature-256")
        assert item["headers"]["X-GitHub-Event"] == "push"
    events = {json.loads(item["body"])["ref"]: json.loads(item["body"]) for item in argo}
    assert events["refs/heads/main"]["after"] == head
    assert events["refs/heads/main"]["repository"]["full_name"] == "team/repository"
    status = _webhook_status(replicas, "r0", "flux")
    assert status["pending"] == 0 and status["deliveries"] == 1 and status["lastSuccess"]
    # The followers learn it from the heartbeats.
    waiting.until(
        "followers to record generation 1 as notified",
        lambda: all(replicas.status(r)["notifications"]["notified"] == 1 for r in ("r1", "r2")),
        timeout=5,
        interval=0.05,
    )


def test_notifications_failing_receiver_gets_it_after_retries(
    git: Git, receiver: Receiver, make_replicas: Any, tmp_path: pathlib.Path
) -> None:
    replicas = make_replicas({"flux": (receiver.url("/flux"), "generic-hmac")})
    receiver.fail_next = 3
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    waiting.until(
        "the delivery after three failures",
        lambda: receiver.delivered("/flux"),
        timeout=15,
        interval=0.05,
        seen=lambda: replicas.status("r0").get("notifications"),
    )
    assert receiver.attempts("/flux") == 4
    [item] = receiver.delivered("/flux")
    assert json.loads(item["body"])["id"] == "repository-1"
    status = _webhook_status(replicas, "r0", "flux")
    assert status["failures"] == 3 and status["consecutiveFailures"] == 0
    assert "HTTP 500" in status["lastError"]


def test_notifications_pending_at_a_leader_change_come_from_the_new_leader(
    git: Git, receiver: Receiver, make_replicas: Any, tmp_path: pathlib.Path
) -> None:
    replicas = make_replicas({"flux": (receiver.url("/flux"), "generic-hmac")})
    receiver.failing = True
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    head = git.out("rev-parse", "HEAD", cwd=work)
    waiting.until("a first attempt", lambda: receiver.attempts("/flux"), timeout=5, interval=0.05)
    replicas.term += 1
    replicas.leader = "r1"
    for replica in replicas.ids:
        replicas.configure(replica)
    receiver.failing = False
    [item] = waiting.until(
        "the pending notification from the new leader",
        lambda: receiver.delivered("/flux"),
        timeout=15,
        interval=0.05,
        seen=lambda: replicas.status("r1").get("notifications"),
    )
    body = json.loads(item["body"])
    # r1 never knew the push's updates: it tells the current refs, as a catch-up.
    assert body["id"] == "repository-1" and body["catchUp"] is True and body["since"] == 0
    assert body["refs"] == [{"ref": "refs/heads/main", "before": None, "after": head}]
    _verify(item, "X-Signature")
    waiting.until(
        "r0 to learn generation 1 was notified",
        lambda: replicas.status("r0")["notifications"]["notified"] == 1,
        timeout=5,
        interval=0.05,
    )


def test_notifications_pending_at_a_restart_are_sent_after_it(
    git: Git, receiver: Receiver, make_replicas: Any, tmp_path: pathlib.Path
) -> None:
    replicas = make_replicas({"flux": (receiver.url("/flux"), "generic-hmac")})
    receiver.failing = True
    work = _work(git, tmp_path)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    waiting.until("a first attempt", lambda: receiver.attempts("/flux"), timeout=5, interval=0.05)
    replicas.kill("r0")  # what it held in memory is gone
    receiver.failing = False
    replicas.start("r0")
    replicas.configure("r0")
    [item] = waiting.until(
        "the pending notification after the restart",
        lambda: receiver.delivered("/flux"),
        timeout=15,
        interval=0.05,
        seen=lambda: replicas.status("r0").get("notifications"),
    )
    body = json.loads(item["body"])
    assert body["id"] == "repository-1" and body["catchUp"] is True


def test_notifications_hanging_receiver_does_not_slow_pushes(
    git: Git, make_replicas: Any, tmp_path: pathlib.Path
) -> None:
    # Accepts connections and never answers: every attempt runs into the timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        replicas = make_replicas({"flux": (url, "generic-hmac")})
        work = _work(git, tmp_path)
        durations = []
        for index in range(5):
            git.commit(work, "file", f"{index}\n")
            started = time.monotonic()
            git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
            durations.append(time.monotonic() - started)
        # Far below the webhook timeout (5 s): no push waits for a delivery.
        assert max(durations) < 4.0, durations
        status = _webhook_status(replicas, "r0", "flux")
        assert status["delivered"] == 0 and status["pending"] == 5


def test_notifications_latency_of_fifty_pushes(
    git: Git, receiver: Receiver, make_replicas: Any, tmp_path: pathlib.Path
) -> None:
    replicas = make_replicas({"flux": (receiver.url("/flux"), "generic-hmac")})
    work = _work(git, tmp_path)
    started = time.monotonic()
    for index in range(50):
        git.commit(work, "file", f"{index}\n")
        git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    pushing = time.monotonic() - started
    delivered = waiting.until(
        "50 deliveries",
        lambda: (found := receiver.delivered("/flux")) and len(found) >= 50 and found,
        timeout=20,
        interval=0.05,
        seen=lambda: replicas.status("r0").get("notifications"),
    )
    bodies = [(item["at"], json.loads(item["body"])) for item in delivered]
    latencies = sorted(at - body["acknowledgedAt"] for at, body in bodies)
    assert [body["generation"] for _, body in bodies] == list(range(1, 51))
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    print(
        f"\nwebhook latency after acknowledgement, {len(latencies)} pushes "
        f"({len(latencies) / pushing:.1f} pushes/s): p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
