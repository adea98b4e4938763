"""The heuristics of upkeep (``replication.maintenance``): what a repository needs, when a
replica looks and scrubs, and when a full repack may expire objects. Pure functions, tables."""

import ast
import dataclasses
import pathlib

import pytest

from gitquorum.replication import maintenance
from gitquorum.replication.maintenance import MIB, Plan, Repack, Settings, Stats

pytestmark = pytest.mark.unit

DAY = maintenance.DAY
GIB = 1024 * MIB
SETTINGS = Settings()


@pytest.mark.parametrize(
    ("pack_bytes", "allowed"),
    [
        (0, 2),
        (MIB, 2),
        (10 * MIB, 3),
        (100 * MIB, 7),
        (500 * MIB, 10),
        (GIB, 11),
        (5 * GIB, 14),
        (10 * GIB, 15),
        (100 * GIB, 19),
    ],
)
def test_allowed_untracked_packs_grows_with_the_log_of_the_size(
    pack_bytes: int, allowed: int
) -> None:
    assert maintenance.allowed_untracked_packs(pack_bytes) == allowed


@pytest.mark.parametrize(
    ("loose", "packed_bytes", "needed"),
    [
        (0, 0, False),
        (0, 10_000_000, False),
        (15, 0, False),
        (16, 0, True),
        (16, 1_000, True),
        (31, 10_000, False),
        (32, 10_000, True),
        (64, 1_000_000, False),
        (65, 1_000_000, True),
        (81, 100_000_000, False),
        (99, 100_000_000, True),
    ],
)
def test_needs_pack_refs_weighs_loose_refs_against_packed_refs(
    loose: int, packed_bytes: int, needed: bool
) -> None:
    assert maintenance.needs_pack_refs(loose, packed_bytes) is needed


# A repository in good order: one pack under a multi-pack index with a bitmap, a
# commit-graph with Bloom filters, a few loose refs.
TIDY = Stats(
    packs=1,
    pack_bytes=5 * MIB,
    midx_packs=1,
    has_bitmap=True,
    has_commit_graph=True,
    has_bloom_filters=True,
    loose_refs=3,
)
RECENT = 3600.0
"""Seconds since the last full repack: well within the interval."""


def tidy(**changes: object) -> Stats:
    return dataclasses.replace(TIDY, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stats", "since_full", "expected"),
    [
        pytest.param(Stats(), None, Plan(), id="empty repository"),
        pytest.param(TIDY, RECENT, Plan(), id="tidy"),
        pytest.param(
            tidy(midx_packs=None),
            RECENT,
            Plan(repack=Repack.GEOMETRIC, commit_graph=True),
            id="no multi-pack index",
        ),
        pytest.param(
            tidy(has_bitmap=False),
            RECENT,
            Plan(repack=Repack.GEOMETRIC, commit_graph=True),
            id="no bitmap",
        ),
        pytest.param(
            tidy(packs=3, midx_packs=1),
            RECENT,
            Plan(),
            id="two new packs are allowed",
        ),
        pytest.param(
            tidy(packs=4, midx_packs=1),
            RECENT,
            Plan(repack=Repack.GEOMETRIC, commit_graph=True),
            id="three new packs are too many below 10 MiB",
        ),
        pytest.param(
            tidy(packs=8, midx_packs=1, pack_bytes=200 * MIB),
            RECENT,
            Plan(),
            id="seven new packs are allowed at 200 MiB",
        ),
        pytest.param(
            tidy(packs=2, midx_packs=1),
            None,
            Plan(repack=Repack.FULL, commit_graph=True, replace_graph_chain=True),
            id="never fully repacked",
        ),
        pytest.param(
            tidy(packs=2, midx_packs=1),
            6 * DAY,
            Plan(repack=Repack.FULL, commit_graph=True, replace_graph_chain=True),
            id="full repack overdue",
        ),
        pytest.param(
            tidy(packs=2, cruft_packs=1, midx_packs=2),
            6 * DAY,
            Plan(),
            id="one pack and a cruft pack: nothing to roll up",
        ),
        pytest.param(
            tidy(packs=1, midx_packs=1),
            6 * DAY,
            Plan(),
            id="a single pack needs no full repack",
        ),
        pytest.param(
            tidy(loose_objects=1025),
            RECENT,
            Plan(repack=Repack.GEOMETRIC, commit_graph=True),
            id="many loose objects",
        ),
        pytest.param(
            tidy(loose_objects=1024),
            RECENT,
            Plan(),
            id="loose objects at the limit",
        ),
        pytest.param(
            tidy(loose_objects=2000, stale_loose_objects=1500),
            6 * DAY,
            Plan(repack=Repack.FULL, commit_graph=True, replace_graph_chain=True),
            id="many stale loose objects, full repack overdue",
        ),
        pytest.param(
            tidy(loose_objects=2000, stale_loose_objects=1500),
            RECENT,
            Plan(repack=Repack.GEOMETRIC, commit_graph=True),
            id="many stale loose objects, full repack recent",
        ),
        pytest.param(
            tidy(packs=0, midx_packs=None, loose_objects=3),
            RECENT,
            Plan(repack=Repack.GEOMETRIC, commit_graph=True),
            id="only loose objects",
        ),
        pytest.param(
            tidy(has_commit_graph=False, has_bloom_filters=False),
            RECENT,
            Plan(commit_graph=True, replace_graph_chain=True),
            id="no commit-graph",
        ),
        pytest.param(
            tidy(has_bloom_filters=False),
            RECENT,
            Plan(commit_graph=True, replace_graph_chain=True),
            id="commit-graph without Bloom filters",
        ),
        pytest.param(
            tidy(has_commit_graph=False, loose_refs=0, packed_refs_bytes=0),
            RECENT,
            Plan(),
            id="no refs: no commit-graph",
        ),
        pytest.param(
            tidy(midx_packs=None, loose_refs=0),
            RECENT,
            Plan(repack=Repack.GEOMETRIC),
            id="no refs: repack without commit-graph",
        ),
        pytest.param(
            tidy(loose_refs=16),
            RECENT,
            Plan(pack_refs=True),
            id="many loose refs",
        ),
        pytest.param(
            tidy(packs=2, has_reflogs=True),
            None,
            Plan(
                repack=Repack.FULL,
                commit_graph=True,
                replace_graph_chain=True,
                expire_reflogs=True,
            ),
            id="reflogs expire with the full repack",
        ),
        pytest.param(
            tidy(has_reflogs=True),
            None,
            Plan(),
            id="reflogs alone wait",
        ),
    ],
)
def test_plan_follows_the_heuristics(
    stats: Stats, since_full: float | None, expected: Plan
) -> None:
    assert maintenance.plan(stats, since_full_repack=since_full, settings=SETTINGS) == expected


def test_plan_full_repack_interval_is_a_setting() -> None:
    stats = tidy(packs=2, midx_packs=1)
    often = Settings(full_repack_interval=60.0)
    assert maintenance.plan(stats, since_full_repack=61.0, settings=often).repack is Repack.FULL
    assert maintenance.plan(stats, since_full_repack=59.0, settings=often).repack is None


def test_plan_tasks_are_named_in_the_order_they_run() -> None:
    plan = Plan(repack=Repack.FULL, commit_graph=True, pack_refs=True, expire_reflogs=True)
    assert plan.tasks() == ("pack-refs", "expire-reflogs", "full-repack", "commit-graph")
    assert Plan().empty and Plan().tasks() == ()
    assert not Plan(pack_refs=True).empty


def test_stats_size_and_untracked_packs() -> None:
    stats = Stats(packs=5, pack_bytes=100, loose_bytes=20, midx_packs=2)
    assert (stats.size_bytes, stats.untracked_packs) == (120, 3)
    assert Stats(packs=4).untracked_packs == 4


@pytest.mark.parametrize(
    ("applied", "since", "settings", "due"),
    [
        (0, None, SETTINGS, True),
        (0, 0.0, SETTINGS, False),
        (15, 10.0, SETTINGS, False),
        (16, 10.0, SETTINGS, True),
        (0, 3599.0, SETTINGS, False),
        (0, 3600.0, SETTINGS, True),
        (1000, 10.0, Settings(push_interval=0), False),
        (0, 10.0**6, Settings(interval=0), False),
        (0, None, Settings(push_interval=0, interval=0), False),
        (10**6, 10.0**6, Settings(push_interval=0, interval=0), False),
        (3, 1.0, Settings(push_interval=3), True),
    ],
)
def test_check_due_on_pushes_and_time(
    applied: int, since: float | None, settings: Settings, due: bool
) -> None:
    assert (
        maintenance.check_due(applied_since=applied, seconds_since=since, settings=settings) is due
    )


@pytest.mark.parametrize(
    ("history", "prepared", "copying", "damaged", "reason"),
    [
        (True, False, False, False, None),
        (False, False, False, False, "history"),
        (True, True, False, False, "prepared"),
        (True, False, True, False, "copy"),
        (True, False, False, True, "damaged"),
        (False, True, True, True, "damaged"),
    ],
)
def test_may_prune_only_when_nothing_could_still_need_an_unreachable_object(
    history: bool, prepared: bool, copying: bool, damaged: bool, reason: str | None
) -> None:
    verdict = maintenance.may_prune(
        history_complete=history, prepared=prepared, copying=copying, damaged=damaged
    )
    if reason is None:
        assert verdict is None
    else:
        assert verdict is not None and reason in verdict


def test_stagger_is_stable_within_the_period_and_differs_between_replicas() -> None:
    offsets = [maintenance.stagger(f"r{n}", 100.0) for n in range(5)]
    assert all(0 <= offset < 100.0 for offset in offsets)
    assert len(set(offsets)) == 5
    assert maintenance.stagger("r1", 100.0) == offsets[1]
    assert maintenance.stagger("r1", 200.0) == pytest.approx(2 * offsets[1])


@pytest.mark.parametrize(
    ("last", "now", "interval", "due"),
    [
        (None, 1000.0, 0.0, False),
        (950.0, 1000.0, 0.0, False),
        (950.0, 1000.0, 60.0, False),
        (940.0, 1000.0, 60.0, True),
        (900.0, 1000.0, 60.0, True),
    ],
)
def test_scrub_due_an_interval_after_the_last(
    last: float | None, now: float, interval: float, due: bool
) -> None:
    assert (
        maintenance.scrub_due(last=last, started=0.0, now=now, interval=interval, replica="r0")
        is due
    )


def test_scrub_due_first_at_the_replicas_offset() -> None:
    offset = maintenance.stagger("r2", 60.0)
    started = 1000.0
    before = started + offset - 0.01
    at = started + offset
    assert not maintenance.scrub_due(
        last=None, started=started, now=before, interval=60.0, replica="r2"
    )
    assert maintenance.scrub_due(last=None, started=started, now=at, interval=60.0, replica="r2")


@pytest.mark.parametrize(
    ("settings", "tick"),
    [
        (Settings(), 1.0),
        (Settings(scrub_interval=2.0), 0.2),
        (Settings(scrub_interval=0.1), 0.05),
        (Settings(interval=0.0, scrub_interval=0.0), 1.0),
        (Settings(interval=5.0, scrub_interval=0.0), 0.5),
    ],
)
def test_settings_tick_is_a_tenth_of_the_shortest_period(settings: Settings, tick: float) -> None:
    assert settings.tick == pytest.approx(tick)


PURE = ("maintenance.py", "turns.py", "history.py")


@pytest.mark.parametrize("module", PURE)
def test_heuristics_run_no_git_and_touch_no_disk(module: str) -> None:
    path = pathlib.Path(maintenance.__file__).with_name(module)
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    forbidden = ("os", "asyncio", "subprocess", "pathlib", "shutil", "gitquorum.server")
    assert sorted(n for n in imported if n.startswith(forbidden)) == []
