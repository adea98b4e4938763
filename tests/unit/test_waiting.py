"""The test helpers that wait: a deadline always, and a message that says what was awaited."""

from __future__ import annotations

import itertools

import pytest

from tests import waiting


def test_until_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "ready"])
    assert waiting.until("a value", lambda: next(values), interval=0) == "ready"


def test_until_fails_with_what_was_awaited_and_last_seen() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the door to open; last seen: 'shut'"):
        waiting.until("the door to open", lambda: "", timeout=0, seen=lambda: "shut")


def test_never_passes_when_nothing_happens_in_the_window() -> None:
    calls = itertools.count()
    waiting.never("an alarm", lambda: next(calls) and None, window=0.05, interval=0.01)
    assert next(calls) >= 2


def test_never_fails_at_the_first_thing_that_happens() -> None:
    values = iter([[], [], ["node-1 NotReady"]])
    with pytest.raises(AssertionError, match=r"a node marked within 5s: \['node-1 NotReady'\]"):
        waiting.never("a node marked", lambda: next(values), window=5, interval=0)
