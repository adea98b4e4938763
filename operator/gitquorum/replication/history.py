"""The ref values a replica replaced lately, so that maintenance never removes what they reach.

git receive-pack accepts a push whose objects lean on objects the repository already holds:
a client leaves out whatever is reachable from the refs it was shown when its push began.
Should another push delete or rewind one of those refs meanwhile, those objects become
unreachable, and a repack that prunes them before the first push lands would leave it
pointing at nothing: git's own maintenance lives with that race. A replica moves its refs
only through its store, so it knows every value it replaced and when: maintenance keeps
everything reachable from the values replaced within a window (``Settings.ref_history``) as
if they were still refs. The window covers the longest push (the server ends any request
after ``Limits.request_timeout``); the history is kept in memory, so after a start it is
complete only from the start on, and maintenance prunes nothing until the window is.
"""

import collections
import math
import time
from collections.abc import Iterable

MAX_ENTRIES = 1_000_000
"""Bounds the memory of a repository rewritten without pause (about 100 bytes an entry);
what is dropped makes the history incomplete before it, so pruning waits."""


class History:
    """Object ids that refs of this replica named until a given moment (wall-clock seconds)."""

    def __init__(self, *, now: float | None = None) -> None:
        self.complete_since = time.time() if now is None else now
        """Every value replaced since then is recorded (or was forgotten on purpose)."""
        self._forgotten_before = float("-inf")
        self._entries: collections.deque[tuple[float, str]] = collections.deque()

    def record(self, object_ids: Iterable[str], *, now: float | None = None) -> None:
        """Notes values about to be replaced; called before the refs move."""
        at = time.time() if now is None else now
        self._entries.extend((at, object_id) for object_id in object_ids)
        while len(self._entries) > MAX_ENTRIES:
            dropped, _ = self._entries.popleft()
            # What was replaced at that very moment may be lost too: complete only after it.
            self.complete_since = max(self.complete_since, math.nextafter(dropped, math.inf))

    def covers(self, moment: float) -> bool:
        """Whether every value replaced since ``moment`` is known."""
        return moment >= self.complete_since and moment >= self._forgotten_before

    def since(self, moment: float) -> list[str]:
        """The distinct values replaced at or after ``moment``, oldest first."""
        seen: dict[str, None] = {}
        for at, object_id in self._entries:
            if at >= moment:
                seen.setdefault(object_id)
        return list(seen)

    def forget(self, before: float) -> None:
        """Drops what was replaced before ``before``: nobody asks about it any more."""
        self._forgotten_before = max(self._forgotten_before, before)
        while self._entries and self._entries[0][0] < before:
            self._entries.popleft()

    def __len__(self) -> int:
        return len(self._entries)
