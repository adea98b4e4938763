"""kopf's start-up wait for its indexes: waiters still wake when every object is indexed, and
the work of getting there grows with the objects, not with their square."""

import asyncio
from collections.abc import Callable, Iterable

import pytest
from kopf._cogs.aiokits import aiotoggles

from gitquorum.kube import prepopulation

pytestmark = pytest.mark.unit


class Counting:
    """``all``, counting how often the set's state is asked for (each waiter woken asks)."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self, states: Iterable[bool]) -> bool:
        self.asked += 1
        return all(states)


async def _as_kopf_lists(objects: int, toggles: aiotoggles.ToggleSet) -> None:
    """What kopf does at start-up: a toggle per object as it arrives, its worker started at
    once, which drops the toggle when indexed and waits for the whole set."""
    kind = await toggles.make_toggle(name="pods@")

    async def worker(toggle: aiotoggles.Toggle) -> None:
        await asyncio.sleep(0)  # indexing
        await toggles.drop_toggle(toggle)
        await toggles.wait_for(True)

    workers = []
    for number in range(objects):
        toggle = await toggles.make_toggle(name=str(number))
        workers.append(asyncio.ensure_future(worker(toggle)))
        await asyncio.sleep(0)  # the next event from the watch stream
    await toggles.drop_toggle(kind)  # the listing is over
    await asyncio.wait_for(asyncio.gather(*workers), 30)


def _asked_while_listing(objects: int) -> int:
    counting = Counting()
    asyncio.run(_as_kopf_lists(objects, aiotoggles.ToggleSet(counting)))
    return counting.asked


def test_prepopulation_applies_to_kopfs_toggle_sets() -> None:
    assert prepopulation.apply()
    assert prepopulation.apply()  # twice is once
    assert aiotoggles.ToggleSet.make_toggle is prepopulation.make_toggle


def test_prepopulation_wakes_the_waiters_with_work_linear_in_the_objects() -> None:
    prepopulation.apply()

    asked = {objects: _asked_while_listing(objects) for objects in (500, 1000)}

    # Per object: asked twice as its toggle is made, twice as it is dropped, and by its worker
    # as it starts waiting and once more when woken. kopf's own ToggleSet asked 125,250 times
    # for 500 objects and 500,500 times for 1,000.
    assert asked[500] <= 6 * 500 + 10 and asked[1000] <= 6 * 1000 + 10, asked


def _waiter(toggles: aiotoggles.ToggleSet, state: bool) -> Callable[[], "asyncio.Future[None]"]:
    return lambda: asyncio.ensure_future(toggles.wait_for(state))


def test_prepopulation_waiters_wake_only_when_the_last_toggle_goes() -> None:
    prepopulation.apply()

    async def scenario() -> None:
        toggles = aiotoggles.ToggleSet(all)
        first, second = await toggles.make_toggle(), await toggles.make_toggle()
        on = _waiter(toggles, True)()
        await toggles.drop_toggle(first)
        await asyncio.sleep(0.01)
        assert not on.done() and toggles.is_off()
        await toggles.drop_toggles([second])
        await asyncio.wait_for(on, 5)
        off = _waiter(toggles, False)()
        await asyncio.sleep(0.01)
        assert not off.done()
        await toggles.make_toggle()
        await asyncio.wait_for(off, 5)

    asyncio.run(scenario())


def test_prepopulation_toggles_turned_one_by_one_still_wake_the_set_waiters() -> None:
    prepopulation.apply()

    async def scenario() -> None:
        paused = aiotoggles.ToggleSet(any)  # kopf's pausing: any toggle on pauses
        toggle = await paused.make_toggle(False)
        waiting = _waiter(paused, True)()
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await toggle.turn_to(True)
        await asyncio.wait_for(waiting, 5)

    asyncio.run(scenario())
