"""Push notifications: the file, the signatures, the back-off, what a webhook is owed."""

import hashlib
import hmac
import json
import pathlib
from typing import Any

import pytest

from gitquorum import errors
from gitquorum.replication import messages, notifying, webhooks

pytestmark = pytest.mark.unit

A = "a" * 40
B = "b" * 40


def _file(**webhook: Any) -> bytes:
    entry = {"name": "flux", "url": "http://127.0.0.1:9/hook", "format": "generic-hmac"}
    entry["secret"] = "s3cret"
    entry.update(webhook)
    return json.dumps({"webhooks": [{k: v for k, v in entry.items() if v is not None}]}).encode()


def test_parse_reads_webhooks_and_repository() -> None:
    data = json.dumps(
        {
            "repository": {"fullName": "team/app", "url": "https://git.example/team/app.git"},
            "webhooks": [
                {"name": "flux", "url": "http://r/hook", "format": "generic-hmac", "secret": "x"},
                {"name": "argo", "url": "https://a/api/webhook", "format": "github", "secret": "y"},
            ],
        }
    ).encode()
    settings = notifying.parse(data)
    assert [w.name for w in settings.webhooks] == ["flux", "argo"]
    assert settings.webhooks[1].format == webhooks.GITHUB
    assert settings.full_name == "team/app"
    assert settings.url == "https://git.example/team/app.git"
    assert "y" not in repr(settings.webhooks[1])


def test_parse_of_an_empty_file_is_no_webhooks() -> None:
    assert notifying.parse(b"") == notifying.Settings()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"x" * (notifying.MAX_FILE_BYTES + 1), "above"),
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"hooks": []}', "unknown field"),
        (b'{"webhooks": {}}', "must be a list"),
        (json.dumps({"webhooks": [1]}).encode(), "must be an object"),
    ],
)
def test_rejects_malformed_document(data: bytes, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        notifying.parse(data)


def test_rejects_too_many_webhooks() -> None:
    one = json.loads(_file())["webhooks"][0]
    many = [dict(one, name=f"w{i}") for i in range(notifying.MAX_WEBHOOKS + 1)]
    with pytest.raises(errors.ConfigError, match="at most"):
        notifying.parse(json.dumps({"webhooks": many}).encode())


def test_rejects_duplicate_names() -> None:
    one = json.loads(_file())["webhooks"][0]
    with pytest.raises(errors.ConfigError, match="more than once"):
        notifying.parse(json.dumps({"webhooks": [one, one]}).encode())


@pytest.mark.parametrize("name", [None, "", "Flux", "flux_1", "-x", "x" * 64, 7])
def test_rejects_bad_name(name: object) -> None:
    with pytest.raises(errors.ConfigError, match="name"):
        notifying.parse(_file(name=name) if name is not None else _file(name=None))


@pytest.mark.parametrize(
    "url", [None, "", "ftp://h/x", "file:///etc/passwd", "http://", "http://h:x/", 5, "h/x"]
)
def test_rejects_bad_url(url: object) -> None:
    with pytest.raises(errors.ConfigError, match="url"):
        notifying.parse(_file(url=url))


def test_rejects_too_long_url() -> None:
    with pytest.raises(errors.ConfigError, match="url"):
        notifying.parse(_file(url="http://h/" + "x" * notifying.MAX_URL))


@pytest.mark.parametrize("format", [None, "gitlab", "", 1])
def test_rejects_bad_format(format: object) -> None:
    with pytest.raises(errors.ConfigError, match="format"):
        notifying.parse(_file(format=format))


@pytest.mark.parametrize("secret", [None, "", 1, "x" * (notifying.MAX_SECRET + 1)])
def test_rejects_bad_secret(secret: object) -> None:
    with pytest.raises(errors.ConfigError, match="secret"):
        notifying.parse(_file(secret=secret))


def test_rejects_unknown_webhook_field() -> None:
    with pytest.raises(errors.ConfigError, match="unknown field"):
        notifying.parse(_file(events=["push"]))


@pytest.mark.parametrize(
    "repository",
    [[], {"name": "x"}, {"fullName": 3}, {"url": "ssh://h/x"}, {"fullName": "x" * 300}],
)
def test_rejects_bad_repository(repository: object) -> None:
    data = json.dumps({"repository": repository, "webhooks": []}).encode()
    with pytest.raises(errors.ConfigError, match="repository"):
        notifying.parse(data)


def test_file_keeps_the_last_good_version(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notifications.json"
    watched = notifying.NotificationsFile(path)
    assert watched.current().webhooks == ()
    path.write_bytes(_file())
    assert [w.name for w in watched.current().webhooks] == ["flux"]
    path.write_bytes(b"{broken")
    assert [w.name for w in watched.current().webhooks] == ["flux"]
    path.write_bytes(_file(name="argo"))
    assert [w.name for w in watched.current().webhooks] == ["argo"]


def test_signature_matches_githubs_documented_example() -> None:
    # The example of GitHub's "Validating webhook deliveries".
    assert webhooks.signature("It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_signature_matches_the_rfc_style_vector() -> None:
    assert webhooks.signature("key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def _event(**changes: Any) -> webhooks.Event:
    values: dict[str, Any] = {
        "repository": "app",
        "generation": 7,
        "updates": (
            webhooks.Update("refs/heads/main", A, B),
            webhooks.Update("refs/tags/v1", webhooks.ZERO_ID, A),
        ),
        "url": "https://git.example/team/app.git",
        "full_name": "team/app",
    }
    values.update(changes)
    return webhooks.Event(**values)


def test_generic_hmac_is_one_signed_request_with_every_update() -> None:
    [request] = webhooks.requests(_event(), format=webhooks.GENERIC_HMAC, secret="k")
    expected = hmac.new(b"k", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Signature"] == f"sha256={expected}"
    body = json.loads(request.body)
    assert body["id"] == "app-7" and body["generation"] == 7 and body["catchUp"] is False
    assert body["refs"] == [
        {"ref": "refs/heads/main", "before": A, "after": B},
        {"ref": "refs/tags/v1", "before": webhooks.ZERO_ID, "after": A},
    ]


def test_github_is_one_push_event_per_ref() -> None:
    sent = webhooks.requests(_event(), format=webhooks.GITHUB, secret="k")
    assert len(sent) == 2
    main = json.loads(sent[0].body)
    assert main["ref"] == "refs/heads/main" and main["before"] == A and main["after"] == B
    assert main["commits"] == []
    assert main["repository"]["full_name"] == "team/app"
    assert main["repository"]["clone_url"] == "https://git.example/team/app.git"
    assert main["repository"]["html_url"] == "https://git.example/team/app"
    assert json.loads(sent[1].body)["created"] is True
    for request in sent:
        assert request.headers["X-GitHub-Event"] == "push"
        digest = hmac.new(b"k", request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Hub-Signature-256"] == f"sha256={digest}"
    assert sent[0].headers["X-GitHub-Delivery"] != sent[1].headers["X-GitHub-Delivery"]


def test_ids_are_stable_across_retries() -> None:
    first = webhooks.requests(_event(), format=webhooks.GITHUB, secret="k")
    again = webhooks.requests(_event(), format=webhooks.GITHUB, secret="k")
    assert first == again


def test_catch_up_names_before_as_unknown() -> None:
    updates = notifying.catch_up_updates(
        {"refs/heads/main": A, "refs/tags/v1": B, "refs/notes/x": A, "refs/pull/1": B}
    )
    assert [u.ref for u in updates] == ["refs/heads/main", "refs/tags/v1"]
    event = _event(updates=updates, catch_up=True, since=3)
    [generic] = webhooks.requests(event, format=webhooks.GENERIC_HMAC, secret="k")
    body = json.loads(generic.body)
    assert body["catchUp"] is True and body["since"] == 3
    assert body["refs"][0]["before"] is None
    github = webhooks.requests(event, format=webhooks.GITHUB, secret="k")
    assert json.loads(github[0].body)["before"] == webhooks.ZERO_ID


def test_catch_up_is_bounded() -> None:
    refs = {f"refs/tags/t{i:05}": A for i in range(notifying.MAX_CATCH_UP_REFS + 5)}
    assert len(notifying.catch_up_updates(refs)) == notifying.MAX_CATCH_UP_REFS


def test_retry_delay_doubles_up_to_a_minute() -> None:
    delays = [notifying.retry_delay(n) for n in range(10)]
    assert delays[:5] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert delays[8] == 60.0 and notifying.retry_delay(1000) == 60.0


def test_next_item_nothing_when_delivered() -> None:
    assert notifying.next_item(delivered=5, acknowledged=5, known={5}) is None


def test_next_item_sends_known_pushes_in_order() -> None:
    item = notifying.next_item(delivered=4, acknowledged=6, known={5, 6})
    assert item == notifying.Item(5)


def test_next_item_catches_up_on_unknown_generations() -> None:
    # A new leader knows none of the pushes its predecessor acknowledged.
    item = notifying.next_item(delivered=2, acknowledged=9, known={8, 9})
    assert item == notifying.Item(9, catch_up=True, since=2)


def test_next_item_known_then_unknown() -> None:
    assert notifying.next_item(delivered=2, acknowledged=9, known={3}) == notifying.Item(3)
    later = notifying.next_item(delivered=3, acknowledged=9, known={3})
    assert later == notifying.Item(9, catch_up=True, since=3)


def test_record_round_trips(tmp_path: pathlib.Path) -> None:
    records = notifying.RecordFile(tmp_path / "n.json")
    assert records.load() is None
    record = notifying.Record(notified=4, webhooks={"flux": 6})
    records.save(record)
    assert records.load() == record


def test_heartbeat_carries_notified_optionally() -> None:
    base = {
        "term": 2,
        "leader": "r0",
        "generation": 3,
        "transaction": "a" * 32,
        "checksum": "0" * 64,
        "settled": True,
    }
    assert messages.Heartbeat.parse(base).notified is None
    assert messages.Heartbeat.parse(base | {"notified": 3}).notified == 3


@pytest.mark.parametrize("value", [-1, "3", 1.5, True])
def test_rejects_heartbeat_with_malformed_notified(value: object) -> None:
    base = {
        "term": 2,
        "leader": "r0",
        "generation": 3,
        "transaction": "a" * 32,
        "checksum": "0" * 64,
        "settled": True,
        "notified": value,
    }
    with pytest.raises(errors.MalformedMessage, match="notified"):
        messages.Heartbeat.parse(base)
