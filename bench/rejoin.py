"""A follower that fell behind, rejoining while clients push without pause (issue 14).

Three ``gitquorum replica`` processes on loopback (``tests.integration.replicas``), r0 leading.
Each round: r2 is stopped, ``--rejoin-behind`` pushes go on without it, then it is started
again while ``--rejoin-clients`` clients keep pushing without pause, each to a branch of its
own; measured is the time from its start to being in sync and serving reads again (the state
in which it votes and counts for a push's majority). The reference is the same rejoin with
no client pushing, in the same run: the ratio says what the load costs. The target is
absolute: within 10 s under 4 clients.

One line per round; every command's output in the log file whose path is printed first.
"""

import argparse
import datetime
import pathlib
import statistics
import subprocess
import tempfile
import threading
import time

from bench import runlog
from tests import waiting
from tests.integration import helpers
from tests.integration.replicas import Replicas

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
TARGET_SECONDS = 10.0
DEADLINE = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rejoin")
    group.add_argument(
        "--rejoin-rounds", type=int, default=3, help="rejoins measured (default: %(default)s)"
    )
    group.add_argument(
        "--rejoin-clients",
        type=int,
        default=4,
        help="clients pushing without pause (default: %(default)s)",
    )
    group.add_argument(
        "--rejoin-behind",
        type=int,
        default=20,
        help="pushes the follower misses while stopped (default: %(default)s)",
    )


class Pushers:
    """Clients pushing to branches of their own, without pause, until stopped."""

    def __init__(self, git: helpers.Git, replicas: Replicas, work: pathlib.Path, count: int):
        self._git = git
        self._replicas = replicas
        self._clones = []
        for index in range(count):
            clone = work / f"client-{index}"
            git.run("clone", "-q", replicas.url("r0"), str(clone))
            self._clones.append(clone)
        self.pushed = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._push, args=(index, clone), daemon=True)
            for index, clone in enumerate(self._clones)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _push(self, index: int, clone: pathlib.Path) -> None:
        while not self._stop.is_set():
            self._git.commit(clone, f"file-{index}", f"{time.monotonic()}\n")
            url = self._replicas.url("r0")
            self._git.run("push", "-q", url, f"HEAD:refs/heads/c{index}", cwd=clone)
            self.pushed += 1


def _rejoin(replicas: Replicas) -> float:
    started = time.monotonic()
    replicas.start("r2")
    replicas.configure("r2")
    waiting.until(
        "r2 in sync and serving reads",
        lambda: (lambda s: s["state"] == "InSync" and s["readable"])(replicas.status("r2")),
        timeout=DEADLINE,
        interval=0.05,
        seen=lambda: replicas.status("r2"),
    )
    return time.monotonic() - started


def _fall_behind(git: helpers.Git, replicas: Replicas, work: pathlib.Path, count: int) -> None:
    replicas.kill("r2")
    for _ in range(count):
        git.commit(work, "behind", f"{time.monotonic()}\n")
        git.run("push", "-q", replicas.url("r0"), "main", cwd=work)


def run(args: argparse.Namespace) -> dict[str, float]:
    started = time.monotonic()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = RESULTS / f"rejoin-{stamp}"
    directory.mkdir(parents=True)
    with (
        runlog.Log(directory / "rejoin.log", started) as log,
        tempfile.TemporaryDirectory(prefix="gitquorum-bench-") as temporary,
    ):
        log.step(f"full log in {log.path}; replica logs in {directory}/replicas")
        base = pathlib.Path(temporary)
        git = helpers.Git(base / "home")
        auth_file = helpers.write_auth_file(base / "users")
        replicas = Replicas(directory / "replicas", auth_file, 3)
        try:
            replicas.start_all()
            work = base / "work"
            git.run("init", "-q", "-b", "main", str(work))
            git.commit(work, "README", "hello\n")
            git.run("push", "-q", replicas.url("r0"), "main", cwd=work)
            replicas.wait_in_sync()
            pushers = Pushers(git, replicas, base, args.rejoin_clients)
            loaded, quiet = [], []
            for round_ in range(1, args.rejoin_rounds + 1):
                _fall_behind(git, replicas, work, args.rejoin_behind)
                quiet.append(_rejoin(replicas))
                replicas.wait_in_sync()
                log.step(f"round {round_}: rejoin with no pushes {quiet[-1]:.2f} s")
                _fall_behind(git, replicas, work, args.rejoin_behind)
                before = pushers.pushed
                pushers.start()
                try:
                    loaded.append(_rejoin(replicas))
                finally:
                    pushers.stop()
                log.step(
                    f"round {round_}: rejoin under {args.rejoin_clients} clients "
                    f"{loaded[-1]:.2f} s ({pushers.pushed - before} pushes meanwhile)"
                )
                replicas.wait_in_sync()
        except (subprocess.CalledProcessError, AssertionError) as error:
            log.write(f"failed: {error}")
            raise
        finally:
            replicas.stop_all()
        worst, typical = max(loaded), statistics.median(loaded)
        reference = statistics.median(quiet)
        log.step(
            f"rejoin under {args.rejoin_clients} clients: median {typical:.2f} s, max "
            f"{worst:.2f} s (target <= {TARGET_SECONDS:g} s); without pushes {reference:.2f} s; "
            f"ratio {typical / reference:.2f}x"
        )
    return {"rejoin.time": typical / reference}
