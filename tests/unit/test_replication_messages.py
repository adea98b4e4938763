"""Replication and admin messages: parsed whole, refused whole, before any term counts.

The parsers are held to what leaders, followers and controllers send (the shapes below are
the ones ``leading``, ``following`` and the controllers build), and to a refusal, with a
readable reason, of everything else. A follower fed a malformed message must not adopt its
term: the follower is run here with a stand-in for its store, which records any term it is
told to adopt.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gitquorum import errors
from gitquorum.replication import (
    checksum,
    decisions,
    following,
    leading,
    membership,
    messages,
    state,
    transactions,
)

pytestmark = pytest.mark.unit

ID = "c" * 32
CHECKSUM = "d" * 64
ZERO = "0" * 40
A = "a" * 40

HEARTBEAT: dict[str, Any] = {
    "term": 3,
    "leader": "r0",
    "generation": 4,
    "transaction": ID,
    "checksum": CHECKSUM,
    "settled": True,
}
TRANSACTION: dict[str, Any] = {
    "id": ID,
    "term": 3,
    "generation": 5,
    "seq": 1,
    "changes": [["refs/heads/main", ZERO, A]],
    "head": None,
    "files": [["pack-" + "e" * 40 + ".pack", 10], ["pack-" + "e" * 40 + ".idx", 5]],
}
PREPARE: dict[str, Any] = {"term": 3, "leader": "r0", "transaction": TRANSACTION}
COMMIT: dict[str, Any] = {"term": 3, "transaction": ID, "generation": 5}
ABORT: dict[str, Any] = {"term": 3, "transaction": ID}
LEASE: dict[str, Any] = {
    "term": 3,
    "replica": "r1",
    "generation": 4,
    "transaction": ID,
    "checksum": CHECKSUM,
}
CONFIGURATION: dict[str, Any] = {
    "term": 2,
    "leader": "demo-1",
    "members": [
        {"id": "demo-1", "url": "http://10.0.0.1:8080", "peer_url": "http://10.0.0.1:8081"},
        {
            "id": "demo-2",
            "url": "http://127.0.0.1:1",
            "peer_url": "https://peer.example:8081/",
            "voter": False,
        },
    ],
    "stopped": ["demo-3"],
}

PARSERS = {
    "heartbeat": (messages.Heartbeat.parse, HEARTBEAT),
    "prepare": (messages.Prepare.parse, PREPARE),
    "commit": (messages.Commit.parse, COMMIT),
    "abort": (messages.Abort.parse, ABORT),
    "lease": (messages.LeaseRequest.parse, LEASE),
    "configuration": (membership.Configuration.from_json, CONFIGURATION),
}


_MISSING = object()
"""A field to leave out."""


def _with(message: dict[str, Any], **changes: object) -> dict[str, Any]:
    changed = dict(message)
    for name, value in changes.items():
        if value is _MISSING:
            changed.pop(name)
        else:
            changed[name] = value
    return changed


def _nested(depth: int) -> bytes:
    """A JSON object whose value ``v`` holds arrays nested so that the text is ``depth`` deep."""
    return b'{"v": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


# -- decoding -----------------------------------------------------------------------------------


def test_decode_accepts_an_object_up_to_the_depth_limit() -> None:
    assert messages.decode(b'{"term": 1}') == {"term": 1}
    decoded = messages.decode(_nested(messages.MAX_DEPTH))
    assert isinstance(decoded["v"], list)


def test_decode_does_not_count_brackets_inside_strings() -> None:
    text = "[" * 100 + '\\"{' * 50 + "\\\\"
    assert messages.decode(json.dumps({"reason": text}).encode()) == {"reason": text}


@pytest.mark.parametrize("depth", [messages.MAX_DEPTH + 1, 200, 100_000])
def test_rejects_json_nested_too_deeply(depth: int) -> None:
    with pytest.raises(errors.MalformedMessage, match="nested deeper"):
        messages.decode(_nested(depth))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000, id="unclosed"),
        pytest.param(b"[" * 100_000 + b"]", id="unbalanced"),
        pytest.param(b'{"v": ' + b"{}" * 10 + b"[" * 5000 + b"}", id="mismatched"),
    ],
)
def test_rejects_deep_json_that_does_not_pair_up(body: bytes) -> None:
    # The parser meets the nesting before the syntax error: a refusal either way, never a 500.
    with pytest.raises(errors.MalformedMessage):
        messages.decode(body)


@pytest.mark.parametrize(
    "body,reason",
    [
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(b"{", "not JSON", id="truncated"),
        pytest.param(b'{"term": NaN}', "NaN", id="nan"),
        pytest.param(b'{"term": Infinity}', "Infinity", id="infinity"),
        pytest.param(b'{"term": 1}\xff', "not JSON", id="not-utf8"),
        pytest.param(b'{"term": ' + b"9" * 5000 + b"}", "not JSON", id="huge-integer"),
        pytest.param(b"[]", "JSON object", id="array"),
        pytest.param(b'"term"', "JSON object", id="string"),
        pytest.param(b"null", "JSON object", id="null"),
    ],
)
def test_rejects_bodies_that_are_not_a_json_object(body: bytes, reason: str) -> None:
    with pytest.raises(errors.MalformedMessage, match=reason):
        messages.decode(body)


def test_rejects_message_over_the_size_limit() -> None:
    body = json.dumps({"reason": "x" * messages.MAX_JSON_MESSAGE_BYTES}).encode()
    with pytest.raises(errors.MalformedMessage, match="at most"):
        messages.decode(body)
    assert messages.decode(body, limit=len(body))["reason"]


# -- what the senders send ----------------------------------------------------------------------


def test_heartbeat_parses_what_a_leader_sends() -> None:
    heartbeat = messages.Heartbeat.parse(HEARTBEAT)
    assert heartbeat == messages.Heartbeat(
        term=3, leader="r0", applied=decisions.Applied(4, ID, CHECKSUM), settled=True
    )
    fresh = _with(HEARTBEAT, generation=0, transaction="", checksum=checksum.EMPTY)
    assert messages.Heartbeat.parse(fresh).applied == decisions.Applied(0, "", checksum.EMPTY)


def test_prepare_parses_what_a_leader_sends() -> None:
    prepare = messages.Prepare.parse(json.loads(json.dumps(PREPARE)))
    assert prepare.transaction == transactions.Transaction.from_json(TRANSACTION)
    assert (prepare.term, prepare.leader) == (3, "r0")


def test_commit_abort_and_lease_parse_what_replicas_send() -> None:
    assert messages.Commit.parse(COMMIT) == messages.Commit(term=3, transaction=ID, generation=5)
    assert messages.Commit.parse(_with(COMMIT, generation=_MISSING)).generation is None
    assert messages.Abort.parse(ABORT) == messages.Abort(term=3, transaction=ID)
    lease = messages.LeaseRequest.parse(LEASE)
    assert (lease.term, lease.replica, lease.applied.generation) == (3, "r1", 4)
    assert messages.LeaseRequest.parse(_with(LEASE, term=0)).term == 0


def test_unknown_fields_are_ignored() -> None:
    # A later release may add optional fields; the version header gates the rest.
    assert messages.Abort.parse(_with(ABORT, note={"any": ["shape"]})).transaction == ID


def test_configuration_parses_what_controllers_send() -> None:
    configuration = membership.Configuration.from_json(CONFIGURATION)
    assert configuration.leader == "demo-1"
    assert configuration.voters == {"demo-1"}
    assert configuration.stopped == {"demo-3"}
    assert configuration.members[1].peer_url == "https://peer.example:8081"
    again = json.loads(json.dumps(configuration.to_json()))
    assert membership.Configuration.from_json(again) == configuration


# -- refusals -----------------------------------------------------------------------------------


def test_rejects_the_malformed_commit_that_deposed_a_leader() -> None:
    # Issue 15: refused as "transaction not held here" after its term had been adopted.
    with pytest.raises(errors.MalformedMessage, match="transaction id: a dict"):
        messages.Commit.parse({"term": 50, "transaction": {}})


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_rejects_message_that_is_not_an_object(kind: str) -> None:
    parse, _ = PARSERS[kind]
    with pytest.raises(errors.MalformedMessage, match="JSON object"):
        parse(["term", 1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kind,name",
    [(kind, name) for kind, (_, message) in sorted(PARSERS.items()) for name in message],
)
def test_rejects_message_without_a_field(kind: str, name: str) -> None:
    parse, message = PARSERS[kind]
    optional = {("commit", "generation"), ("configuration", "stopped")}
    if (kind, name) in optional:
        parse(_with(message, **{name: _MISSING}))
        return
    with pytest.raises(errors.MalformedMessage):
        parse(_with(message, **{name: _MISSING}))


@pytest.mark.parametrize(
    "value", ["3", 3.0, True, None, [3], {"term": 3}, -1, 0, messages.MAX_INTEGER + 1]
)
@pytest.mark.parametrize("kind", ["heartbeat", "prepare", "commit", "abort", "configuration"])
def test_rejects_term_that_is_not_a_positive_integer(kind: str, value: object) -> None:
    parse, message = PARSERS[kind]
    with pytest.raises(errors.MalformedMessage, match="term"):
        parse(_with(message, term=value))


@pytest.mark.parametrize("value", ["", "r 1", "-r1", "r1\n", "x" * 254, 1, None, ["r0"]])
@pytest.mark.parametrize("kind,name", [("heartbeat", "leader"), ("prepare", "leader")])
def test_rejects_malformed_leader_name(kind: str, name: str, value: object) -> None:
    parse, message = PARSERS[kind]
    with pytest.raises(errors.MalformedMessage, match="replica name"):
        parse(_with(message, **{name: value}))


@pytest.mark.parametrize(
    "name,value",
    [
        ("generation", "4"),
        ("generation", -1),
        ("generation", 1.5),
        ("transaction", "not-an-id"),
        ("transaction", "C" * 32),
        ("transaction", None),
        ("checksum", ""),
        ("checksum", "D" * 64),
        ("checksum", {"sha": CHECKSUM}),
        ("settled", "true"),
        ("settled", 1),
    ],
)
def test_rejects_malformed_heartbeat_field(name: str, value: object) -> None:
    with pytest.raises(errors.MalformedMessage, match=name):
        messages.Heartbeat.parse(_with(HEARTBEAT, **{name: value}))


@pytest.mark.parametrize("value", [{}, "", "../../x", ID.upper(), 5, [ID]])
@pytest.mark.parametrize("kind", ["commit", "abort"])
def test_rejects_malformed_transaction_id(kind: str, value: object) -> None:
    parse, message = PARSERS[kind]
    with pytest.raises(errors.MalformedMessage, match="transaction"):
        parse(_with(message, transaction=value))


@pytest.mark.parametrize("value", [0, -1, "5", True])
def test_rejects_commit_of_generation_zero_or_worse(value: object) -> None:
    with pytest.raises(errors.MalformedMessage, match="generation"):
        messages.Commit.parse(_with(COMMIT, generation=value))


def test_rejects_empty_prepare() -> None:
    with pytest.raises(errors.MalformedMessage, match="no field 'term'"):
        messages.Prepare.parse({})


@pytest.mark.parametrize(
    "transaction",
    [
        pytest.param(ID, id="an-id"),
        pytest.param([TRANSACTION], id="an-array"),
        pytest.param(_with(TRANSACTION, id=_MISSING), id="no-id"),
        pytest.param(_with(TRANSACTION, changes=[["refs/heads/a", ZERO, [A]]]), id="nested-id"),
        pytest.param(_with(TRANSACTION, files="pack"), id="files-string"),
        pytest.param(_with(TRANSACTION, generation=0), id="generation-zero"),
        pytest.param(_with(TRANSACTION, term=4), id="term-above-message"),
    ],
)
def test_rejects_prepare_with_malformed_or_invalid_transaction(transaction: object) -> None:
    with pytest.raises(errors.MalformedMessage):
        messages.Prepare.parse(_with(PREPARE, transaction=transaction))


def test_rejects_transaction_with_too_many_files() -> None:
    files = [["pack-" + "e" * 40 + ".pack", 1]] * (transactions.MAX_FILES + 1)
    with pytest.raises(errors.ReplicationError, match="files"):
        transactions.Transaction.from_json(_with(TRANSACTION, files=files))


@pytest.mark.parametrize("value", [-1, "r1", 1.0])
def test_rejects_lease_request_with_malformed_term(value: object) -> None:
    with pytest.raises(errors.MalformedMessage, match="term"):
        messages.LeaseRequest.parse(_with(LEASE, term=value))


def _member(**changes: object) -> dict[str, Any]:
    return _with(dict(CONFIGURATION["members"][0]), **changes)


@pytest.mark.parametrize(
    "members",
    [
        pytest.param("demo-1", id="not-a-list"),
        pytest.param(["demo-1"], id="member-not-an-object"),
        pytest.param([_member(id=7)], id="id-not-a-string"),
        pytest.param([_member(url="ftp://10.0.0.1")], id="url-scheme"),
        pytest.param([_member(url="10.0.0.1:8080")], id="url-without-scheme"),
        pytest.param([_member(peer_url="http://user:pw@10.0.0.1:8081")], id="url-credentials"),
        pytest.param([_member(peer_url="http://10.0.0.1:8081/?x=1")], id="url-query"),
        pytest.param([_member(peer_url="http://10.0.0.1:8081/a b")], id="url-space"),
        pytest.param([_member(peer_url="http://10.0.0.1:8081/\n")], id="url-newline"),
        pytest.param([_member(url="http://" + "a" * membership.MAX_URL_LENGTH)], id="url-long"),
        pytest.param([_member(url=["http://10.0.0.1"])], id="url-array"),
        pytest.param([_member(voter="yes")], id="voter-string"),
        pytest.param([_member()] * 2, id="twice"),
        pytest.param([_member(voter=False)], id="no-voter"),
        pytest.param(
            [_member(id=f"demo-{i}") for i in range(membership.MAX_MEMBERS + 1)], id="too-many"
        ),
    ],
)
def test_rejects_configuration_with_malformed_members(members: object) -> None:
    with pytest.raises(errors.MalformedMessage):
        membership.Configuration.from_json(_with(CONFIGURATION, members=members))


@pytest.mark.parametrize(
    "name,value",
    [
        ("leader", "demo-9"),
        ("leader", None),
        ("stopped", "demo-3"),
        ("stopped", [["demo-3"]]),
        ("stopped", [1]),
    ],
)
def test_rejects_configuration_with_malformed_field(name: str, value: object) -> None:
    with pytest.raises(errors.MalformedMessage):
        membership.Configuration.from_json(_with(CONFIGURATION, **{name: value}))


def test_rejects_configuration_nested_deeply() -> None:
    body = b'{"term": 2, "leader": "demo-1", "members": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    with pytest.raises(errors.MalformedMessage, match="nested deeper"):
        membership.Configuration.from_json(messages.decode(body))


# -- a follower adopts a term only from a message that parses -----------------------------------


class _Store:
    """What a follower reads of its store before it takes a message's term."""

    def __init__(self, term: int, leader: str | None) -> None:
        self.state = state.State(term=term, leader=leader)
        self.applied = decisions.Applied(0, "", checksum.EMPTY)
        self.checksum = checksum.EMPTY


class _Follower:
    def __init__(self, *, term: int = 1, leader: str | None = "r0") -> None:
        self.adopted: list[tuple[int, str | None]] = []
        self.store = _Store(term, leader)

        async def adopt(term: int, leader: str | None) -> None:
            self.adopted.append((term, leader))
            self.store.state = state.State(term=term, leader=leader)

        self.following = following.Following(
            replica="r1",
            local=self.store,  # type: ignore[arg-type]  # a stand-in: only its state is read
            peers=None,  # type: ignore[arg-type]  # never called before a term is taken
            copier=None,  # type: ignore[arg-type]
            timing=leading.Timing(),
            on_newer_term=adopt,
        )


async def _no_files() -> AsyncIterator[bytes]:
    for chunk in ():
        yield chunk


@pytest.mark.parametrize(
    "kind,message",
    [
        ("commit", {"term": 50, "transaction": {}}),
        ("commit", {"term": 50}),
        ("abort", {"term": 50, "transaction": "x"}),
        ("heartbeat", _with(HEARTBEAT, term=50, checksum="")),
        ("heartbeat", _with(HEARTBEAT, term=50, settled=_MISSING)),
        ("heartbeat", _with(HEARTBEAT, term=50, leader="r1")),
        ("prepare", {"term": 50, "leader": "r2", "transaction": {}}),
        ("prepare", {}),
    ],
)
def test_rejects_malformed_message_without_adopting_its_term(
    kind: str, message: dict[str, Any]
) -> None:
    follower = _Follower()
    handler = getattr(follower.following, kind)

    async def deliver() -> None:
        if kind == "prepare":
            await handler(message, _no_files())
        else:
            await handler(message)

    with pytest.raises(errors.MalformedMessage):
        asyncio.run(deliver())
    assert follower.adopted == []
    assert (follower.store.state.term, follower.store.state.leader) == (1, "r0")


def test_follower_adopts_the_term_of_a_well_formed_heartbeat() -> None:
    follower = _Follower()
    answer = asyncio.run(
        follower.following.heartbeat(_with(HEARTBEAT, term=2, leader="r2", settled=False))
    )
    assert answer["ok"] is True
    assert follower.adopted == [(2, "r2")]


def test_rejects_second_leader_in_a_term() -> None:
    follower = _Follower(term=3, leader="r0")
    answer = asyncio.run(follower.following.heartbeat(_with(HEARTBEAT, leader="r2", settled=False)))
    assert answer["ok"] is False and "led by r0" in answer["reason"]
    assert follower.adopted == []


def test_lease_release_is_optional_and_parsed() -> None:
    assert messages.LeaseRequest.parse(LEASE).release is False
    assert messages.LeaseRequest.parse(_with(LEASE, release=True)).release is True


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_rejects_lease_release_that_is_not_a_boolean(value: object) -> None:
    with pytest.raises(errors.MalformedMessage):
        messages.LeaseRequest.parse(_with(LEASE, release=value))
