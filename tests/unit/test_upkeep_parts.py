"""The parts of upkeep that need no git: the leader's book of turns, the history of replaced
refs, fsck's findings sorted, and what the status and the record file carry."""

import dataclasses
import pathlib

import pytest

from gitquorum import errors
from gitquorum.replication import history, ledger, reports, scrubbing, turns

pytestmark = pytest.mark.unit

LEASE = turns.TURN_SECONDS
OPEN = turns.OPENING_SECONDS


# -- turns --------------------------------------------------------------------------------------


def test_turns_one_holder_at_a_time() -> None:
    book = turns.Turns(leader="r0", now=-OPEN)
    assert book.ask("r1", "maintenance", now=0.0)
    assert not book.ask("r2", "scrub", now=0.5)
    assert book.ask("r1", "maintenance", now=1.0)  # a renewal
    assert book.holder == "r1" and book.until == pytest.approx(1.0 + LEASE)


def test_turns_release_lets_the_next_in() -> None:
    book = turns.Turns(leader="r0", now=-OPEN)
    assert book.ask("r1", "maintenance", now=0.0)
    assert not book.ask("r2", "scrub", now=0.1)
    book.release("r1")
    assert book.ask("r2", "scrub", now=0.2)


def test_turns_lapse_without_renewal() -> None:
    book = turns.Turns(leader="r0", now=-OPEN)
    assert book.ask("r1", "maintenance", now=0.0)
    assert not book.ask("r2", "scrub", now=LEASE - 0.1)
    assert book.ask("r2", "scrub", now=LEASE + 0.1)
    assert not book.ask("r1", "maintenance", now=LEASE + 0.2)  # its renewal comes too late


def test_turns_go_to_followers_in_the_order_they_first_asked() -> None:
    book = turns.Turns(leader="r0", now=-OPEN)
    assert book.ask("r1", "maintenance", now=0.0)
    assert not book.ask("r3", "scrub", now=0.1)
    assert not book.ask("r2", "scrub", now=0.2)
    assert not book.ask("r2", "scrub", now=0.9)
    book.release("r1")
    assert not book.ask("r2", "scrub", now=1.0)  # r3 asked first and still waits
    assert book.ask("r3", "scrub", now=1.1)
    book.release("r3")
    assert book.ask("r2", "scrub", now=1.2)


def test_turns_forget_a_follower_that_stopped_asking() -> None:
    book = turns.Turns(leader="r0", now=-OPEN)
    assert book.ask("r1", "maintenance", now=0.0)
    assert not book.ask("r2", "scrub", now=0.1, every=0.5)
    book.release("r1")
    late = 0.1 + turns.PATIENCE_INTERVALS * 0.5 + 0.01
    assert book.ask("r3", "scrub", now=late)


def test_turns_leader_goes_last() -> None:
    book = turns.Turns(leader="r0", now=-OPEN)
    assert book.ask("r1", "maintenance", now=0.0)
    assert not book.take_own("maintenance", now=0.1)  # r1 holds it
    book.release("r1")
    assert book.take_own("scrub", now=0.2)  # nobody waits
    assert book.take_own("scrub", now=0.3)  # its own renewal
    assert not book.ask("r2", "maintenance", now=0.4)  # the leader holds it
    book.release("r0")
    assert book.ask("r2", "maintenance", now=0.5)


def test_turns_leader_waits_while_a_follower_is_waiting() -> None:
    book = turns.Turns(leader="r0", now=-OPEN)
    assert book.ask("r1", "maintenance", now=0.0)
    assert not book.ask("r2", "scrub", now=0.0, every=1.0)
    book.release("r1")
    assert not book.take_own("maintenance", now=1.0)  # r2 still asks every second
    patience = turns.PATIENCE_INTERVALS * 1.0
    assert not book.take_own("maintenance", now=patience)
    assert book.take_own("maintenance", now=patience + 0.01)  # r2 gave up


def test_turns_new_leader_lets_followers_ask_first() -> None:
    book = turns.Turns(leader="r0", now=100.0)
    assert not book.take_own("scrub", now=100.0 + OPEN - 0.1)
    assert book.ask("r1", "scrub", now=100.5)  # followers are served at once
    book.release("r1")
    assert book.take_own("scrub", now=100.0 + OPEN + 0.1)


def test_turns_describe() -> None:
    book = turns.Turns(leader="r0", now=-OPEN)
    book.ask("r1", "scrub", now=0.0)
    book.ask("r2", "maintenance", now=0.1)
    assert book.describe(now=0.2) == {"holder": "r1", "task": "scrub", "waiting": ["r2"]}
    assert book.describe(now=LEASE + 1)["holder"] is None


def test_turn_request_parses() -> None:
    message = {"term": 3, "replica": "r1", "task": "scrub", "every": 0.25}
    request = turns.TurnRequest.parse(message)
    assert request == turns.TurnRequest(3, "r1", "scrub", release=False, every=0.25)
    released = turns.TurnRequest.parse({**message, "release": True})
    assert released.release


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("task", "gc"),
        ("task", None),
        ("every", 0),
        ("every", 61),
        ("every", True),
        ("every", "1"),
        ("term", 0),
        ("term", "3"),
        ("replica", "../r1"),
        ("release", "yes"),
    ],
)
def test_rejects_turn_request_with_malformed_field(key: str, value: object) -> None:
    message: dict[str, object] = {"term": 3, "replica": "r1", "task": "scrub", "every": 1.0}
    message[key] = value
    with pytest.raises(errors.MalformedMessage):
        turns.TurnRequest.parse(message)


def test_rejects_turn_request_without_task() -> None:
    with pytest.raises(errors.MalformedMessage, match="task"):
        turns.TurnRequest.parse({"term": 3, "replica": "r1"})


# -- history ------------------------------------------------------------------------------------


def test_history_since_lists_distinct_values_oldest_first() -> None:
    kept = history.History(now=0.0)
    kept.record(["a" * 40, "b" * 40], now=10.0)
    kept.record(["a" * 40, "c" * 40], now=20.0)
    assert kept.since(0.0) == ["a" * 40, "b" * 40, "c" * 40]
    assert kept.since(15.0) == ["a" * 40, "c" * 40]
    assert kept.since(21.0) == []


def test_history_covers_only_what_it_saw() -> None:
    kept = history.History(now=100.0)
    assert not kept.covers(99.0)
    assert kept.covers(100.0)
    kept.record(["a" * 40], now=150.0)
    kept.forget(120.0)
    assert not kept.covers(110.0)
    assert kept.covers(120.0)
    assert kept.since(0.0) == ["a" * 40]
    kept.forget(160.0)
    assert len(kept) == 0


def test_history_bounded_drops_the_oldest_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "MAX_ENTRIES", 3)
    kept = history.History(now=0.0)
    for at in range(1, 6):
        kept.record([f"{at:040d}"], now=float(at))
    assert len(kept) == 3
    assert kept.since(0.0) == [f"{at:040d}" for at in (3, 4, 5)]
    assert not kept.covers(2.0)
    assert kept.covers(2.5)


# -- fsck's findings ----------------------------------------------------------------------------

PACK = "pack-9586106917f8eeeab05eaa0739c2b302459b3fd7"
FLIPPED_PACK = f"""\
error: ./objects/pack/{PACK}.pack pack checksum mismatch
error: index CRC mismatch for object a4627536e8f6f159348935b1899958184f1fd3ba from ./objects/pack/{PACK}.pack at offset 2747
error: inflate: data stream error (incorrect data check)
error: cannot unpack a4627536e8f6f159348935b1899958184f1fd3ba from ./objects/pack/{PACK}.pack at offset 2747
notice: HEAD points to an unborn branch (master)
"""  # noqa: E501
MISSING = """\
broken link from  commit d3092a19685a3b663492142292aa41d59d749acb
              to    tree 9c065eba2bdefb94c84339849c3fe6fc12186b6c
broken link from  commit 69a56520225b9d76cef9c27c1d58aff403836bd1
              to  commit e5a6f19ecf958a8d048255a58ea77c33209099a4
missing tree 9c065eba2bdefb94c84339849c3fe6fc12186b6c
missing commit e5a6f19ecf958a8d048255a58ea77c33209099a4
"""
LOOSE = "335b639414f7ed4fa4592cb18b83757cbd0be2ba"
CORRUPT_LOOSE = f"""\
missing commit {LOOSE}
error: inflate: data stream error (incorrect header check)
error: unable to unpack header of ./objects/33/{LOOSE[2:]}
error: {LOOSE}: object corrupt or missing: ./objects/33/{LOOSE[2:]}
"""
MISPLACED = """\
error: d00491fd7e5bb6fa28c517a0bb32b8b506539d4d: hash-path mismatch, found at: ./objects/0f/bef63bfc8b58a623b154a2903d54d51eeccb36
"""  # noqa: E501


def test_parse_flipped_bytes_name_the_pack() -> None:
    findings = scrubbing.parse(FLIPPED_PACK, returncode=4)
    assert findings.bad_packs == {PACK}
    assert findings.damaged and findings.attributed
    assert not findings.missing and not findings.bad_loose
    assert PACK in findings.summary()


def test_parse_missing_objects_from_broken_links() -> None:
    findings = scrubbing.parse(MISSING, returncode=2)
    assert findings.missing == {
        "9c065eba2bdefb94c84339849c3fe6fc12186b6c",
        "e5a6f19ecf958a8d048255a58ea77c33209099a4",
    }
    assert findings.damaged and not findings.bad_packs


def test_parse_corrupt_loose_object_is_set_aside_and_fetched() -> None:
    findings = scrubbing.parse(CORRUPT_LOOSE, returncode=3)
    assert findings.bad_loose == {LOOSE}
    assert findings.missing == {LOOSE}
    assert findings.attributed  # the inflate line is about that object


def test_parse_object_in_the_wrong_file() -> None:
    findings = scrubbing.parse(MISPLACED, returncode=1)
    assert findings.bad_loose == {"0fbef63bfc8b58a623b154a2903d54d51eeccb36"}


def test_parse_ref_to_nowhere_is_a_missing_object() -> None:
    line = "error: refs/heads/main: invalid sha1 pointer " + "1" * 40 + "\n"
    assert scrubbing.parse(line, returncode=2).missing == {"1" * 40}


def test_parse_clean_output_is_no_damage() -> None:
    findings = scrubbing.parse("notice: HEAD points to an unborn branch (master)\n", returncode=0)
    assert not findings.damaged and findings.summary() == "no damage"


def test_parse_content_rules_are_not_damage() -> None:
    line = "error in tree " + "2" * 40 + ": zeroPaddedFilemode: contains zero-padded file modes\n"
    findings = scrubbing.parse(line, returncode=1)
    assert not findings.damaged
    assert findings.content and "content" in findings.summary()


def test_parse_derived_indexes_out_of_step() -> None:
    line = "error: commit-graph generation for commit " + "3" * 40 + " is 1 < 2\n"
    findings = scrubbing.parse(line, returncode=1)
    assert findings.derived and findings.damaged


def test_parse_unattributed_damage_asks_for_a_rebuild() -> None:
    findings = scrubbing.parse("fatal: cannot read the object database\n", returncode=128)
    assert findings.damaged and not findings.attributed
    assert "cannot read" in findings.summary()


def test_parse_failure_without_a_word_is_damage() -> None:
    findings = scrubbing.parse("", returncode=5)
    assert findings.damaged and "status 5" in findings.summary()


# -- status and record --------------------------------------------------------------------------

RUN = reports.Run(at=1700000000.5, outcome="ok", seconds=0.25, detail="geometric-repack 0.2 s")
UPKEEP = reports.Upkeep(
    packs=3,
    cruft_packs=1,
    loose_objects=2,
    size_bytes=4096,
    damaged=True,
    damage="1 damaged pack(s)",
    due=("repair",),
    running="repair",
    permits=True,
    permit_seconds=30.0,
    last_maintenance=RUN,
    last_scrub=dataclasses.replace(RUN, outcome="damaged"),
    last_repair=None,
    last_full_repack=1700000000.0,
    turns={"holder": None, "task": "", "waiting": []},
)


def test_upkeep_status_reads_back_to_the_same_value() -> None:
    assert reports.Upkeep.from_json(UPKEEP.to_json()) == UPKEEP


def test_status_with_upkeep_reads_back_and_without_has_no_key() -> None:
    status = reports.ReplicaStatus(
        replica="r1",
        role="Follower",
        term=1,
        leader="r0",
        configured_term=1,
        configuration=None,
        generation=1,
        checksum="a" * 64,
        transaction="b" * 32,
        position=reports.decisions.Position(1, 1, 1),
        eligible=True,
        readable=False,
        writable=False,
        state="Damaged",
        upkeep=UPKEEP,
    )
    assert reports.ReplicaStatus.from_json(status.to_json()) == status
    older = dataclasses.replace(status, upkeep=None)
    assert "upkeep" not in older.to_json()
    assert reports.ReplicaStatus.from_json(older.to_json()).upkeep is None


@pytest.mark.parametrize(
    "value",
    [None, "damaged", [1, 2], {"packs": "many", "damaged": "yes", "lastScrub": {"at": "x"}}],
)
def test_upkeep_status_from_another_release_is_read_leniently(value: object) -> None:
    read = reports.Upkeep.from_json(value)
    if read is not None:
        assert read.packs == 0 and read.damaged is False and read.last_scrub is None


def test_record_survives_a_restart(tmp_path: pathlib.Path) -> None:
    path = tmp_path / ledger.RECORD_FILE
    record = ledger.Record(
        last_maintenance=RUN, last_scrub=RUN, last_full_repack=1.5, damage="missing objects"
    )
    ledger.save(path, record)
    assert ledger.load(path) == record


@pytest.mark.parametrize("text", ["{not json", "[]", '{"format": 99}'])
def test_record_unreadable_starts_afresh(tmp_path: pathlib.Path, text: str) -> None:
    path = tmp_path / ledger.RECORD_FILE
    path.write_text(text)
    assert ledger.load(path) == ledger.Record()
    assert ledger.load(tmp_path / "absent.json") == ledger.Record()
