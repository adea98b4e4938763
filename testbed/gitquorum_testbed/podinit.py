"""The first program of every container: runs inside the pod's network namespace and a fresh
private mount namespace, mounts the pod's volumes at their ``mountPath``, applies the security
context (read-only root, user and groups), then execs the container's command.

Invoked by the node agent as
``nsenter --net=... unshare --mount --propagation private python -m gitquorum_testbed.podinit SPEC``
where SPEC is a JSON file written by the agent. Kept free of third-party imports so it starts fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[1]).read_text())
    for mount in spec["mounts"]:
        _bind(mount["source"], mount["target"], read_only=mount["readOnly"])
    if spec.get("uid"):
        _expose([Path(p) for p in spec["expose"]], staging=Path(spec["staging"]))
    if spec.get("readOnlyRoot"):
        _mount("-o", "remount,bind,ro", "/")
    gid = spec.get("gid")
    uid = spec.get("uid")
    if spec.get("groups") is not None:
        os.setgroups(spec["groups"])
    if gid is not None:
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    os.chdir(spec.get("workingDir") or "/")
    command = spec["argv"]
    try:
        os.execvpe(command[0], command, spec["env"])
    except OSError as exc:
        print(f"podinit: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
        sys.exit(127)


def _bind(source: str, target: str, *, read_only: bool) -> None:
    src = Path(source)
    dst = Path(target)
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.touch(exist_ok=True)
    _mount("--bind", str(src), str(dst))
    if read_only:
        _mount("-o", "remount,bind,ro", str(dst))


def _expose(paths: list[Path], *, staging: Path) -> None:
    """Let a non-root container reach the project's Python and source in private directories.

    The interpreter may live under /root (pyenv, mode 700) and a checkout under a private
    temporary directory; a non-root user can traverse neither. In this container's own mount
    namespace only, each closed ancestor is covered by a traversable tmpfs that holds nothing
    but the needed paths, bind-mounted back in place.
    """
    by_ancestor: dict[Path, list[Path]] = {}
    for path in paths:
        closed = next((a for a in reversed(path.parents) if not os.stat(a).st_mode & 0o001), None)
        if closed is not None and closed != Path("/"):
            by_ancestor.setdefault(closed, []).append(path)
    for n, (closed, inside) in enumerate(sorted(by_ancestor.items())):
        parked = []
        for i, path in enumerate(inside):
            spot = staging / f"{os.getpid()}-{n}-{i}"
            spot.mkdir(parents=True, exist_ok=True)
            _mount("--bind", str(path), str(spot))
            parked.append((spot, path))
        _mount("-t", "tmpfs", "-o", "mode=0711,size=1m", "tmpfs", str(closed))
        for spot, path in parked:
            path.mkdir(parents=True, exist_ok=True)
            _mount("--move", str(spot), str(path))
            spot.rmdir()


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"podinit: mount {' '.join(args)}: {result.stderr.strip()}", file=sys.stderr)
        sys.exit(126)


if __name__ == "__main__":
    main(sys.argv)
