"""Where one replicated push spends its time: a trace of named steps, logged per push.

The leader marks the end of each step of a push on the monotonic clock; consecutive marks
give the steps' durations, which add up to the push's time on the server. The steps, in order:

- ``receive-pack``: git reads the pack, checks it and calls the hook (until the hook's
  request reaches the leader);
- ``screen``: rules on the push itself (protected refs);
- ``lock``: waiting for the pushes ahead (one transaction at a time);
- ``stage``: the push's files made ready for the followers: a small push's read (this
  replica links its own into staging within the round, with its record), a large one's
  hard-linked into staging and fsynced;
- ``quorum``: the prepare round, until a majority holds the transaction and the leader's own
  record (with its files) is durable, which git needs before it moves anything;
- ``git-finish``: git moves objects and refs once the hook said yes, and exits;
- ``commit``: the leader's generation recorded and every follower's commit answered (or
  its read lease lapsed).

Beside the steps, times measured from the start of the prepare round: when the leader's own
record was durable (``record``) and when each follower that counted answered its prepare
(``prepare <replica>``): they show which of them the quorum waited for.

The trace is one log line per push (``push trace ...``), which the benchmark reads back.
"""

import dataclasses
import re
import time

STEPS = ("receive-pack", "screen", "lock", "stage", "quorum", "git-finish", "commit")
"""The steps of a push in the order they happen."""

PREFIX = "push trace:"
_FIELD = re.compile(r"(?P<name>[a-z][a-z0-9-]*(?: [A-Za-z0-9._-]+)?)=(?P<ms>[0-9.]+)ms")


@dataclasses.dataclass
class PushTrace:
    """The marks of one push; ``begin`` is when the leader started git receive-pack."""

    # Looked up at each call, not bound once, so that a test can set the clock.
    begin: float = dataclasses.field(default_factory=lambda: time.monotonic())
    steps: dict[str, float] = dataclasses.field(default_factory=dict)
    """Step name to its duration in seconds."""
    round: dict[str, float] = dataclasses.field(default_factory=dict)
    """Within the prepare round: ``record`` and ``prepare <replica>`` to seconds from its start."""
    _last: float = dataclasses.field(init=False)
    _round_start: float = dataclasses.field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._last = self.begin

    def step(self, name: str) -> None:
        """The step ``name`` ended now."""
        now = time.monotonic()
        self.steps[name] = self.steps.get(name, 0.0) + (now - self._last)
        self._last = now
        if name == "stage":
            self._round_start = now

    def answered(self, what: str) -> None:
        """Something of the prepare round (``record``, ``prepare r1``) finished now."""
        self.round[what] = time.monotonic() - self._round_start

    @property
    def total(self) -> float:
        return self._last - self.begin

    def line(self) -> str:
        """The trace as one log line: total, then steps in order, then the round's answers."""
        fields = [f"total={self.total * 1000:.1f}ms"]
        steps = [(name, self.steps[name]) for name in STEPS if name in self.steps]
        for name, seconds in steps + sorted(self.round.items()):
            fields.append(f"{name}={seconds * 1000:.1f}ms")
        return f"{PREFIX} " + " ".join(fields)


def parse(line: str) -> dict[str, float] | None:
    """The fields of a ``push trace`` log line, in milliseconds; None for any other line."""
    at = line.find(PREFIX)
    if at < 0:
        return None
    return {m["name"]: float(m["ms"]) for m in _FIELD.finditer(line[at + len(PREFIX) :])}
