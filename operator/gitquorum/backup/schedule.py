"""When the next scheduled backup is due: standard five-field cron expressions, in UTC.

cronsim evaluates the expressions (Debian cron's rules, including its OR of day-of-month and
day-of-week). We accept only the five standard fields, plus the ``@hourly``-style shorthands
Kubernetes CronJobs accept, so that a schedule means the same here as in any cron a user knows;
cronsim's optional seconds field would not.
"""

import datetime

import cronsim

_SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = 5


def validate(expression: str) -> str | None:
    """Why ``expression`` is not a usable schedule, or None if it is."""
    try:
        next_after(expression, datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    except ValueError as error:
        return str(error)
    return None


def next_after(expression: str, after: datetime.datetime) -> datetime.datetime:
    """The first time, in UTC and strictly after ``after``, that ``expression`` names;
    ValueError with a readable message for an expression that is not a schedule."""
    if after.tzinfo is None:
        raise ValueError("the time to schedule after must be timezone-aware")
    fields = _expand(expression)
    start = after.astimezone(datetime.UTC)
    try:
        moments = cronsim.CronSim(fields, start)
        moment = next(moments)
    except cronsim.CronSimError as error:
        raise ValueError(f"schedule {expression!r}: {error}") from error
    except StopIteration as error:
        # cronsim looks 50 years ahead: "0 0 31 2 *" style dates that never come.
        raise ValueError(f"schedule {expression!r} never fires") from error
    return moment


def _expand(expression: str) -> str:
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in _SHORTHANDS:
            raise ValueError(
                f"schedule {expression!r}: unknown shorthand; use one of "
                + ", ".join(sorted(_SHORTHANDS))
            )
        return _SHORTHANDS[text.lower()]
    if len(text.split()) != _FIELDS:
        raise ValueError(
            f"schedule {expression!r} has {len(text.split())} fields, not the five of cron "
            "(minute hour day-of-month month day-of-week)"
        )
    return text
