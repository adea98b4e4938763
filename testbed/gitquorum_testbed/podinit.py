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
        _expose_interpreter(Path(sys.base_prefix), staging=Path(spec["staging"]))
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


def _expose_interpreter(prefix: Path, *, staging: Path) -> None:
    """Let a non-root container run the project's Python when it lives in a private directory.

    With pyenv under /root (mode 700) a non-root user cannot reach the interpreter. In this
    container's own mount namespace only, the closed ancestor is covered by a tmpfs that can
    be traversed and holds nothing but the interpreter's prefix, bind-mounted back in place.
    """
    closed = next((a for a in reversed(prefix.parents) if not os.stat(a).st_mode & 0o001), None)
    if closed is None or closed == Path("/"):
        return
    staging.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(prefix), str(staging))
    _mount("-t", "tmpfs", "-o", "mode=0711,size=1m", "tmpfs", str(closed))
    prefix.mkdir(parents=True, exist_ok=True)
    _mount("--move", str(staging), str(prefix))


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"podinit: mount {' '.join(args)}: {result.stderr.strip()}", file=sys.stderr)
        sys.exit(126)


if __name__ == "__main__":
    main(sys.argv)
