"""The messages of the replication port, parsed whole before a replica acts on any of them.

A message is decoded and checked into a frozen dataclass first: the body is JSON within
bounds (size, nesting), it is an object, and every field the protocol defines is there with
the type, form and range it must have. Only then does the replica look at it, and only then
does its term count. A message that fails is answered 400 and changes nothing, whatever term
it carries: a malformed commit with a high term once raised a healthy leader's term, which
deposed it while it went on answering its controller as if nothing had happened.

Fields a message does not define are ignored, so that a later release may add optional ones
(the protocol version header, ``versions``, gates the changes that are not optional); a
defined field of another shape is refused. What a message claims is checked here as far as it
can be without the replica's state: a leader's message names a leader, a prepare proposes no
transaction of a later term than its own, ids and checksums have their exact form. Whether
the message fits the replica's log is the follower's business (``following``).
"""

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from gitquorum import errors
from gitquorum.replication import decisions, transactions

# Heartbeats, commits, aborts, lease requests, hand-offs and configurations hold a few
# scalars (a configuration a few members): the bound keeps a peer from making the event loop
# parse megabytes for one of them. A prepare's header, which lists a push's ref updates, has
# its own bound (``peerapi.MAX_HEADER_BYTES``).
MAX_JSON_MESSAGE_BYTES = 1024 * 1024

# The messages nest at most four deep (a prepare: message, transaction, changes, change).
# Deeper JSON is a bug or an attack, and Python's parser fails on very deep nesting with a
# RecursionError (an internal error, a 500) instead of a refusal.
MAX_DEPTH = 8

# A replica id is a pod name (a DNS subdomain, at most 253 characters) or a short name like
# ``r0``; it is stored in the state file and named in log lines, so it is plain and bounded.
MAX_ID_LENGTH = 253

MAX_INTEGER = transactions.MAX_INTEGER
NO_TRANSACTION = ""
"""The id of the transaction behind generation 0: there is none."""

_REPLICA_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_CHECKSUM = re.compile(r"[0-9a-f]{64}")

# Measuring the nesting of JSON text without parsing it: escaped backslashes and quotes go
# first, then strings (brackets inside them are text), then everything but brackets; each
# round then removes the innermost pairs.
_ESCAPES = (b"\\\\", b'\\"')
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_PLACEHOLDER = b"."


def decode(body: bytes, *, limit: int = MAX_JSON_MESSAGE_BYTES) -> dict[str, Any]:
    """A message's JSON object; MalformedMessage, saying what is wrong, for anything else."""
    if len(body) > limit:
        raise errors.MalformedMessage(f"a message of {len(body)} bytes; at most {limit} here")
    if _deeper_than(body, MAX_DEPTH):
        raise errors.MalformedMessage(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        message = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError as error:  # brackets that do not pair up, nested without end
        raise errors.MalformedMessage(f"JSON nested deeper than {MAX_DEPTH} levels") from error
    except ValueError as error:  # not UTF-8, not JSON, an integer of thousands of digits
        raise errors.MalformedMessage(f"not JSON: {error}") from error
    if not isinstance(message, dict):
        raise errors.MalformedMessage(f"a message is a JSON object, not {describe(message)}")
    return message


def _deeper_than(body: bytes, limit: int) -> bool:
    """Whether JSON text nests deeper than ``limit``. For text that is not JSON the answer is
    a guess, and the parser refuses that text anyway."""
    text = body
    for escape in _ESCAPES:
        text = text.replace(escape, b"")
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        # The placeholder keeps a removed pair's neighbours from meeting within the round, so
        # that a round removes exactly one level.
        inner = brackets.replace(b"[]", _PLACEHOLDER).replace(b"{}", _PLACEHOLDER)
        inner = inner.replace(_PLACEHOLDER, b"")
        if len(inner) == len(brackets):
            return False  # nothing left, or brackets that do not pair up (not JSON)
        brackets = inner
    return bool(brackets)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def describe(value: object) -> str:
    """A peer's value in an error message: scalars shortened, containers by their kind only."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return repr(value[:40])
    return repr(value)[:40]


# -- fields -------------------------------------------------------------------------------------


def field(message: Mapping[str, Any], name: str) -> object:
    if not isinstance(message, Mapping):
        raise errors.MalformedMessage(f"a message is a JSON object, not {describe(message)}")
    if name not in message:
        raise errors.MalformedMessage(f"no field {name!r}")
    return message[name]


def integer(value: object, what: str, *, minimum: int = 0) -> int:
    """An integer within ``[minimum, MAX_INTEGER]``; a boolean or a float is none."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.MalformedMessage(f"{what} must be an integer, not {describe(value)}")
    if not minimum <= value <= MAX_INTEGER:
        raise errors.MalformedMessage(f"{what} must be from {minimum} to {MAX_INTEGER}")
    return value


def boolean(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise errors.MalformedMessage(f"{what} must be true or false, not {describe(value)}")
    return value


def replica_id(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH or not _REPLICA_ID.fullmatch(value):
        raise errors.MalformedMessage(f"{what} must be a replica name, not {describe(value)}")
    return value


def transaction_id(value: object, what: str) -> str:
    try:
        return transactions.check_id(value)
    except errors.ReplicationError as error:
        raise errors.MalformedMessage(f"{what}: {error}") from error


def _term(message: Mapping[str, Any]) -> int:
    # A leader's term is at least 1: the controller's first configuration has term 1.
    return integer(field(message, "term"), "term", minimum=1)


def _applied(message: Mapping[str, Any]) -> decisions.Applied:
    generation = integer(field(message, "generation"), "generation")
    transaction = field(message, "transaction")
    if transaction != NO_TRANSACTION:
        transaction = transaction_id(transaction, "transaction")
    checksum = field(message, "checksum")
    if not isinstance(checksum, str) or not _CHECKSUM.fullmatch(checksum):
        raise errors.MalformedMessage(
            f"checksum must be 64 hexadecimal digits, not {describe(checksum)}"
        )
    return decisions.Applied(generation, str(transaction), checksum)


# -- messages -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """Leader -> follower, every heartbeat interval."""

    term: int
    leader: str
    applied: decisions.Applied
    """The leader's applied state."""
    settled: bool
    """Whether the leader has settled what it held prepared; followers repair towards it
    only then."""
    notified: int | None = None
    """Optional: every push up to this generation was notified to every webhook
    (``notifying``); absent from a leader without webhooks or of an older release."""

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> "Heartbeat":
        term = _term(message)  # refuses a message that is not an object
        notified = message.get("notified")
        return cls(
            term=term,
            leader=replica_id(field(message, "leader"), "leader"),
            applied=_applied(message),
            settled=boolean(field(message, "settled"), "settled"),
            notified=None if notified is None else integer(notified, "notified"),
        )


@dataclasses.dataclass(frozen=True)
class Prepare:
    """Leader -> follower: a transaction to store (its pack files follow the message)."""

    term: int
    leader: str
    transaction: transactions.Transaction

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> "Prepare":
        term = _term(message)
        leader = replica_id(field(message, "leader"), "leader")
        data = field(message, "transaction")
        if not isinstance(data, Mapping):
            raise errors.MalformedMessage(f"transaction must be an object, not {describe(data)}")
        try:
            transaction = transactions.Transaction.from_json(data)
        except errors.ReplicationError as error:
            raise errors.MalformedMessage(str(error)) from error
        if transaction.term > term:
            raise errors.MalformedMessage(
                f"a message of term {term} proposes a transaction of term {transaction.term}"
            )
        if transaction.generation < 1:
            raise errors.MalformedMessage("a transaction gives generation 1 or later")
        return cls(term=term, leader=leader, transaction=transaction)


@dataclasses.dataclass(frozen=True)
class Commit:
    """Leader -> follower: apply the transaction stored with this id."""

    term: int
    transaction: str
    generation: int | None = None
    """The generation the transaction gives; optional, the transaction's id is what counts."""

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> "Commit":
        term = _term(message)
        transaction = transaction_id(field(message, "transaction"), "transaction")
        generation = None
        if message.get("generation") is not None:
            generation = integer(message["generation"], "generation", minimum=1)
        return cls(term=term, transaction=transaction, generation=generation)


@dataclasses.dataclass(frozen=True)
class Abort:
    """Leader -> follower: forget the transaction stored with this id."""

    term: int
    transaction: str

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> "Abort":
        return cls(
            term=_term(message),
            transaction=transaction_id(field(message, "transaction"), "transaction"),
        )


@dataclasses.dataclass(frozen=True)
class LeaseRequest:
    """Follower -> leader, every heartbeat interval: may it serve reads?"""

    term: int
    """The follower's term; 0 for one that has never been configured."""
    replica: str
    applied: decisions.Applied
    """The follower's applied state."""
    release: bool = False
    """The follower stops serving reads (it is shutting down): the leader need not wait for
    its lease before acknowledging a write it has not applied. Optional: older followers never
    send it, older leaders ignore it (and only wait longer)."""

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> "LeaseRequest":
        return cls(
            term=integer(field(message, "term"), "term"),
            replica=replica_id(field(message, "replica"), "replica"),
            applied=_applied(message),
            release=boolean(message.get("release", False), "release"),
        )
