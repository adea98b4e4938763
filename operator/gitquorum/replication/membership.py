"""Who the replicas of a repository are, who leads them, in which term: the configuration
the controller (the operator, or ``gitquorum local``) gives every replica.

A configuration from the admin API is parsed as strictly as a replication message
(``messages``): every field with its type, form and range, before the replica looks at it.
"""

import dataclasses
import urllib.parse
from collections.abc import Mapping
from typing import Any

from gitquorum import errors
from gitquorum.replication import messages

# The CRD allows 7 replicas and ``gitquorum local`` runs a few; a leader sends heartbeats to
# every member, so the bound keeps one configuration from fanning out without end.
MAX_MEMBERS = 64

# A member's URL is a scheme, a host and a port, perhaps a path prefix; it goes into the
# request line of every message to that member.
MAX_URL_LENGTH = 2048
URL_SCHEMES = ("http", "https")


@dataclasses.dataclass(frozen=True)
class Member:
    """One replica as its peers and clients reach it."""

    id: str
    url: str
    """Base URL of its git server (clients, forwarded pushes)."""
    peer_url: str
    """Base URL of its replication and admin API."""
    voter: bool = True
    """Whether it counts towards the majority; a new replica votes only once rebuilt."""


@dataclasses.dataclass(frozen=True)
class Configuration:
    """The controller's word on a repository's replicas for one term."""

    term: int
    leader: str
    members: tuple[Member, ...]
    stopped: frozenset[str] = frozenset()
    """Replicas whose process the controller knows to be gone: a new leader need not wait
    for their leases to lapse."""

    @property
    def voters(self) -> frozenset[str]:
        return frozenset(member.id for member in self.members if member.voter)

    def member(self, replica: str) -> Member | None:
        return next((member for member in self.members if member.id == replica), None)

    def others(self, replica: str) -> tuple[Member, ...]:
        return tuple(member for member in self.members if member.id != replica)

    def to_json(self) -> dict[str, Any]:
        return {
            "term": self.term,
            "leader": self.leader,
            "members": [dataclasses.asdict(member) for member in self.members],
            "stopped": sorted(self.stopped),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Configuration":
        """A configuration from the controller; MalformedMessage, naming the fault, if it is
        not one."""
        members = _list(messages.field(data, "members"), "members")
        configuration = cls(
            term=messages.integer(messages.field(data, "term"), "term", minimum=1),
            leader=messages.replica_id(messages.field(data, "leader"), "leader"),
            members=tuple(_member(item) for item in members),
            stopped=frozenset(
                messages.replica_id(item, "a stopped replica")
                for item in _list(data.get("stopped", []), "stopped")
            ),
        )
        ids = [member.id for member in configuration.members]
        if len(set(ids)) != len(ids):
            raise errors.MalformedMessage("configuration names a replica twice")
        if configuration.member(configuration.leader) is None:
            raise errors.MalformedMessage(f"leader {configuration.leader!r} is not a member")
        if not configuration.voters:
            raise errors.MalformedMessage("configuration has no voter")
        return configuration


def _list(value: object, what: str) -> list[object]:
    if not isinstance(value, list):
        raise errors.MalformedMessage(f"{what} must be an array, not {messages.describe(value)}")
    if len(value) > MAX_MEMBERS:
        raise errors.MalformedMessage(f"{what} lists {len(value)} replicas; at most {MAX_MEMBERS}")
    return value


def _member(item: object) -> Member:
    if not isinstance(item, Mapping):
        raise errors.MalformedMessage(f"a member is an object, not {messages.describe(item)}")
    replica = messages.replica_id(messages.field(item, "id"), "member id")
    return Member(
        id=replica,
        url=_url(messages.field(item, "url"), f"url of {replica}"),
        peer_url=_url(messages.field(item, "peer_url"), f"peer_url of {replica}"),
        voter=messages.boolean(item.get("voter", True), f"voter of {replica}"),
    )


def _url(value: object, what: str) -> str:
    """A base URL: http(s), a host, no credentials, query or fragment; no trailing slash."""
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
        raise errors.MalformedMessage(f"{what} must be a URL, not {messages.describe(value)}")
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError as error:
        raise errors.MalformedMessage(f"{what} is not a URL: {error}") from error
    if (
        parts.scheme not in URL_SCHEMES
        or not parts.netloc
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or not value.isprintable()
        or any(character.isspace() for character in value)
    ):
        raise errors.MalformedMessage(
            f"{what} must be an http(s) base URL, not {messages.describe(value)}"
        )
    return value.rstrip("/")
