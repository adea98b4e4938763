"""Backup schedules: five-field cron in UTC."""

import datetime

import pytest

from gitquorum.backup import schedule

pytestmark = pytest.mark.unit

UTC = datetime.UTC
START = datetime.datetime(2026, 3, 2, 12, 30, 15, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    "expression",
    ["0 3 * * *", "*/15 * * * *", "0 0 * * MON", "0 0 1 JAN *", "@daily", " 5 4 * * 0 "],
)
def test_validate_accepts(expression: str) -> None:
    assert schedule.validate(expression) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "has 0 fields"),
        ("0 3 * *", "has 4 fields, not the five of cron"),
        ("0 0 3 * * *", "has 6 fields"),
        ("61 * * * *", "Bad minute"),
        ("* 24 * * *", "Bad hour"),
        ("0 0 31 2 *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("x * * * *", "Bad minute"),
        ("@sometimes", "unknown shorthand"),
    ],
)
def test_validate_explains_refusal(expression: str, message: str) -> None:
    problem = schedule.validate(expression)
    assert problem is not None and message in problem


def test_next_after_is_strictly_later() -> None:
    assert schedule.next_after("30 12 * * *", START.replace(second=0)) == datetime.datetime(
        2026, 3, 3, 12, 30, tzinfo=UTC
    )


def test_next_after_every_quarter_hour() -> None:
    assert schedule.next_after("*/15 * * * *", START) == START.replace(minute=45, second=0)


def test_next_after_weekday() -> None:
    assert schedule.next_after("0 2 * * SUN", START) == datetime.datetime(
        2026, 3, 8, 2, 0, tzinfo=UTC
    )


def test_next_after_is_in_utc_for_other_zones() -> None:
    local = START.astimezone(datetime.timezone(datetime.timedelta(hours=-5)))
    moment = schedule.next_after("0 3 * * *", local)
    assert moment == datetime.datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
    assert moment.utcoffset() == datetime.timedelta(0)


def test_next_after_shorthand() -> None:
    assert schedule.next_after("@hourly", START) == datetime.datetime(2026, 3, 2, 13, tzinfo=UTC)


def test_next_after_refuses_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_after("@daily", START.replace(tzinfo=None))


def test_next_after_refuses_bad_expression() -> None:
    with pytest.raises(ValueError, match="Bad hour"):
        schedule.next_after("0 25 * * *", START)
