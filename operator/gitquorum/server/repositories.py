"""Which bare repository a URL path names, confined to the served root.

A repository is served at its path relative to the root, with or without the ``.git``
suffix: ``group/app.git`` answers to ``/group/app.git`` and ``/group/app``. The path is
checked segment by segment before it touches the file system (no empty, dot or hidden
segments, no separators or control characters), and the directory it resolves to, symbolic
links followed, must still lie below the root. Only bare repositories are served; a work tree
is not a repository here. Refusing hidden segments also keeps the staging directories of
repositories being created (``creating``) out of reach.

These functions touch the file system and may block: the HTTP layer runs them in a thread.
"""

import dataclasses
import os
import pathlib
import re
import stat

from gitquorum import errors

GIT_SUFFIX = ".git"

# Paths come from URLs and end up in logs, metrics labels and git's command line: a bound on
# length and depth keeps a client from making any of those arbitrarily large.
MAX_PATH_LENGTH = 512
MAX_DEPTH = 16

# Control characters, backslashes and colons have no business in a repository name and only
# help to smuggle something past a check or into a log line.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\:]")


@dataclasses.dataclass(frozen=True)
class Repository:
    """A served bare repository: its name relative to the root and its directory."""

    name: str
    path: pathlib.Path
    exists: bool = True
    """False for a repository a push is to create: nothing is at ``path`` yet (``creating``)."""


def segments(url_path: str) -> list[str]:
    """The validated segments of a repository path; refuses anything that could escape."""
    stripped = url_path.strip("/")
    if not stripped:
        raise errors.PathRefused("empty repository path")
    if len(stripped) > MAX_PATH_LENGTH:
        raise errors.PathRefused(f"repository path longer than {MAX_PATH_LENGTH} characters")
    parts = stripped.split("/")
    if len(parts) > MAX_DEPTH:
        raise errors.PathRefused(f"repository path deeper than {MAX_DEPTH} directories")
    for part in parts:
        # ".." and "." start with a dot; so do ".git" directories inside work trees.
        if not part or part.startswith(".") or _FORBIDDEN.search(part):
            raise errors.PathRefused(f"repository path segment {part[:40]!r} is not allowed")
    return parts


def is_bare_repository(path: pathlib.Path) -> bool:
    """Whether a directory looks like a bare repository, as git itself decides it."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


class Resolver:
    """Maps URL paths to repositories below one root."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root.resolve()

    def find(self, url_path: str) -> Repository:
        """The bare repository a URL path names, or RepositoryNotFound."""
        for name in _candidates(segments(url_path)):
            path = self._confined(name)
            if is_bare_repository(path):
                return Repository(name=name, path=path)
        raise errors.RepositoryNotFound(f"no repository at {url_path.strip('/')!r}")

    def new(self, url_path: str) -> Repository:
        """Where a repository created for this URL path goes: always with the .git suffix."""
        parts = segments(url_path)
        if not parts[-1].endswith(GIT_SUFFIX):
            parts[-1] += GIT_SUFFIX
        name = "/".join(parts)
        path = self._confined(name)
        if path.exists():
            raise errors.Forbidden(f"{name!r} exists and is not a bare repository")
        return Repository(name=name, path=path, exists=False)

    def _confined(self, name: str) -> pathlib.Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise errors.PathRefused(f"repository path {name!r} leaves the served root")
        return path


def check_root(root: pathlib.Path, *, create: bool) -> None:
    """Refuses, at startup, a root this process cannot serve, saying why in terms of uids.

    Ownership alone is no reason (git's safe.directory is set for each repository served,
    see ``spawning``), but permissions are: without them every request would fail later with
    a message about some file deep inside a repository.
    """
    try:
        info = root.stat()
    except FileNotFoundError as error:
        raise errors.ConfigError(f"--root {root} is not a directory: it does not exist") from error
    except OSError as error:
        raise errors.ConfigError(
            f"--root {root}: {error.strerror} (this server runs as uid {os.geteuid()})"
        ) from error
    if not stat.S_ISDIR(info.st_mode):
        raise errors.ConfigError(f"--root {root} is not a directory")
    needed = os.R_OK | os.X_OK | (os.W_OK if create else 0)
    if os.access(root, needed, effective_ids=os.access in os.supports_effective_ids):
        return
    what = "read and write (--create-on-push creates repositories in it)" if create else "read"
    raise errors.ConfigError(
        f"--root {root}: this server runs as uid {os.geteuid()}, which may not {what} it "
        f"(owner uid {info.st_uid}, group {info.st_gid}, mode {stat.filemode(info.st_mode)})"
    )


def foreign_owner(root: pathlib.Path) -> int | None:
    """The uid owning ``root`` when it is not this process's uid, else None."""
    owner = root.stat().st_uid
    return owner if owner != os.geteuid() else None


def _candidates(parts: list[str]) -> list[str]:
    name = "/".join(parts)
    if name.endswith(GIT_SUFFIX) and len(parts[-1]) > len(GIT_SUFFIX):
        return [name, name.removesuffix(GIT_SUFFIX)]
    return [name, name + GIT_SUFFIX]
