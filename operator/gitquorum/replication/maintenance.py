"""What a replica's repository needs, decided from a few figures: the heuristics of upkeep.

Replicas keep every push as the pack it came in (``store.git_config``): cheap and exact for
replication, but every lookup then searches every pack index, so an unmaintained repository
gets slower with every push. These pure functions decide, from figures read off the disk
(``Stats``, gathered by ``housekeeping``), what to do about it, after Gitaly's
``OptimizeRepository``, whose reasoning we follow:

- a **geometric repack** (``git repack --geometric=2``) when more packs arrived since the last
  one than a number that grows with the repository's size (a large repository can live with
  a few more packs, and repacking it costs more); it rolls small packs into larger ones so
  that pack sizes form a geometric progression, and packs the loose objects. It removes
  nothing. It refreshes the multi-pack index and its reachability bitmap;
- a **full repack** now and then (``full_repack_interval``), into one pack of everything
  reachable plus a **cruft pack** of the unreachable objects, which remembers when each was
  last written; objects older than ``prune_expiry`` are left out of it, which is the only
  way a replica ever deletes an object (see ``may_prune`` and ``housekeeping``);
- a **commit-graph** with changed-path Bloom filters after a repack, or when missing;
- **packed refs** once the loose refs outnumber a bound that grows with packed-refs' size;
- **expired reflogs** with the full repack, if the repository keeps reflogs at all.

When the replica looks is decided here too (``check_due``: every ``push_interval`` applied
transactions, and every ``interval`` seconds), and when it scrubs (``scrub_due``: every
``scrub_interval``, each replica at its own offset in the period, so that the replicas of a
repository do not all read their disks at once).
"""

import dataclasses
import enum
import hashlib
import math

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR
MIB = 1024 * 1024

MIN_PRUNE_EXPIRY = MINUTE
"""Objects arrive in packs shortly before the refs that reach them move (a push's pack when
git renames it out of quarantine, a transaction's when it is installed, a copy's when the
fetch ends): an expiry below this could prune objects on their way in."""

GEOMETRIC_MIN_UNTRACKED = 2
GEOMETRIC_LOG_BASE = 1.8
"""Gitaly's numbers: 2 new packs below 10 MiB, 7 at 100 MiB, 11 at 1 GiB, 19 at 100 GiB."""
PACK_REFS_MIN_LOOSE = 16
PACK_REFS_LOG_BASE = 1.15
"""Refs are packed once 16 are loose beside a small packed-refs, 32 beside 10 kB (about 100
refs), 65 beside 1 MB (10,000 refs): packing rewrites the whole file, so a larger one waits
for more (Gitaly's numbers)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """When a replica maintains and scrubs its repository; see ``gitquorum replica --help``."""

    push_interval: int = 16
    """Applied transactions between two looks at what maintenance needs; 0: pushes never
    trigger a look. Looking is cheap (a directory listing); what it finds decides the cost."""
    interval: float = HOUR
    """Seconds between two looks when nothing is pushed; 0: time never triggers one."""
    full_repack_interval: float = 5 * DAY
    """Seconds between full repacks (Gitaly's cooldown): they evict unreachable objects into
    the cruft pack and cost a walk of the whole history."""
    prune_expiry: float = 14 * DAY
    """Seconds an unreachable object is kept after it was last written or found unreachable
    (git's ``gc.pruneExpire``); at least ``MIN_PRUNE_EXPIRY``."""
    ref_history: float = 2 * HOUR
    """Seconds a replaced ref value keeps its objects as if it were still a ref; above the
    longest push (``Limits.request_timeout``, an hour), whose objects may lean on it."""
    scrub_interval: float = DAY
    """Seconds between two scrubs (every object read and checked); 0: never."""
    permits: bool = False
    """Maintain and scrub only under a permit from the controller (``PUT /admin/upkeep``),
    which can then confine the work to a window; repairs never wait for one."""
    loose_object_limit: int = 1024
    """Loose objects that warrant packing them (Gitaly's limit; git's ``gc.auto`` is 6700)."""

    @property
    def tick(self) -> float:
        """Seconds between two looks at what is due: a tenth of the shortest period, within
        [0.05, 1]."""
        periods = [p for p in (self.interval, self.scrub_interval) if p > 0]
        return min(1.0, max(0.05, min(periods, default=10.0) / 10))


@dataclasses.dataclass(frozen=True)
class Stats:
    """What the disk says of a repository's objects and refs (``housekeeping.collect``)."""

    packs: int = 0
    cruft_packs: int = 0
    """Packs of unreachable objects (they have a ``.mtimes`` file)."""
    pack_bytes: int = 0
    midx_packs: int | None = None
    """Packs the multi-pack index covers; None without one."""
    has_bitmap: bool = False
    loose_objects: int = 0
    loose_bytes: int = 0
    stale_loose_objects: int = 0
    """Loose objects older than ``prune_expiry``."""
    has_commit_graph: bool = False
    has_bloom_filters: bool = False
    loose_refs: int = 0
    packed_refs_bytes: int = 0
    has_reflogs: bool = False

    @property
    def size_bytes(self) -> int:
        return self.pack_bytes + self.loose_bytes

    @property
    def untracked_packs(self) -> int:
        """Packs that arrived since the multi-pack index was written."""
        return self.packs - (self.midx_packs or 0)


class Repack(enum.Enum):
    GEOMETRIC = "geometric-repack"
    FULL = "full-repack"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one maintenance run does, in this order: refs, objects, commit-graph."""

    repack: Repack | None = None
    commit_graph: bool = False
    replace_graph_chain: bool = False
    """Rewrite the commit-graph chain whole (after a prune, so no entry outlives its commit)."""
    pack_refs: bool = False
    expire_reflogs: bool = False

    @property
    def empty(self) -> bool:
        return self.tasks() == ()

    def tasks(self) -> tuple[str, ...]:
        """The tasks' names, as logged and counted."""
        names = []
        if self.pack_refs:
            names.append("pack-refs")
        if self.expire_reflogs:
            names.append("expire-reflogs")
        if self.repack is not None:
            names.append(self.repack.value)
        if self.commit_graph:
            names.append("commit-graph")
        return tuple(names)


def allowed_untracked_packs(pack_bytes: int) -> int:
    """How many packs may arrive before a geometric repack: grows with the log of the size."""
    mib = pack_bytes // MIB
    if mib <= 1:
        return GEOMETRIC_MIN_UNTRACKED
    return max(GEOMETRIC_MIN_UNTRACKED, int(math.log(mib) / math.log(GEOMETRIC_LOG_BASE)))


def needs_pack_refs(loose_refs: int, packed_refs_bytes: int) -> bool:
    """Whether the loose refs are many enough, for the size of packed-refs, to pack them."""
    if loose_refs == 0:
        return False
    bound = float(PACK_REFS_MIN_LOOSE)
    if packed_refs_bytes > 100:
        bound = max(bound, math.log(packed_refs_bytes / 100) / math.log(PACK_REFS_LOG_BASE))
    return loose_refs >= int(bound)


def plan(stats: Stats, *, since_full_repack: float | None, settings: Settings) -> Plan:
    """What the repository needs now; ``since_full_repack`` in seconds, None if never."""
    repack = _repack(stats, since_full_repack=since_full_repack, settings=settings)
    has_refs = stats.loose_refs > 0 or stats.packed_refs_bytes > 0
    commit_graph = has_refs and (
        repack is not None or not stats.has_commit_graph or not stats.has_bloom_filters
    )
    return Plan(
        repack=repack,
        commit_graph=commit_graph,
        replace_graph_chain=commit_graph and (repack is Repack.FULL or not stats.has_bloom_filters),
        pack_refs=needs_pack_refs(stats.loose_refs, stats.packed_refs_bytes),
        expire_reflogs=repack is Repack.FULL and stats.has_reflogs,
    )


def _repack(stats: Stats, *, since_full_repack: float | None, settings: Settings) -> Repack | None:
    if stats.packs == 0 and stats.loose_objects == 0:
        return None
    non_cruft = stats.packs - stats.cruft_packs
    overdue = since_full_repack is None or since_full_repack >= settings.full_repack_interval
    if non_cruft > 1 and overdue:
        return Repack.FULL
    if stats.stale_loose_objects > settings.loose_object_limit and overdue:
        return Repack.FULL  # only a full repack can expire them
    if stats.midx_packs is None or not stats.has_bitmap:
        return Repack.GEOMETRIC
    if stats.untracked_packs > allowed_untracked_packs(stats.pack_bytes):
        return Repack.GEOMETRIC
    if stats.loose_objects > settings.loose_object_limit:
        return Repack.GEOMETRIC  # geometric repacks take the loose objects along
    return None


def may_prune(
    *, history_complete: bool, prepared: bool, copying: bool, damaged: bool
) -> str | None:
    """None when a full repack may expire unreachable objects; otherwise why not (it then
    keeps every unreachable object in the cruft pack, to expire at a later one).

    A transaction held prepared may have its files installed while the repack runs, before
    its refs move; a copy fetches objects that no ref reaches until it ends; the history of
    replaced refs must reach back over the whole window; and a damaged repository is not
    made any smaller until it is repaired."""
    if damaged:
        return "the repository is damaged"
    if copying:
        return "a copy from a peer is in progress"
    if prepared:
        return "a transaction is held prepared"
    if not history_complete:
        return "the history of replaced refs does not reach back far enough yet"
    return None


def check_due(*, applied_since: int, seconds_since: float | None, settings: Settings) -> bool:
    """Whether to look at what maintenance needs: after ``push_interval`` applied
    transactions, after ``interval`` seconds, or at the first look (``seconds_since`` None);
    never when both are 0."""
    if seconds_since is None:
        return settings.push_interval > 0 or settings.interval > 0
    if settings.push_interval > 0 and applied_since >= settings.push_interval:
        return True
    return settings.interval > 0 and seconds_since >= settings.interval


def stagger(replica: str, period: float) -> float:
    """This replica's offset in a period, in [0, period): the same on every start, and
    spread across replicas, so that they do not all scrub at once."""
    digest = hashlib.sha256(replica.encode()).digest()
    return period * int.from_bytes(digest[:8], "big") / 2**64


def scrub_due(
    *, last: float | None, started: float, now: float, interval: float, replica: str
) -> bool:
    """Whether a scrub is due: ``interval`` after the last one; a replica never scrubbed
    starts at its offset in the first period after it started (wall-clock seconds)."""
    if interval <= 0:
        return False
    if last is None:
        return now >= started + stagger(replica, interval)
    return now >= last + interval
