"""Who the replicas of a repository are, who leads them, in which term: the configuration
the controller (the operator, or ``gitquorum local``) gives every replica."""

import dataclasses
from collections.abc import Mapping
from typing import Any

from gitquorum import errors


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
        try:
            members = tuple(
                Member(
                    id=str(item["id"]),
                    url=str(item["url"]).rstrip("/"),
                    peer_url=str(item["peer_url"]).rstrip("/"),
                    voter=bool(item.get("voter", True)),
                )
                for item in data["members"]
            )
            configuration = cls(
                term=int(data["term"]),
                leader=str(data["leader"]),
                members=members,
                stopped=frozenset(str(item) for item in data.get("stopped", [])),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise errors.BadRequest(f"malformed configuration: {error!r}") from error
        ids = [member.id for member in members]
        if len(set(ids)) != len(ids):
            raise errors.BadRequest("configuration names a replica twice")
        if configuration.member(configuration.leader) is None:
            raise errors.BadRequest(f"leader {configuration.leader!r} is not a member")
        if not configuration.voters:
            raise errors.BadRequest("configuration has no voter")
        if configuration.term < 1:
            raise errors.BadRequest("term must be at least 1")
        return configuration
