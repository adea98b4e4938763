"""The pushes a follower receives while it copies the leader's state, kept for after the copy.

A copy lands on the generation the leader had applied when the copy began. Under a steady
stream of pushes the leader has decided more by then, and a follower that refused every
prepare while copying landed one copy behind the next push, and copied again, for ever
(measured: 1,095 copies in a 1,500-push run, never voting). So a copying follower keeps what
the leader sends meanwhile: the prepared transactions (their files staged, nothing recorded,
so it answers "not stored" and the leader counts it for no majority) and which of them the
leader committed. When the copy lands on generation G, the committed transactions G+1, G+2,
... are decided and apply in order on top of it; the one after them that is still prepared
becomes this follower's prepared transaction; the rest is discarded. The follower is then
where the leader is, and the next commit or prepare finds it in step.

Nothing here is durable: a restart copies again, which is what it did before.
"""

import dataclasses

from gitquorum.replication import transactions

MAX_HELD = 256
"""Transactions kept at most: bounds the staged files of a copy that takes very long (a push
beyond it is refused as before, and the copy after this one catches up)."""


@dataclasses.dataclass(frozen=True)
class Drain:
    """What to do with the backlog once a copy landed."""

    apply: tuple[transactions.Transaction, ...]
    """Committed, consecutive from the copied generation: apply these in order."""
    prepare: transactions.Transaction | None
    """The next one, not committed yet: hold it prepared."""
    discard: tuple[transactions.Transaction, ...]
    """The rest: already in the copy, aborted, or after a gap."""


class Backlog:
    def __init__(self) -> None:
        self._held: dict[str, transactions.Transaction] = {}
        self._committed: set[str] = set()

    def __len__(self) -> int:
        return len(self._held)

    def full(self) -> bool:
        return len(self._held) >= MAX_HELD

    def hold(self, transaction: transactions.Transaction) -> None:
        self._held[transaction.id] = transaction

    def holds(self, transaction_id: str) -> bool:
        return transaction_id in self._held

    def commit(self, transaction_id: str) -> None:
        if transaction_id in self._held:
            self._committed.add(transaction_id)

    def abort(self, transaction_id: str) -> transactions.Transaction | None:
        self._committed.discard(transaction_id)
        return self._held.pop(transaction_id, None)

    def drain(self, generation: int) -> Drain:
        """Empties the backlog for a copy that landed on ``generation``."""
        by_generation: dict[int, transactions.Transaction] = {}
        for transaction in sorted(self._held.values(), key=lambda t: t.position):
            by_generation[transaction.generation] = transaction  # the newest term's wins
        apply: list[transactions.Transaction] = []
        prepare = None
        following = generation + 1
        while (found := by_generation.get(following)) is not None:
            if found.id not in self._committed:
                prepare = found
                break
            apply.append(found)
            following += 1
        kept = {t.id for t in apply} | ({prepare.id} if prepare is not None else set())
        discard = tuple(t for t in self._held.values() if t.id not in kept)
        self._held.clear()
        self._committed.clear()
        return Drain(apply=tuple(apply), prepare=prepare, discard=discard)

    def clear(self) -> tuple[transactions.Transaction, ...]:
        held = tuple(self._held.values())
        self._held.clear()
        self._committed.clear()
        return held
