"""The backlog of pushes a follower keeps while it copies (``replication/backlog.py``)."""

import itertools

import pytest

from gitquorum.replication import backlog, transactions

pytestmark = pytest.mark.unit


def _transaction(
    generation: int, *, term: int = 1, seq: int | None = None
) -> transactions.Transaction:
    return transactions.Transaction(
        id=f"t{term}-{generation}-{seq or generation}",
        term=term,
        generation=generation,
        seq=seq or generation,
        changes=(),
    )


def test_backlog_applies_committed_consecutive_pushes_and_holds_the_next_prepared() -> None:
    held = backlog.Backlog()
    for generation in (11, 12, 13, 14):
        held.hold(_transaction(generation))
    for generation in (11, 12, 13):
        held.commit(f"t1-{generation}-{generation}")
    drain = held.drain(10)
    assert [t.generation for t in drain.apply] == [11, 12, 13]
    assert drain.prepare is not None and drain.prepare.generation == 14
    assert drain.discard == ()
    assert len(held) == 0


def test_backlog_discards_what_the_copy_already_holds() -> None:
    held = backlog.Backlog()
    for generation in (9, 10, 11):
        held.hold(_transaction(generation))
        held.commit(f"t1-{generation}-{generation}")
    drain = held.drain(10)
    assert [t.generation for t in drain.apply] == [11]
    assert sorted(t.generation for t in drain.discard) == [9, 10]


def test_backlog_stops_at_a_gap() -> None:
    held = backlog.Backlog()
    for generation in (11, 13):
        held.hold(_transaction(generation))
        held.commit(f"t1-{generation}-{generation}")
    drain = held.drain(10)
    assert [t.generation for t in drain.apply] == [11]
    assert drain.prepare is None
    assert [t.generation for t in drain.discard] == [13]


def test_backlog_never_applies_an_uncommitted_push_or_one_after_it() -> None:
    for committed in itertools.product([False, True], repeat=3):
        held = backlog.Backlog()
        for index, generation in enumerate((11, 12, 13)):
            held.hold(_transaction(generation))
            if committed[index]:
                held.commit(f"t1-{generation}-{generation}")
        drain = held.drain(10)
        expected = 0
        while expected < 3 and committed[expected]:
            expected += 1
        assert len(drain.apply) == expected, committed
        assert all(t.id in {f"t1-{g}-{g}" for g in (11, 12, 13)[:expected]} for t in drain.apply)


def test_backlog_aborted_push_is_not_applied() -> None:
    held = backlog.Backlog()
    held.hold(_transaction(11))
    held.commit("t1-11-11")
    assert held.abort("t1-11-11") is not None
    assert held.drain(10) == backlog.Drain(apply=(), prepare=None, discard=())


def test_backlog_commit_of_a_push_not_held_is_ignored() -> None:
    held = backlog.Backlog()
    held.commit("unknown")
    held.hold(_transaction(11))
    drain = held.drain(10)
    assert drain.apply == () and drain.prepare is not None


def test_backlog_newer_term_wins_a_generation() -> None:
    held = backlog.Backlog()
    old, new = _transaction(11, term=1), _transaction(11, term=2, seq=1)
    held.hold(old)
    held.hold(new)
    held.commit(new.id)
    drain = held.drain(10)
    assert drain.apply == (new,)
    assert drain.discard == (old,)


def test_backlog_full_at_its_bound() -> None:
    held = backlog.Backlog()
    for generation in range(backlog.MAX_HELD):
        assert not held.full()
        held.hold(_transaction(generation + 1))
    assert held.full()
    assert len(held.clear()) == backlog.MAX_HELD and len(held) == 0
