"""Users and their tokens: the auth file, and checking HTTP Basic credentials against it.

The auth file has one user per line, ``USER:SECRET`` or ``USER:SECRET:PERMISSION``, where
SECRET is a hashed token (see ``passwords``) and PERMISSION is ``write`` (the default: clone,
fetch and push) or ``read`` (clone and fetch). Blank lines and lines starting with ``#`` are
kept but ignored. ``gitquorum passwd`` edits the file; the server notices changes while it
runs, and keeps the users it had if a new version does not parse.

A token check costs a deliberately slow hash, in a worker thread and at most a few at once.
A success is remembered for a while under a keyed hash of (user, token), never the token
itself, and only as long as the user's stored secret is unchanged: replacing or deleting the
user in the file revokes it at the next reload. Unknown users cost the same hash as known
ones, so timing does not tell which names exist.
"""

import asyncio
import base64
import binascii
import collections
import dataclasses
import enum
import hashlib
import hmac
import logging
import os
import pathlib
import re
import secrets
import time
from collections.abc import Callable

from gitquorum import errors
from gitquorum.server import passwords

log = logging.getLogger(__name__)

COMMENT = "#"
USER_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")

# Each cached success takes a few hundred bytes; the bound keeps a flood of distinct valid
# logins from growing the cache without end.
MAX_CACHE_ENTRIES = 4096

# Basic credentials are a user and a token in base64; anything longer than this is not one of
# ours and is refused before it is decoded.
MAX_AUTHORIZATION_LENGTH = 4096


class Permission(enum.Enum):
    """What a user may do."""

    READ = "read"
    WRITE = "write"

    def allows(self, needed: "Permission") -> bool:
        return self is Permission.WRITE or needed is Permission.READ


@dataclasses.dataclass(frozen=True)
class User:
    """One line of the auth file."""

    name: str
    secret: passwords.StoredSecret
    permission: Permission = Permission.WRITE


def parse(text: str) -> dict[str, User]:
    """The users of an auth file's text; AuthFileError names the first bad line."""
    users: dict[str, User] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(COMMENT):
            continue
        try:
            user = _parse_line(line.strip())
        except errors.AuthFileError as error:
            raise errors.AuthFileError(f"auth file line {number}: {error}") from error
        if user.name in users:
            raise errors.AuthFileError(f"auth file line {number}: user {user.name} again")
        users[user.name] = user
    return users


def render(name: str, secret: str, *, permission: Permission = Permission.WRITE) -> str:
    """The auth file line for one user."""
    check_name(name)
    if permission is Permission.WRITE:
        return f"{name}:{secret}"
    return f"{name}:{secret}:{permission.value}"


def replace(text: str, name: str, *, line: str | None) -> str:
    """The file's text with the user's line replaced, appended, or (line None) removed."""
    kept = [
        existing
        for existing in text.splitlines()
        if existing.strip().startswith(COMMENT) or existing.split(":", 1)[0].strip() != name
    ]
    if line is not None:
        kept.append(line)
    return "".join(f"{existing}\n" for existing in kept)


def check_name(name: str) -> None:
    if not USER_NAME.fullmatch(name):
        raise errors.ConfigError(f"user names are 1-64 of A-Z a-z 0-9 . _ @ + -, not {name!r}")


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, token) from an ``Authorization: Basic`` header; None for other schemes."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        raise errors.Unauthorized("credentials too long")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as error:
        raise errors.Unauthorized("malformed Basic credentials") from error
    user, separator, token = decoded.partition(":")
    if not separator:
        raise errors.Unauthorized("malformed Basic credentials")
    return user, token


class Authenticator:
    """Checks credentials against the auth file, reloading it when it changes."""

    def __init__(
        self,
        path: pathlib.Path | None,
        *,
        cache_seconds: float,
        reload_interval: float,
        max_threads: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._cache_seconds = cache_seconds
        self._reload_interval = reload_interval
        self._clock = clock
        self._threads = asyncio.Semaphore(max_threads)
        self._users: dict[str, User] = {}
        self._file_state: tuple[int, int, int] | None = None
        self._checked_at = clock()
        self._cache_key = secrets.token_bytes(32)
        self._cache: collections.OrderedDict[bytes, tuple[float, str]] = collections.OrderedDict()
        self._decoy = passwords.StoredSecret.parse(passwords.hash_token(secrets.token_bytes(16)))
        self.hashes_computed = 0

    @property
    def users(self) -> dict[str, User]:
        return dict(self._users)

    def load(self) -> None:
        """Reads the file now; raises AuthFileError, for use at startup."""
        if self._path is None:
            return
        state, text = _read(self._path)
        self._users = parse(text)
        self._file_state = state

    async def authenticate(self, name: str, token: str) -> User | None:
        """The user these credentials prove, or None."""
        await self._maybe_reload()
        user = self._users.get(name)
        key = hmac.digest(self._cache_key, f"{name}\0{token}".encode(), hashlib.sha256)
        cached = self._cache.get(key)
        now = self._clock()
        if user and cached and cached[0] > now and cached[1] == user.secret.encode():
            return user
        self._cache.pop(key, None)
        secret = user.secret if user else self._decoy
        async with self._threads:
            valid = await asyncio.to_thread(passwords.verify, token.encode(), secret)
        self.hashes_computed += 1
        if not (valid and user):
            return None
        self._cache[key] = (now + self._cache_seconds, user.secret.encode())
        while len(self._cache) > MAX_CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return user

    async def _maybe_reload(self) -> None:
        if self._path is None or self._clock() - self._checked_at < self._reload_interval:
            return
        self._checked_at = self._clock()
        try:
            await asyncio.to_thread(self._reload_if_changed, self._path)
        except errors.AuthFileError as error:
            log.error(
                "auth file %s not reloaded, keeping %s users: %s",
                self._path,
                len(self._users),
                error,
            )

    def _reload_if_changed(self, path: pathlib.Path) -> None:
        try:
            stat = path.stat()
        except OSError as error:
            raise errors.AuthFileError(f"cannot read {path}: {error}") from error
        if (stat.st_ino, stat.st_size, stat.st_mtime_ns) == self._file_state:
            return
        state, text = _read(path)
        self._users = parse(text)
        self._file_state = state
        # Successes were tied to the old secrets; the comparison in authenticate already
        # refuses stale ones, dropping them here just frees the memory.
        self._cache.clear()
        log.info("auth file %s reloaded: %s users", path, len(self._users))


def _read(path: pathlib.Path) -> tuple[tuple[int, int, int], str]:
    try:
        with path.open("rb") as file:
            stat = os.fstat(file.fileno())
            text = file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise errors.AuthFileError(f"cannot read {path}: {error}") from error
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns), text


def _parse_line(line: str) -> User:
    fields = line.split(":")
    if len(fields) not in (2, 3):
        raise errors.AuthFileError("expected USER:SECRET or USER:SECRET:PERMISSION")
    name, secret = fields[0], fields[1]
    if not USER_NAME.fullmatch(name):
        raise errors.AuthFileError(f"invalid user name {name[:64]!r}")
    try:
        permission = Permission(fields[2]) if len(fields) == 3 else Permission.WRITE
    except ValueError as error:
        raise errors.AuthFileError(f"permission is read or write, not {fields[2]!r}") from error
    return User(name=name, secret=passwords.StoredSecret.parse(secret), permission=permission)


async def authorize(
    authenticator: Authenticator,
    authorization: str | None,
    *,
    needed: Permission,
    anonymous_read: bool,
) -> str | None:
    """The user allowed to do what is ``needed``, None for anonymous reads; else raises.

    Wrong credentials are refused even where anonymous access would do, so a client with a
    stale token learns about it instead of silently reading as nobody.
    """
    credentials = parse_basic(authorization) if authorization else None
    if credentials is None:
        if needed is Permission.READ and anonymous_read:
            return None
        raise errors.Unauthorized("credentials required")
    user = await authenticator.authenticate(*credentials)
    if user is None:
        raise errors.Unauthorized("wrong user or token")
    if not user.permission.allows(needed):
        raise errors.Forbidden(f"user {user.name} may not {needed.value}")
    return user.name
