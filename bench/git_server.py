"""``gitquorum serve`` against ``git daemon``: clone, fetch, small pushes, memory.

Both servers serve the same generated repository (see ``repository``) from the same
directory, and every measurement alternates between them, swapping which goes first each
round, so that a background load or a warm cache favours neither. Timings are the wall time
of the real git client (protocol v2, as git defaults to), which is what a user waits for.

- clone: ``git clone --no-checkout`` of the whole repository (the checkout is the same local
  work whatever the server);
- fetch: ``git fetch`` of the commits between the ``base`` branch and ``main`` into a copy of
  a clone of ``base``;
- push: a one-file commit pushed to a branch, repeated; p50 and p99 of the push time, after
  a first push that creates the branch (reported apart: it includes gitquorum's one-off
  credential check with scrypt, which later pushes find in the cache).

gitquorum pushes authenticate (HTTP Basic against a scrypt-hashed token, as deployed);
git daemon has no authentication at all. Memory is the gitquorum process's resident set
after startup (idle) and its high-water mark at the end (peak).
"""

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

from bench import repository, servers

SERVERS = ("gitquorum", "git-daemon")
MIB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("git-server")
    group.add_argument(
        "--rounds", type=int, default=7, help="clones and fetches per server (default: %(default)s)"
    )
    group.add_argument(
        "--pushes", type=int, default=50, help="small pushes per server (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gitquorum-bench-") as temporary:
        work = pathlib.Path(temporary)
        env = _client_env(work)
        generated = repository.ensure(repository.Shape(), env)
        print(
            f"   repository: {generated.objects} objects, "
            f"{generated.pack_bytes / MIB:.1f} MiB packed",
            flush=True,
        )
        root = work / "root"
        root.mkdir()
        _git(env, "clone", "-q", "--bare", "--local", str(generated.path), str(root / "bench.git"))
        with servers.gitquorum(root, work, env) as ours, servers.git_daemon(root, env) as theirs:
            served = {"gitquorum": ours, "git-daemon": theirs}
            _git(env, "ls-remote", ours.url("bench.git"))  # first request: imports warmed
            idle_rss = ours.memory()[0]
            print(f"   gitquorum idle RSS {idle_rss / MIB:.1f} MiB", flush=True)
            clone = _alternate(
                "clone", args.rounds, served, lambda server, i: _clone(env, work, server, i)
            )
            fetch = _alternate(
                "fetch", args.rounds, served, lambda server, i: _fetch(env, work, root, server, i)
            )
            push = _pushes(env, work, root, served, args.pushes)
            _, peak_rss = ours.memory()
            daemon_peak = theirs.memory()[1]
    return _report(clone, fetch, push, idle_rss, peak_rss, daemon_peak)


def _alternate(
    what: str,
    rounds: int,
    served: dict[str, servers.Served],
    measure: Callable[[servers.Served, int], float],
) -> dict[str, list[float]]:
    """Runs ``measure`` once per server per round, the first server swapping every round."""
    times: dict[str, list[float]] = {name: [] for name in SERVERS}
    measure(served["gitquorum"], -1)  # warm-up, not counted: caches filled for both
    measure(served["git-daemon"], -2)
    for round_number in range(rounds):
        order = SERVERS if round_number % 2 == 0 else SERVERS[::-1]
        for name in order:
            times[name].append(measure(served[name], round_number))
        print(
            f"   [{what} {round_number + 1}/{rounds}] "
            + "  ".join(f"{name} {times[name][-1]:.3f} s" for name in SERVERS),
            flush=True,
        )
    return times


def _clone(env: dict[str, str], work: pathlib.Path, server: servers.Served, index: int) -> float:
    target = work / f"clone-{server.name}-{index}"
    started = time.perf_counter()
    _git(env, "clone", "-q", "--no-checkout", server.url("bench.git"), str(target))
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return elapsed


def _fetch(
    env: dict[str, str],
    work: pathlib.Path,
    root: pathlib.Path,
    server: servers.Served,
    index: int,
) -> float:
    base = work / "fetch-base"
    if not base.exists():
        _git(
            env,
            "clone",
            "-q",
            "--bare",
            "--single-branch",
            "--branch",
            "base",
            f"file://{root / 'bench.git'}",
            str(base),
        )
    target = work / f"fetch-{server.name}-{index}"
    shutil.copytree(base, target, symlinks=True)
    started = time.perf_counter()
    _git(env, "fetch", "-q", server.url("bench.git"), "main:refs/heads/fetched", cwd=target)
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return elapsed


def _pushes(
    env: dict[str, str],
    work: pathlib.Path,
    root: pathlib.Path,
    served: dict[str, servers.Served],
    count: int,
) -> dict[str, list[float]]:
    clones = {}
    for name in SERVERS:
        clones[name] = work / f"push-{name}"
        _git(
            env,
            "clone",
            "-q",
            "--single-branch",
            "--branch",
            "base",
            f"file://{root / 'bench.git'}",
            str(clones[name]),
        )
    times: dict[str, list[float]] = {name: [] for name in SERVERS}
    # Push 0 creates the branch and, for gitquorum, pays the one-off scrypt check that fills
    # the credential cache: reported on its own, kept out of the steady-state percentiles.
    first: dict[str, float] = {}
    for index in range(count + 1):
        order = SERVERS if index % 2 == 0 else SERVERS[::-1]
        for name in order:
            clone = clones[name]
            (clone / "pushed.txt").write_text(f"push {index} to {name}\n")
            _git(env, "add", "pushed.txt", cwd=clone)
            _git(env, "commit", "-q", "-m", f"push {index}", cwd=clone)
            started = time.perf_counter()
            _git(
                env,
                "push",
                "-q",
                served[name].url("bench.git"),
                f"HEAD:refs/heads/push-{name}",
                cwd=clone,
            )
            elapsed = time.perf_counter() - started
            if index == 0:
                first[name] = elapsed
            else:
                times[name].append(elapsed)
        if index == 0:
            print(
                "   [push 0, creates the branch] "
                + "  ".join(f"{name} {first[name] * 1000:.1f} ms" for name in SERVERS),
                flush=True,
            )
        elif index % 10 == 0:
            print(
                f"   [push {index}/{count}] "
                + "  ".join(
                    f"{name} p50 {_percentile(times[name], 50) * 1000:.1f} ms" for name in SERVERS
                ),
                flush=True,
            )
    return times


def _report(
    clone: dict[str, list[float]],
    fetch: dict[str, list[float]],
    push: dict[str, list[float]],
    idle_rss: int,
    peak_rss: int,
    daemon_peak: int,
) -> dict[str, float]:
    figures = {
        "clone": {name: statistics.median(clone[name]) for name in SERVERS},
        "fetch": {name: statistics.median(fetch[name]) for name in SERVERS},
        "push_p50": {name: _percentile(push[name], 50) for name in SERVERS},
        "push_p99": {name: _percentile(push[name], 99) for name in SERVERS},
    }
    print(f"   {'':10} {'gitquorum':>12} {'git-daemon':>12} {'ratio':>7}")
    for what, values in figures.items():
        unit, scale = ("s", 1.0) if what in ("clone", "fetch") else ("ms", 1000.0)
        print(
            f"   {what:10} {values['gitquorum'] * scale:>9.3f} {unit:<2} "
            f"{values['git-daemon'] * scale:>9.3f} {unit:<2} "
            f"{values['gitquorum'] / values['git-daemon']:>7.2f}"
        )
    print(
        f"   gitquorum RSS: idle {idle_rss / MIB:.1f} MiB, peak {peak_rss / MIB:.1f} MiB "
        f"(git daemon peak {daemon_peak / MIB:.1f} MiB)"
    )
    ratios = {what: values["gitquorum"] / values["git-daemon"] for what, values in figures.items()}
    ratios["idle_rss_mib"] = idle_rss / MIB
    ratios["peak_rss_mib"] = peak_rss / MIB
    return ratios


def _percentile(values: list[float], percent: int) -> float:
    """Nearest-rank percentile: the value below which ``percent`` % of values fall."""
    ordered = sorted(values)
    rank = max(1, -(-percent * len(ordered) // 100))
    return ordered[rank - 1]


def _client_env(work: pathlib.Path) -> dict[str, str]:
    home = work / "home"
    home.mkdir()
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "Bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
        "LANG": "C",
    }


def _git(env: dict[str, str], *args: str, cwd: pathlib.Path | None = None) -> None:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed:\n{result.stderr}")
