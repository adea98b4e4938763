"""Polling with a deadline: the only way tests wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(
    what: str,
    probe: Callable[[], T],
    *,
    timeout: float = 60.0,
    interval: float = 0.25,
    seen: Callable[[], object] | None = None,
) -> T:
    """Return ``probe()``'s first truthy result; fail with what was awaited and last seen.

    ``seen`` describes the state for the failure message when the probe's own last value
    (or error) would not say enough.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except Exception as exc:  # an error is "not yet"; kept for the message
            last = f"{type(exc).__name__}: {exc}"
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            if seen is not None:
                last = seen()
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}"
            )
        time.sleep(interval)


def never(
    what: str,
    probe: Callable[[], object],
    *,
    window: float,
    interval: float = 0.5,
) -> None:
    """Check that ``probe()`` stays falsy for the whole ``window``: the one way to assert that
    something does not happen. Fails at its first truthy result, saying what happened.
    """
    deadline = time.monotonic() + window
    while True:
        value = probe()
        if value:
            raise AssertionError(f"{what} within {window:.0f}s: {value!r}")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)
