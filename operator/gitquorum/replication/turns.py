"""Turns for heavy upkeep: one replica of a repository at a time, the leader last.

A repack or a scrub takes a replica's disk and processor for a while; a push needs a
majority of the replicas, so two of three busy at once would slow every push. The leader
hands out turns, as it hands out read leases: a follower whose maintenance or scrub is due
asks ``POST /replication/turn`` every tick, and renews its turn the same way while it works;
it says when it is done (``release``). A turn that is not renewed lapses after
``TURN_SECONDS`` (a follower that died mid-way blocks nobody for long), and a follower whose
renewal is refused stops its work (git is killed, which leaves its repository as it was).
Waiting followers are served in the order they first asked. The leader takes a turn itself
only when no follower has asked within three of its intervals, and not in the first seconds
of its term: it serves the writes, so it goes last. A new term starts with no turn given.

Turns are a courtesy to the quorum, not a safety rule: maintenance is safe on any number of
replicas at once (``housekeeping``), so a leader change that briefly lets two work overlap
does no harm.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from gitquorum import errors
from gitquorum.replication import messages

TURN_SECONDS = 10.0
"""A turn lapses this long after its last renewal."""
PATIENCE_INTERVALS = 3
"""A follower counts as waiting for this many of its own ask intervals after it asked."""
OPENING_SECONDS = 3.0
"""A new term's leader takes no turn of its own this long, so that followers whose work is
due (they ask every second at most) are heard first."""
TASKS = ("maintenance", "scrub")
# A follower asks every tick (at most a second); a longer interval is a mistake or a peer
# trying to keep the leader from ever taking its own turn.
MAX_EVERY = 60.0


@dataclasses.dataclass(frozen=True)
class TurnRequest:
    """Follower -> leader: may it start (or go on with) ``task``? Or it is done (release)."""

    term: int
    replica: str
    task: str
    release: bool = False
    every: float = 1.0
    """Seconds between the follower's asks, so that the leader knows when it stopped."""

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> "TurnRequest":
        task = messages.field(message, "task")
        if task not in TASKS:
            raise errors.MalformedMessage(
                f"task must be one of {', '.join(TASKS)}, not {messages.describe(task)}"
            )
        every = message.get("every", 1.0)
        if (
            isinstance(every, bool)
            or not isinstance(every, int | float)
            or not (0 < every <= MAX_EVERY)
        ):
            raise errors.MalformedMessage(f"every must be in (0, {MAX_EVERY:g}] seconds")
        release = message.get("release", False)
        return cls(
            term=messages.integer(messages.field(message, "term"), "term", minimum=1),
            replica=messages.replica_id(messages.field(message, "replica"), "replica"),
            task=str(task),
            release=messages.boolean(release, "release"),
            every=float(every),
        )


@dataclasses.dataclass
class _Waiting:
    first: float
    last: float
    every: float


class Turns:
    """The leader's book of turns for one term; times are monotonic seconds."""

    def __init__(self, *, leader: str, now: float, lease: float = TURN_SECONDS) -> None:
        self.leader = leader
        self.lease = lease
        self._opened = now
        self.holder: str | None = None
        self.task = ""
        self.until = float("-inf")
        self._waiting: dict[str, _Waiting] = {}

    def ask(self, replica: str, task: str, *, now: float, every: float = 1.0) -> bool:
        """A follower asks for a turn or renews its own; True when it has it (until
        ``now + lease``)."""
        if self.holder == replica and now < self.until:
            self.until = now + self.lease
            self.task = task
            return True
        waiting = self._waiting.setdefault(replica, _Waiting(now, now, every))
        waiting.last, waiting.every = now, every
        if self._held(now) or self._first_in_line(now) != replica:
            return False
        self._give(replica, task, now)
        return True

    def take_own(self, task: str, *, now: float) -> bool:
        """The leader's own turn (or its renewal): only when no follower waits for one."""
        if self.holder == self.leader and now < self.until:
            self.until = now + self.lease
            return True
        if now - self._opened < OPENING_SECONDS:
            return False
        if self._held(now) or self._first_in_line(now) is not None:
            return False
        self._give(self.leader, task, now)
        return True

    def release(self, replica: str) -> None:
        self._waiting.pop(replica, None)
        if self.holder == replica:
            self.holder = None
            self.until = float("-inf")

    def describe(self, *, now: float) -> dict[str, Any]:
        return {
            "holder": self.holder if self._held(now) else None,
            "task": self.task if self._held(now) else "",
            "waiting": sorted(r for r, w in self._waiting.items() if self._still_waiting(w, now)),
        }

    def _held(self, now: float) -> bool:
        return self.holder is not None and now < self.until

    def _still_waiting(self, waiting: _Waiting, now: float) -> bool:
        return now - waiting.last <= PATIENCE_INTERVALS * waiting.every

    def _first_in_line(self, now: float) -> str | None:
        for replica, waiting in list(self._waiting.items()):
            if not self._still_waiting(waiting, now):
                del self._waiting[replica]
        if not self._waiting:
            return None
        return min(self._waiting, key=lambda replica: (self._waiting[replica].first, replica))

    def _give(self, replica: str, task: str, now: float) -> None:
        self._waiting.pop(replica, None)
        self.holder, self.task, self.until = replica, task, now + self.lease
