"""The first program of every container: runs inside the pod's network namespace and a fresh
private mount namespace, mounts the pod's volumes at their ``mountPath``, applies the security
context (read-only root, user and groups), then execs the container's command.

Invoked by the node agent as
``nsenter --net=... unshare --mount --propagation private python -m gitquorum_testbed.podinit SPEC``
where SPEC is a JSON file written by the agent. Kept free of third-party imports so it starts fast.

Every source is bind-mounted to a parking spot before anything is mounted in place, because a
volume mounted at, say, ``/tmp`` would otherwise hide the sources (and the project's own
interpreter and checkout) that live below it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[1]).read_text())
    staging = Path(spec["staging"]) / str(os.getpid())
    volumes = [
        (_park(Path(m["source"]), staging / f"volume-{i}"), m) for i, m in enumerate(spec["mounts"])
    ]
    runtime = [
        (_park(Path(p), staging / f"runtime-{i}"), Path(p)) for i, p in enumerate(spec["expose"])
    ]
    for spot, mount in volumes:
        _place(spot, Path(mount["target"]))
        if mount["readOnly"]:
            _mount("-o", "remount,bind,ro", mount["target"])
    for spot, path in runtime:
        if spec.get("uid"):
            _open_closed_ancestor(path)
        _place(spot, path)
    for spot in staging.iterdir():
        spot.rmdir() if spot.is_dir() else spot.unlink()
    staging.rmdir()
    if spec.get("readOnlyRoot"):
        _mount("-o", "remount,bind,ro", "/")
    _drop_privileges(spec)
    os.chdir(spec.get("workingDir") or "/")
    command = spec["argv"]
    try:
        os.execvpe(command[0], command, spec["env"])
    except OSError as exc:
        print(f"podinit: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        sys.exit(127)


def _park(source: Path, spot: Path) -> Path:
    _mount_point(spot, directory=source.is_dir())
    _mount("--bind", str(source), str(spot))
    return spot


def _place(spot: Path, target: Path) -> None:
    _mount_point(target, directory=spot.is_dir())
    _mount("--move", str(spot), str(target))


def _mount_point(path: Path, *, directory: bool) -> None:
    """A directory is mounted on a directory, a file on a file: make the right one exist."""
    if directory:
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)


def _open_closed_ancestor(path: Path) -> None:
    """Let a non-root user reach ``path`` through a directory it may not traverse.

    The interpreter may live under /root (pyenv, mode 700) and a checkout under a private
    temporary directory. The closed ancestor is covered by a traversable tmpfs, in this
    container's mount namespace only; the needed paths are then mounted back inside it.
    """
    for ancestor in reversed(path.parents):
        if ancestor == Path("/") or not ancestor.exists():
            continue
        if not os.stat(ancestor).st_mode & 0o001:
            _mount("-t", "tmpfs", "-o", "mode=0711,size=1m", "tmpfs", str(ancestor))
            return


def _drop_privileges(spec: dict[str, object]) -> None:
    groups, gid, uid = spec.get("groups"), spec.get("gid"), spec.get("uid")
    if isinstance(groups, list):
        os.setgroups(groups)
    if isinstance(gid, int):
        os.setgid(gid)
    if isinstance(uid, int):
        os.setuid(uid)


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"podinit: mount {' '.join(args)}: {result.stderr.strip()}", file=sys.stderr)
        sys.exit(126)


if __name__ == "__main__":
    main(sys.argv)
