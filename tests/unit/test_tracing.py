"""The push trace: steps that add up to the total, and a log line the benchmark reads back."""

import pytest

from gitquorum.replication import tracing

pytestmark = pytest.mark.unit


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(tracing.time, "monotonic", fake)
    return fake


def _traced(clock: _Clock) -> tracing.PushTrace:
    trace = tracing.PushTrace()
    for step, seconds in [("receive-pack", 0.020), ("screen", 0.001), ("lock", 0.0)]:
        clock.now += seconds
        trace.step(step)
    clock.now += 0.002
    trace.step("stage")
    clock.now += 0.004
    trace.answered("prepare r2")
    clock.now += 0.003
    trace.answered("record")
    trace.step("quorum")
    for step, seconds in [("git-finish", 0.010), ("commit", 0.005)]:
        clock.now += seconds
        trace.step(step)
    return trace


def test_trace_steps_add_up_to_the_total(clock: _Clock):
    trace = _traced(clock)
    assert list(trace.steps) == list(tracing.STEPS)
    assert sum(trace.steps.values()) == pytest.approx(trace.total)
    assert trace.total == pytest.approx(0.045)


def test_trace_round_answers_count_from_the_start_of_the_prepare_round(clock: _Clock):
    trace = _traced(clock)
    assert trace.round == {
        "prepare r2": pytest.approx(0.004),
        "record": pytest.approx(0.007),
    }
    assert trace.steps["quorum"] == pytest.approx(trace.round["record"])


def test_trace_line_parses_back_to_its_fields(clock: _Clock):
    line = "INFO gitquorum.replication.pushing repository bench: " + _traced(clock).line()
    fields = tracing.parse(line)
    assert fields == {
        "total": 45.0,
        "receive-pack": 20.0,
        "screen": 1.0,
        "lock": 0.0,
        "stage": 2.0,
        "quorum": 7.0,
        "git-finish": 10.0,
        "commit": 5.0,
        "prepare r2": 4.0,
        "record": 7.0,
    }


def test_trace_parse_ignores_other_lines():
    assert tracing.parse("INFO push decided in 12 ms") is None
