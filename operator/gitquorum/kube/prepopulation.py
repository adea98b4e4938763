"""kopf's start-up wait for its indexes, made linear in the number of listed objects.

While kopf lists the kinds it indexes at start-up (pods, claims and nodes here), the worker of
every listed object, of any kind, waits until all of them are indexed, on one
``asyncio.Condition`` shared by a ``ToggleSet``: a toggle per object being indexed. kopf makes
a toggle when an object arrives and drops it once indexed, and each of those wakes every worker
already waiting, only for each to find the set still off and wait again: O(N²) wake-ups on the
event loop for N objects. Measured: a restarted operator over 1,000 repositories (7,000 pods,
claims and repositories) took 175 s to pass over them all, the event loop too busy to renew the
Lease in time (lost twice in one restart); 4,000 toggles made and dropped as kopf does take
66 s on their own, 2,000 take 13 s.

A waiter can only be satisfied by a change of the set's overall state, so the set's own
methods here notify only then. Toggles turned on or off one by one (kopf's pausing) still
notify as before.

This replaces methods of a class private to kopf (``kopf._cogs.aiokits.aiotoggles.ToggleSet``,
kopf 1.45): :func:`apply` checks it has the shape this expects and otherwise leaves kopf as it
is, with a warning (slow at start-up, still correct).
"""

import logging
from collections.abc import Callable, Iterable
from typing import Any

from kopf._cogs.aiokits import aiotoggles

log = logging.getLogger(__name__)

EXPECTED = ("make_toggle", "drop_toggle", "drop_toggles", "is_on")
"""ToggleSet's methods this replaces or relies on."""
EXPECTED_STATE = ("_condition", "_toggles", "_fn")
"""ToggleSet's attributes the replacements use."""


def apply() -> bool:
    """Makes every ToggleSet notify its waiters only when its state changes; False (with a
    warning) when kopf's ToggleSet is not the one this was written for."""
    toggle_set = aiotoggles.ToggleSet
    replacements = {
        "make_toggle": make_toggle,
        "drop_toggle": drop_toggle,
        "drop_toggles": drop_toggles,
    }
    if all(getattr(toggle_set, name, None) is method for name, method in replacements.items()):
        return True
    sample = toggle_set(all)
    if not all(callable(getattr(toggle_set, name, None)) for name in EXPECTED) or not all(
        hasattr(sample, name) for name in EXPECTED_STATE
    ):
        log.warning(
            "kopf's ToggleSet is not the one expected: its start-up wait is left as it is "
            "(slow with thousands of objects)"
        )
        return False
    for name, method in replacements.items():
        setattr(toggle_set, name, method)
    return True


async def make_toggle(
    self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        _changing(self, lambda: self._toggles.add(toggle))
    return toggle


async def drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    async with self._condition:
        _changing(self, lambda: self._toggles.discard(toggle))


async def drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        _changing(self, lambda: self._toggles.difference_update(toggles))


def _changing(toggles: aiotoggles.ToggleSet, change: Callable[[], Any]) -> None:
    """Applies ``change`` (the set's lock held) and wakes the waiters if the set's state moved.

    Cheap while kopf indexes: every toggle in its set is off, so ``is_on`` (``all``) stops at
    the first one it looks at."""
    before = toggles.is_on()
    change()
    if toggles.is_on() != before:
        toggles._condition.notify_all()
