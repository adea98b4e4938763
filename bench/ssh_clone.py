"""A clone over SSH against the same clone over HTTP, from one ``gitquorum serve``.

The generated repository (see ``repository``) is served by one ``gitquorum serve`` with SSH
on (an ed25519 host key, a read deploy key in its keys file); the git CLI clones it
``--ssh-rounds`` times over each transport, alternating which goes first, with OpenSSH as
the SSH client (``GIT_SSH_COMMAND``, the host key pinned in a known_hosts file). Target
(issue 12): the SSH clone within 1.1x of the HTTP clone's time (medians).

Beside the time, each clone's CPU is counted on both sides: the server's (the Python
process and the git it ran, from /proc) and the client's (git, ssh or curl, index-pack,
from the rusage of the children). On a machine with few cores, a clone's time follows the
CPU both sides spend more than any wait, so this says where SSH's extra time goes. A
``git ls-remote`` over each transport measures the login and advertisement alone.
"""

import argparse
import dataclasses
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import tempfile
import time

from bench import git_server, repository, servers
from tests.ports import free_port

TARGET = 1.1
MIB = 1024 * 1024
LISTINGS = 10
"""ls-remote runs per transport: cheap, and a login's time varies more than a clone's."""


@dataclasses.dataclass(frozen=True)
class Clone:
    """One clone: its time, and the CPU seconds the server and the client spent on it."""

    seconds: float
    server_cpu: float
    client_cpu: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ssh clone")
    group.add_argument(
        "--ssh-rounds", type=int, default=5, help="clones per transport (default: %(default)s)"
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gitquorum-bench-ssh-") as temporary:
        work = pathlib.Path(temporary)
        env = git_server._client_env(work)
        generated = repository.ensure(repository.Shape(), env)
        root = work / "root"
        root.mkdir()
        git_server._git(
            env, "clone", "-q", "--bare", "--local", str(generated.path), str(root / "bench.git")
        )
        host_key, client_key = _key(work / "host"), _key(work / "client")
        keys_file = work / "keys"
        keys_file.write_text(f"read {_public(client_key)}\n")
        port = free_port()
        ssh = ("--ssh-port", str(port), "--ssh-host-key", str(host_key))
        with servers.gitquorum(root, work, env, (*ssh, "--ssh-keys-file", str(keys_file))) as s:
            known_hosts = work / "known_hosts"
            public = _public(host_key).split()
            known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
            ssh_env = {**env, "GIT_SSH_COMMAND": _ssh_command(client_key, known_hosts)}
            urls = {
                "ssh": (f"ssh://git@127.0.0.1:{port}/bench.git", ssh_env),
                "http": (s.url("bench.git"), env),
            }
            listings = _listings(urls)
            clones = _clones(work, urls, args.ssh_rounds, server=s.process.pid)
    for name in urls:
        print(
            f"   {name:>4}: ls-remote {statistics.median(listings[name]) * 1000:.0f} ms "
            f"(median of {LISTINGS}); clone CPU: server "
            f"{statistics.median(c.server_cpu for c in clones[name]):.2f} s, client "
            f"{statistics.median(c.client_cpu for c in clones[name]):.2f} s",
            flush=True,
        )
    ssh_median = statistics.median(c.seconds for c in clones["ssh"])
    http_median = statistics.median(c.seconds for c in clones["http"])
    ratio = ssh_median / http_median
    size = generated.pack_bytes / MIB
    print(
        f"   summary: clone of {size:.1f} MiB over SSH {ssh_median:.2f} s, over HTTP "
        f"{http_median:.2f} s (medians of {args.ssh_rounds}): ratio {ratio:.2f} "
        f"(target <= {TARGET}: {'meets' if ratio <= TARGET else 'MISSES'}); CPU ratio "
        f"{_cpu(clones['ssh']) / _cpu(clones['http']):.2f}",
        flush=True,
    )
    return {"clone": ratio}


def _cpu(clones: list[Clone]) -> float:
    """The median of both sides' CPU seconds per clone."""
    return statistics.median(c.server_cpu + c.client_cpu for c in clones)


def _listings(urls: dict[str, tuple[str, dict[str, str]]]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in urls}
    for index in range(LISTINGS):
        for name in list(urls) if index % 2 == 0 else list(reversed(urls)):
            url, env = urls[name]
            started = time.perf_counter()
            git_server._git(env, "ls-remote", url)
            times[name].append(time.perf_counter() - started)
    return times


def _clones(
    work: pathlib.Path, urls: dict[str, tuple[str, dict[str, str]]], rounds: int, *, server: int
) -> dict[str, list[Clone]]:
    clones: dict[str, list[Clone]] = {name: [] for name in urls}
    git_server._git(urls["http"][1], "clone", "-q", "--bare", urls["http"][0], str(work / "warm"))
    for index in range(rounds):
        order = list(urls) if index % 2 == 0 else list(reversed(urls))
        for name in order:
            url, env = urls[name]
            target = work / f"clone-{name}"
            server_before, client_before = _process_cpu(server), _children_cpu()
            started = time.perf_counter()
            git_server._git(env, "clone", "-q", "--bare", url, str(target))
            seconds = time.perf_counter() - started
            clones[name].append(
                Clone(
                    seconds=seconds,
                    server_cpu=_process_cpu(server) - server_before,
                    client_cpu=_children_cpu() - client_before,
                )
            )
            shutil.rmtree(target)
        print(
            f"   [round {index + 1}/{rounds}] "
            + "  ".join(
                f"{name} {clones[name][-1].seconds:.2f} s (CPU server "
                f"{clones[name][-1].server_cpu:.2f} s, client {clones[name][-1].client_cpu:.2f} s)"
                for name in urls
            ),
            flush=True,
        )
    return clones


def _process_cpu(pid: int) -> float:
    """CPU seconds of a process and of the children it waited for (the git it ran)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14 to 17 of proc(5), counted after the name.
    ticks = sum(int(field) for field in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds of this process's children that ended: git and all it ran."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _key(path: pathlib.Path) -> pathlib.Path:
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)]
    subprocess.run(command, check=True)
    return path


def _public(key: pathlib.Path) -> str:
    return (key.parent / f"{key.name}.pub").read_text().strip()


def _ssh_command(key: pathlib.Path, known_hosts: pathlib.Path) -> str:
    options = (
        "-F /dev/null -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o BatchMode=yes "
        f"-o UserKnownHostsFile={known_hosts}"
    )
    return f"ssh -i {key} {options}"
