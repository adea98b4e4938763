"""Maintenance windows and the permits per node (kube.windows)."""

from __future__ import annotations

import datetime

import pytest

from gitquorum.kube import manifests, windows
from gitquorum.kube.spec import RepositorySpec

pytestmark = pytest.mark.unit

UTC = datetime.UTC


def at(day: int, hour: int, minute: int = 0) -> datetime.datetime:
    """A moment of the week starting Monday 2026-11-30."""
    monday = datetime.datetime(2026, 11, 30, tzinfo=UTC)
    return monday + datetime.timedelta(days=day, hours=hour, minutes=minute)


def window(**spec: object) -> windows.Window:
    found = windows.Window.from_spec({"start": "22:00", "durationMinutes": 180, **spec})
    assert found is not None
    return found


def test_window_absent_means_any_time() -> None:
    assert windows.Window.from_spec(None) is None
    assert windows.Window.from_spec({}) is None


@pytest.mark.parametrize(
    ("moment", "closes"),
    [
        (at(0, 21, 59), None),
        (at(0, 22, 0), at(1, 1, 0)),
        (at(1, 0, 30), at(1, 1, 0)),  # past midnight, still Monday's window
        (at(1, 1, 0), None),
        (at(1, 23, 0), at(2, 1, 0)),
    ],
)
def test_window_every_day_opens_and_runs_past_midnight(
    moment: datetime.datetime, closes: datetime.datetime | None
) -> None:
    assert window().open_until(moment) == closes


def test_window_on_some_days_only() -> None:
    sunday = window(days=["Sun"])
    assert sunday.open_until(at(0, 22, 30)) is None  # Monday
    assert sunday.open_until(at(6, 22, 30)) == at(7, 1, 0)
    assert sunday.open_until(at(7, 0, 30)) == at(7, 1, 0), "Sunday's window runs into Monday"


def test_window_in_another_time_zone_is_compared_in_utc() -> None:
    paris = datetime.timezone(datetime.timedelta(hours=1))
    assert window().open_until(datetime.datetime(2026, 11, 30, 23, 30, tzinfo=paris)) is not None


@pytest.mark.parametrize(
    "spec",
    [
        {"start": "22:00", "durationMinutes": 0},
        {"start": "22:00", "durationMinutes": 2000},
        {"start": "25:00", "durationMinutes": 10},
        {"durationMinutes": 10},
        {"start": "22:00", "durationMinutes": 10, "days": ["Monday"]},
    ],
)
def test_rejects_malformed_window(spec: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        windows.Window.from_spec(spec)


def test_grant_keeps_the_bound_per_node_across_repositories() -> None:
    due = [("a/r-1", "n1"), ("b/r-1", "n1"), ("a/r-2", "n2"), ("c/r-3", "n3")]
    granted = windows.grant(due, held={"n3": ["d/r-9"]}, per_node=1)
    assert granted == ["a/r-1", "a/r-2"]
    assert windows.grant(due, held={}, per_node=2) == ["a/r-1", "b/r-1", "a/r-2", "c/r-3"]


def test_grant_never_twice_to_a_holder() -> None:
    assert windows.grant([("a/r-1", "n1")], held={"n1": ["a/r-1"]}, per_node=2) == []


def test_window_makes_replicas_wait_for_permits() -> None:
    owner = {"metadata": {"name": "repo", "namespace": "ns", "uid": "u"}}
    plain = manifests.replica_pod(owner, "repo-1", RepositorySpec(), image="i")
    confined = manifests.replica_pod(
        owner,
        "repo-1",
        RepositorySpec(maintenance_window={"start": "01:00", "durationMinutes": 60}),
        image="i",
    )
    assert "--maintenance-permits" not in plain["spec"]["containers"][0]["command"]
    assert "--maintenance-permits" in confined["spec"]["containers"][0]["command"]
