"""Upkeep on running ``gitquorum replica`` processes: pack counts stay bounded, one replica
works at a time, turns and permits on the wire, damage found and repaired within a scrub
period with nothing acknowledged lost and nothing damaged served."""

import datetime
import itertools
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from gitquorum.replication import invocation
from tests import waiting
from tests.integration.helpers import Git
from tests.integration.replicas import Replicas, http_error

pytestmark = pytest.mark.integration

QUIET = ("--maintenance-pushes", "0", "--maintenance-interval", "0", "--scrub-interval", "0")
"""No upkeep of its own accord: the test drives it."""
SCRUB_PERIOD = 1.5
PACK_BOUND = 6
_RUN = re.compile(
    r"^(\S+ \S+) INFO \S+ repository \S+: (maintenance|scrub) on (r\d) ok in ([\d.]+) s", re.M
)


@pytest.fixture
def started(tmp_path: pathlib.Path, auth_file: pathlib.Path) -> Iterator[list[Replicas]]:
    """Starts replica groups the test makes, and stops them afterwards."""
    groups: list[Replicas] = []
    yield groups
    for group in groups:
        group.stop_all()


def _group(
    started: list[Replicas], tmp_path: pathlib.Path, auth_file: pathlib.Path, *args: str
) -> Replicas:
    group = Replicas(tmp_path / "replicas", auth_file, 3, extra_args=args)
    started.append(group)
    group.start_all()
    return group


def _work(git: Git, tmp_path: pathlib.Path) -> pathlib.Path:
    work = tmp_path / "work"
    git.run("init", "-q", str(work))
    git.run("config", "core.abbrev", "40", cwd=work)
    return work


def _repository(replicas: Replicas, replica: str) -> pathlib.Path:
    return replicas.data(replica) / "repositories" / "repository.git"


def _packs(replicas: Replicas, replica: str) -> int:
    return len(list((_repository(replicas, replica) / "objects" / "pack").glob("*.pack")))


def _upkeep(replicas: Replicas, replica: str) -> dict[str, Any]:
    upkeep: dict[str, Any] = replicas.status(replica)["upkeep"]
    return upkeep


def _metrics(replicas: Replicas, replica: str) -> dict[str, float]:
    url = f"http://127.0.0.1:{replicas.ports[replica][0]}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^([^#\s]\S*) (\S+)$", text, re.M)}


def _fsck(git: Git, replicas: Replicas, replica: str) -> None:
    git.run("fsck", "--full", "--strict", "--no-dangling", cwd=_repository(replicas, replica))


def _runs(replicas: Replicas) -> list[tuple[float, float, str, str]]:
    """(start, end, replica, what) of every maintenance run and scrub, from the logs."""
    runs = []
    for replica in replicas.ids:
        for stamp, what, who, seconds in _RUN.findall(replicas.log(replica)):
            end = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            runs.append((end - float(seconds), end, who, what))
    return sorted(runs)


def test_upkeep_keeps_the_pack_count_bounded_on_every_replica(
    git: Git, started: list[Replicas], tmp_path: pathlib.Path, auth_file: pathlib.Path
) -> None:
    replicas = _group(
        started,
        tmp_path,
        auth_file,
        *("--maintenance-pushes", "3", "--maintenance-interval", "0.5"),
        *("--scrub-interval", "1"),
    )
    work = _work(git, tmp_path)
    pushes = 30
    for index in range(pushes):
        git.commit(work, f"file{index % 5}", f"{index}\n")
        git.run("push", "-q", replicas.url(replicas.ids[index % 3]), "main", cwd=work)
    head = git.out("rev-parse", "HEAD", cwd=work)

    def bounded() -> bool:
        return all(
            _packs(replicas, replica) <= PACK_BOUND
            and (_upkeep(replicas, replica)["lastMaintenance"] or {}).get("outcome") == "ok"
            for replica in replicas.ids
        )

    waiting.until(
        f"at most {PACK_BOUND} packs on every replica after {pushes} pushes",
        bounded,
        timeout=20,
        seen=lambda: {r: (_packs(replicas, r), _upkeep(replicas, r)) for r in replicas.ids},
    )
    replicas.wait_in_sync()
    for replica in replicas.ids:
        upkeep = _upkeep(replicas, replica)
        assert upkeep["packs"] <= PACK_BOUND and upkeep["sizeBytes"] > 0, upkeep
        assert upkeep["lastMaintenance"]["seconds"] >= 0 and upkeep["lastFullRepack"] is not None
        scraped = _metrics(replicas, replica)
        assert scraped["gitquorum_repository_packs"] <= PACK_BOUND
        assert scraped['gitquorum_upkeep_runs_total{kind="maintenance",outcome="ok"}'] >= 1
        repacks = [k for k in scraped if k.startswith("gitquorum_maintenance_tasks_total")]
        assert any("repack" in key and scraped[key] >= 1 for key in repacks), repacks
        assert scraped["gitquorum_maintenance_last_run_timestamp_seconds"] > 0
        assert scraped["gitquorum_replica_damaged"] == 0
        assert f"repository repository.git: maintenance on {replica} ok in" in replicas.log(replica)
        remote = git.out("ls-remote", replicas.url(replica), "refs/heads/main")
        assert remote.split()[0] == head
    runs = _runs(replicas)
    assert {who for _, _, who, what in runs if what == "maintenance"} == set(replicas.ids)
    for (_, end, who, what), (start, _, other, then) in itertools.pairwise(runs):
        # One at a time: a turn is given back only after the run's log line.
        assert start >= end - 0.002, f"{who}'s {what} and {other}'s {then} overlap"
    replicas.stop_all()
    for replica in replicas.ids:
        _fsck(git, replicas, replica)


def test_upkeep_turns_one_at_a_time_on_the_wire(
    started: list[Replicas], tmp_path: pathlib.Path, auth_file: pathlib.Path
) -> None:
    replicas = _group(started, tmp_path, auth_file, *QUIET)

    def ask(replica: str, via: str = "r0", **extra: object) -> dict[str, Any]:
        message = {"term": 1, "replica": replica, "task": "scrub", "every": 1.0, **extra}
        return replicas.call(via, "POST", "/replication/turn", message)

    assert ask("r1")["granted"] is True
    refused = ask("r2")
    assert refused["granted"] is False and refused["holder"] == "r1"
    assert _upkeep(replicas, "r0")["turns"] == {"holder": "r1", "task": "scrub", "waiting": ["r2"]}
    ask("r1", release=True)
    assert ask("r2")["granted"] is True
    assert ask("r1", via="r2")["granted"] is False  # a follower gives no turns
    assert ask("r1", term=7)["granted"] is False  # nor does a leader of another term
    assert ask("r9")["granted"] is False  # nor to a stranger
    error = http_error(lambda: ask("r1", task="gc"))
    assert error.code == 400
    assert "turns" not in _upkeep(replicas, "r1")


def test_upkeep_waits_for_a_permit_when_told_to(
    git: Git, started: list[Replicas], tmp_path: pathlib.Path, auth_file: pathlib.Path
) -> None:
    replicas = _group(
        started,
        tmp_path,
        auth_file,
        *("--maintenance-permits", "--maintenance-pushes", "2", "--scrub-interval", "0"),
    )
    work = _work(git, tmp_path)
    for index in range(6):
        git.commit(work, "file", f"{index}\n")
        git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    waiting.until(
        "maintenance due on every replica, waiting for a permit",
        lambda: all("maintenance" in _upkeep(replicas, r)["due"] for r in replicas.ids),
        timeout=10,
        seen=lambda: {r: _upkeep(replicas, r)["due"] for r in replicas.ids},
    )
    assert all(_upkeep(replicas, r)["lastMaintenance"] is None for r in replicas.ids)
    answer = replicas.call("r1", "PUT", "/admin/upkeep", {"permitSeconds": 30})
    assert answer["permits"] is True and 0 < answer["permitSeconds"] <= 30
    waiting.until(
        "r1 to maintain under its permit",
        lambda: _upkeep(replicas, "r1")["lastMaintenance"],
        timeout=10,
        seen=lambda: _upkeep(replicas, "r1"),
    )
    assert _upkeep(replicas, "r0")["lastMaintenance"] is None
    assert _upkeep(replicas, "r2")["lastMaintenance"] is None
    error = http_error(lambda: replicas.call("r2", "PUT", "/admin/upkeep", {"permitSeconds": -1}))
    assert error.code == 400


class Traffic:
    """Pushes to ``main`` and clones from one replica, in threads, recording what happened."""

    def __init__(self, git: Git, replicas: Replicas, work: pathlib.Path, reader: str) -> None:
        self.git = git
        self.replicas = replicas
        self.work = work
        self.reader = reader
        self.acknowledged: list[str] = []
        self.clones = 0
        self.refused_reads = 0
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._push), threading.Thread(target=self._read)]

    def __enter__(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _push(self) -> None:
        index = 0
        while not self._stop.is_set():
            index += 1
            head = self.git.commit(self.work, "traffic", f"{index}\n")
            target = self.replicas.ids[index % 3]
            result = self.git.run(
                "push", "-q", self.replicas.url(target), "main", cwd=self.work, check=False
            )
            if result.returncode == 0:
                self.acknowledged.append(head)
            else:
                self.git.run("fetch", "-q", self.replicas.url("r0"), cwd=self.work, check=False)
                self.git.run("reset", "-q", "--hard", "FETCH_HEAD", cwd=self.work, check=False)

    def _read(self) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            target = self.work.parent / f"clone{count % 2}"
            shutil.rmtree(target, ignore_errors=True)
            result = self.git.run(
                "clone", "-q", "--bare", self.replicas.url(self.reader), str(target), check=False
            )
            if result.returncode != 0:
                self.refused_reads += 1
                continue
            self.clones += 1
            fsck = self.git.run("fsck", "--full", "--no-dangling", cwd=target, check=False)
            if fsck.returncode != 0:
                self.problems.append(f"clone {count} from {self.reader} is damaged: {fsck.stderr}")


def _flip_a_byte(pack: pathlib.Path) -> None:
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))


def _wait_repaired(replicas: Replicas, replica: str, since: float, what: str) -> dict[str, Any]:
    def repaired() -> dict[str, Any] | None:
        upkeep = _upkeep(replicas, replica)
        repair = upkeep["lastRepair"] or {}
        if repair.get("outcome") == "ok" and repair["at"] > since and not upkeep["damaged"]:
            return upkeep
        return None

    upkeep: dict[str, Any] = waiting.until(
        f"{replica} to find {what} and repair it",
        repaired,
        timeout=SCRUB_PERIOD + 15,
        seen=lambda: (_upkeep(replicas, replica), replicas.log(replica)[-3000:]),
    )
    return upkeep


def _assert_found_within_a_scrub_period(replicas: Replicas, replica: str, after: float) -> None:
    """Damage made while a scrub runs may be missed by that one and found by the next, which
    starts at most a period after it: the bound is a period plus two scrubs' durations (long
    on a loaded machine), and half a second for the log line."""
    durations = [
        float(seconds)
        for _, what, who, seconds in _RUN.findall(replicas.log(replica))
        if what == "scrub" and who == replica
    ]
    bound = SCRUB_PERIOD + 2 * max(durations, default=0.0) + 0.5
    assert after <= bound, (
        f"damage found {after:.1f} s after it was made, later than one scrub period "
        f"({SCRUB_PERIOD} s) and two scrubs (the longest took {max(durations, default=0.0)} s)"
    )


def _found_at(replicas: Replicas, replica: str) -> float:
    match = re.search(
        rf"^(\S+ \S+) ERROR \S+ repository \S+: scrub on {replica} found damage",
        replicas.log(replica),
        re.M,
    )
    assert match is not None, replicas.log(replica)[-3000:]
    return datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _all_acknowledged_everywhere(git: Git, replicas: Replicas, traffic: Traffic) -> None:
    replicas.wait_in_sync()
    for replica in replicas.ids:
        repository = _repository(replicas, replica)
        main = git.refs(repository)["refs/heads/main"]
        for head in traffic.acknowledged:
            ancestor = git.run(
                "merge-base", "--is-ancestor", head, main, cwd=repository, check=False
            )
            assert ancestor.returncode == 0, f"acknowledged {head} is not in {replica}'s main"


def test_upkeep_repairs_flipped_bytes_in_a_follower_within_a_scrub_period(
    git: Git, started: list[Replicas], tmp_path: pathlib.Path, auth_file: pathlib.Path
) -> None:
    replicas = _group(
        started,
        tmp_path,
        auth_file,
        *("--maintenance-pushes", "0", "--maintenance-interval", "0"),
        *("--scrub-interval", str(SCRUB_PERIOD)),
    )
    work = _work(git, tmp_path)
    for index in range(5):
        git.commit(work, f"file{index}", f"{index}\n" * 2000)
        git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    largest = max(
        (_repository(replicas, "r1") / "objects" / "pack").glob("*.pack"),
        key=lambda path: path.stat().st_size,
    )
    with Traffic(git, replicas, work, reader="r1") as traffic:
        damaged_at = time.time()
        _flip_a_byte(largest)
        upkeep = _wait_repaired(replicas, "r1", damaged_at, "flipped bytes")
        found = _found_at(replicas, "r1")
        waiting.until("a few more pushes", lambda: len(traffic.acknowledged) >= 3, timeout=20)
    _assert_found_within_a_scrub_period(replicas, "r1", found - damaged_at)
    assert "damaged pack" in upkeep["lastScrub"]["detail"] or upkeep["lastScrub"]["outcome"] == "ok"
    assert not traffic.problems, traffic.problems
    assert traffic.clones > 0
    scraped = _metrics(replicas, "r1")
    assert scraped['gitquorum_upkeep_runs_total{kind="scrub",outcome="damaged"}'] >= 1
    assert scraped['gitquorum_upkeep_runs_total{kind="repair",outcome="ok"}'] >= 1
    assert list((replicas.data("r1") / "damaged").rglob(largest.name)), "kept aside"
    _all_acknowledged_everywhere(git, replicas, traffic)
    replicas.stop_all()
    for replica in replicas.ids:
        _fsck(git, replicas, replica)


def _explode(git: Git, replicas: Replicas, replica: str) -> None:
    """Turns every pack of a stopped replica into loose objects."""
    objects = _repository(replicas, replica) / "objects"
    aside = replicas.base / f"{replica}-packs"
    aside.mkdir()
    for path in (objects / "pack").iterdir():
        shutil.move(str(path), aside / path.name)
    shutil.rmtree(objects / "info" / "commit-graphs", ignore_errors=True)
    for pack in aside.glob("*.pack"):
        subprocess.run(
            ["git", "unpack-objects", "-q"],
            stdin=pack.open("rb"),
            cwd=_repository(replicas, replica),
            env=git.env,
            check=True,
        )


def test_upkeep_refetches_a_deleted_loose_object_within_a_scrub_period(
    git: Git, started: list[Replicas], tmp_path: pathlib.Path, auth_file: pathlib.Path
) -> None:
    replicas = _group(
        started,
        tmp_path,
        auth_file,
        *("--maintenance-pushes", "0", "--maintenance-interval", "0"),
        *("--scrub-interval", str(SCRUB_PERIOD)),
    )
    work = _work(git, tmp_path)
    for index in range(4):
        git.commit(work, f"file{index}", f"{index}\n")
        git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    old_tree = git.out("rev-parse", "main~2^{tree}", cwd=work)
    replicas.kill("r2")
    _explode(git, replicas, "r2")
    replicas.start("r2")
    replicas.configure("r2")
    replicas.wait_in_sync()
    loose = _repository(replicas, "r2") / "objects" / old_tree[:2] / old_tree[2:]
    assert loose.is_file()
    with Traffic(git, replicas, work, reader="r2") as traffic:
        damaged_at = time.time()
        loose.unlink()
        _wait_repaired(replicas, "r2", damaged_at, "a missing object")
        found = _found_at(replicas, "r2")
        waiting.until("a few more pushes", lambda: len(traffic.acknowledged) >= 3, timeout=20)
    _assert_found_within_a_scrub_period(replicas, "r2", found - damaged_at)
    assert "missing" in replicas.log("r2")
    assert not traffic.problems, traffic.problems
    _all_acknowledged_everywhere(git, replicas, traffic)
    git.run("cat-file", "-e", old_tree, cwd=_repository(replicas, "r2"))
    replicas.stop_all()
    for replica in replicas.ids:
        _fsck(git, replicas, replica)


def test_upkeep_damaged_leader_serves_nothing_and_repairs_from_a_follower(
    git: Git, started: list[Replicas], tmp_path: pathlib.Path, auth_file: pathlib.Path
) -> None:
    replicas = _group(
        started,
        tmp_path,
        auth_file,
        *("--maintenance-pushes", "0", "--maintenance-interval", "0"),
        *("--scrub-interval", str(SCRUB_PERIOD)),
    )
    work = _work(git, tmp_path)
    for index in range(3):
        git.commit(work, f"file{index}", f"{index}\n" * 2000)
        git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    head = git.out("rev-parse", "HEAD", cwd=work)
    replicas.wait_in_sync()
    # Its repairs cannot start while its scratch space is a file: it stays damaged.
    blocker = replicas.data("r0") / "upkeep"
    shutil.rmtree(blocker, ignore_errors=True)
    blocker.write_text("in the way\n")
    _flip_a_byte(max((_repository(replicas, "r0") / "objects" / "pack").glob("*.pack")))

    def damaged() -> dict[str, Any] | None:
        status = replicas.status("r0")
        return status if status["upkeep"]["damaged"] and status["upkeep"]["lastRepair"] else None

    status = waiting.until(
        "r0 to find damage and fail to repair it",
        damaged,
        timeout=SCRUB_PERIOD + 10,
        seen=lambda: (replicas.status("r0"), replicas.log("r0")[-2000:]),
    )
    assert status["state"] == "Damaged" and status["readable"] is False
    assert status["role"] == "Leader" and status["writable"] is True
    assert status["upkeep"]["lastRepair"]["outcome"] == "failed"
    readyz = f"http://127.0.0.1:{replicas.ports['r0'][0]}/readyz"
    assert http_error(lambda: urllib.request.urlopen(readyz, timeout=5)).code == 503
    snapshot = http_error(lambda: replicas.call("r0", "GET", "/replication/snapshot"))
    assert snapshot.code == 503, "a damaged replica is no source for a copy"
    assert replicas.call("r0", "GET", "/replication/integrity")["damaged"] is True
    assert replicas.call("r1", "GET", "/replication/integrity")["damaged"] is False
    assert _metrics(replicas, "r0")["gitquorum_replica_damaged"] == 1
    assert git.run("ls-remote", replicas.url("r0"), check=False).returncode != 0
    for follower in ("r1", "r2"):  # the followers serve the reads meanwhile
        remote = git.out("ls-remote", replicas.url(follower), "refs/heads/main")
        assert remote.split()[0] == head
    blocker.unlink()
    upkeep = _wait_repaired(replicas, "r0", status["upkeep"]["lastRepair"]["at"], "its damage")
    assert re.search(r"from r[12]:", upkeep["lastRepair"]["detail"]), upkeep
    replicas.wait_in_sync()
    assert git.run("ls-remote", replicas.url("r0"), check=False).returncode == 0
    replicas.stop_all()
    for replica in replicas.ids:
        _fsck(git, replicas, replica)


def test_upkeep_damage_survives_a_restart_and_is_repaired_after_it(
    git: Git, started: list[Replicas], tmp_path: pathlib.Path, auth_file: pathlib.Path
) -> None:
    replicas = _group(started, tmp_path, auth_file, *QUIET)
    work = _work(git, tmp_path)
    git.commit(work, "file", "content\n" * 1000)
    git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
    replicas.wait_in_sync()
    replicas.kill("r1")
    (pack,) = (_repository(replicas, "r1") / "objects" / "pack").glob("*.pack")
    _flip_a_byte(pack)
    record = replicas.data("r1") / "upkeep.json"
    record.write_text('{"format": 1, "damage": "found before the restart"}')
    since = time.time()
    replicas.start("r1")
    assert replicas.status("r1")["state"] == "Damaged"
    replicas.configure("r1")
    _wait_repaired(replicas, "r1", since, "the damage it knew of")
    replicas.wait_in_sync()
    _fsck(git, replicas, "r1")


def test_upkeep_rejects_a_prune_expiry_below_the_minimum(tmp_path: pathlib.Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 32)
    command = invocation.ReplicaCommand(
        replica="r0",
        data=str(tmp_path / "r0"),
        listen="127.0.0.1:0",
        peer_listen="127.0.0.1:0",
        peer_token_file=str(token),
        anonymous_read=True,
        extra=("--prune-expiry", "1"),
    )
    result = subprocess.run(
        command.argv(program=(sys.executable, "-m", "gitquorum")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "--prune-expiry" in result.stderr, result.stderr
