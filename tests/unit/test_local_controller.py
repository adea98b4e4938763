"""``gitquorum local``'s controller: when it replaces a leader, and in which term.

The controller is driven here with the statuses its replicas would report, without starting
any process: ``_leader_lost`` and ``_elect`` decide from those alone.
"""

import asyncio
import pathlib
from typing import Any

import pytest

from gitquorum.local import controller

pytestmark = pytest.mark.unit

TIMEOUT = controller.Options(replicas=3, directory=pathlib.Path()).leader_timeout


def _controller(tmp_path: pathlib.Path, *, term: int = 3) -> controller.Controller:
    local = controller.Controller(controller.Options(replicas=3, directory=tmp_path))
    local.term, local.leader = term, "r0"
    for replica in local.replicas.values():
        replica.status = _status(replica.id, term=term, role="Follower")
    local.replicas["r0"].status = _status("r0", term=term, role="Leader")
    return local


def _status(replica: str, *, term: int, role: str, position: int = 4) -> dict[str, Any]:
    return {
        "replica": replica,
        "term": term,
        "role": role,
        "position": [1, position, 1],
        "generation": position,
        "eligible": True,
    }


def test_controller_keeps_a_leader_that_leads_its_term(tmp_path: pathlib.Path) -> None:
    local = _controller(tmp_path)
    assert local._leader_lost(0.0) is None
    assert local._leader_lost(TIMEOUT * 10) is None


def test_controller_replaces_a_leader_reporting_a_newer_term_at_once(
    tmp_path: pathlib.Path,
) -> None:
    local = _controller(tmp_path)
    local.replicas["r0"].status = _status("r0", term=50, role="Follower")
    assert "term 50" in str(local._leader_lost(0.0))


def test_controller_replaces_a_leader_reporting_another_role_after_the_timeout(
    tmp_path: pathlib.Path,
) -> None:
    local = _controller(tmp_path)
    local.replicas["r0"].status = _status("r0", term=3, role="Follower")
    assert local._leader_lost(100.0) is None  # it may be taking its configuration
    assert local._leader_lost(100.0 + TIMEOUT / 2) is None
    assert "role Follower" in str(local._leader_lost(100.0 + TIMEOUT * 1.5))


def test_controller_forgets_a_role_it_saw_once_the_leader_leads(tmp_path: pathlib.Path) -> None:
    local = _controller(tmp_path)
    local.replicas["r0"].status = _status("r0", term=3, role="Follower")
    assert local._leader_lost(100.0) is None
    local.replicas["r0"].status = _status("r0", term=3, role="Leader")
    assert local._leader_lost(101.0) is None
    local.replicas["r0"].status = _status("r0", term=3, role="Follower")
    assert local._leader_lost(101.0 + TIMEOUT / 2) is None


def test_controller_elects_above_every_reported_term(tmp_path: pathlib.Path) -> None:
    local = _controller(tmp_path)
    local.replicas["r0"].status = _status("r0", term=50, role="Follower", position=5)
    asyncio.run(local._elect("it reports term 50"))
    assert local.term == 51
    # The deposed leader answers and holds the newest state: it may lead again, in term 51.
    assert local.leader == "r0"


def test_controller_elects_without_a_silent_leader(tmp_path: pathlib.Path) -> None:
    local = _controller(tmp_path)
    local.replicas["r0"].status = {}
    local.replicas["r1"].status = _status("r1", term=7, role="Follower")
    asyncio.run(local._elect("silent"))
    assert (local.term, local.leader) == (8, "r1")
