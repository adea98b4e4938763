"""A replica's durable state: the newest term it has seen, its log position, its prepared
transaction.

The refs themselves live in the git repository; this file records what they are the result
of. It is small, rewritten whole (a temporary file, fsync, rename, fsync of the directory),
and written before the replica answers any message that depends on it: a term is stored
before the replica obeys it (fencing survives restarts), a prepared transaction before the
replica confirms it (a majority's confirmation is durable), and a generation together with
nothing else that could contradict it. Gitaly Cluster bumps its generation after the disk
write, so a crash in between lets copies diverge unnoticed; here the prepared record is
written first and a restart finishes what the refs show was started (see ``store``).
"""

import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from gitquorum import errors
from gitquorum.replication import decisions, transactions

FORMAT = 1


@dataclasses.dataclass(frozen=True)
class State:
    """Everything a replica must remember across restarts, besides its repository."""

    term: int = 0
    """The newest term seen; messages of older terms are refused (fencing)."""
    leader: str | None = None
    """The leader of ``term``, once known."""
    generation: int = 0
    """How many transactions the refs reflect."""
    last_term: int = 0
    last_seq: int = 0
    last_transaction: str = ""
    """The term, sequence number and id of the transaction that gave ``generation``."""
    prepared: transactions.Transaction | None = None
    """A transaction stored but not applied yet: the next one, if it is decided."""
    rebuilding: bool = False
    """Set while refs are copied from a peer: they may be half-way, so this replica may not
    lead, and a restart starts the copy again."""

    @property
    def position(self) -> decisions.Position:
        if self.prepared is not None:
            return self.prepared.position
        return decisions.Position(self.last_term, self.generation, self.last_seq)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["prepared"] = None if self.prepared is None else self.prepared.to_json()
        data["format"] = FORMAT
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "State":
        if data.get("format") != FORMAT:
            raise errors.ReplicationError(f"unknown state format {data.get('format')!r}")
        prepared = data.get("prepared")
        return cls(
            term=int(data["term"]),
            leader=data.get("leader"),
            generation=int(data["generation"]),
            last_term=int(data["last_term"]),
            last_seq=int(data["last_seq"]),
            last_transaction=str(data["last_transaction"]),
            prepared=None if prepared is None else transactions.Transaction.from_json(prepared),
            rebuilding=bool(data.get("rebuilding", False)),
        )


class StateFile:
    """The state on disk; its methods block (the callers run them in a thread)."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def load(self) -> State:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return State()
        try:
            return State.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as error:
            raise errors.ReplicationError(f"{self.path} is unreadable: {error}") from error

    def save(self, state: State, *, durable_first: Sequence[pathlib.Path] = ()) -> None:
        """Replaces the state; ``durable_first`` (files, directories) are made durable before
        it, in one go with the new version's temporary file (a prepared transaction's files
        must never be missing behind a record that says they are stored)."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w") as output:
            json.dump(state.to_json(), output)
        transactions.fsync_together([*durable_first, temporary])
        os.replace(temporary, self.path)
        transactions.fsync_directory(self.path.parent)
