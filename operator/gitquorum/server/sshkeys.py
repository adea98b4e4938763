"""The SSH keys file: which public keys may use the SSH transport, and for what.

One key per line, ``read|write <type> <base64> [comment]``, the last three fields as in an
OpenSSH ``authorized_keys`` or ``.pub`` file: ``read`` keys may clone and fetch, ``write``
keys may also push. Blank lines and lines starting with ``#`` are ignored. The server notices
changes while it runs, like the auth file (``auth``): a new version that does not parse is
logged and the keys it had are kept, so a typo cannot lock everybody out.
"""

import asyncio
import dataclasses
import logging
import os
import pathlib
import re
import time
from collections.abc import Callable

import asyncssh

from gitquorum import errors
from gitquorum.server import auth

log = logging.getLogger(__name__)

COMMENT = "#"

# A line is a permission, a key type, its base64 and a comment: an RSA key of 16384 bits is
# under 3 KiB of base64, so anything much longer is not a key and is refused before it is
# decoded.
MAX_LINE_LENGTH = 8 * 1024

# The file is read whole on every change; it bounds the memory and time one reload takes.
MAX_FILE_BYTES = 4 * 1024 * 1024

# What a key is called in logs and in git's REMOTE_USER: its comment when it is a plain name.
_LABEL = re.compile(r"[A-Za-z0-9._@+-]{1,64}")


@dataclasses.dataclass(frozen=True)
class Key:
    """One line of the keys file."""

    key: asyncssh.SSHKey
    permission: auth.Permission
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        """OpenSSH's SHA256 fingerprint, as ``ssh-keygen -l`` shows it."""
        return str(self.key.get_fingerprint("sha256"))

    @property
    def label(self) -> str:
        """The key's name: its comment if that is a plain name, else its fingerprint."""
        return self.comment if _LABEL.fullmatch(self.comment) else self.fingerprint


def parse(text: str) -> dict[bytes, Key]:
    """The keys of a keys file's text, by their public key blob; names the first bad line."""
    keys: dict[bytes, Key] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(COMMENT):
            continue
        try:
            key = parse_line(line.strip())
        except errors.AuthFileError as error:
            raise errors.AuthFileError(f"keys file line {number}: {error}") from error
        blob = key.key.public_data
        if blob in keys:
            raise errors.AuthFileError(f"keys file line {number}: the same key again")
        keys[blob] = key
    return keys


def parse_line(line: str) -> Key:
    """One ``read|write <type> <base64> [comment]`` line."""
    if len(line) > MAX_LINE_LENGTH:
        raise errors.AuthFileError(f"line longer than {MAX_LINE_LENGTH} characters")
    fields = line.split(None, 3)
    if len(fields) < 3:
        raise errors.AuthFileError("expected read|write <type> <base64> [comment]")
    try:
        permission = auth.Permission(fields[0])
    except ValueError as error:
        raise errors.AuthFileError(f"permission is read or write, not {fields[0]!r}") from error
    try:
        key = asyncssh.import_public_key(f"{fields[1]} {fields[2]}")
    except (asyncssh.KeyImportError, ValueError) as error:
        raise errors.AuthFileError(f"not a public key: {error}") from error
    comment = fields[3].strip() if len(fields) == 4 else ""
    return Key(key=key, permission=permission, comment=comment)


class KeysFile:
    """The keys allowed in, reloaded from their file when it changes."""

    def __init__(
        self,
        path: pathlib.Path | None,
        *,
        reload_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._reload_interval = reload_interval
        self._clock = clock
        self._keys: dict[bytes, Key] = {}
        self._file_state: tuple[int, int, int] | None = None
        self._checked_at = clock()

    def __len__(self) -> int:
        return len(self._keys)

    def load(self) -> None:
        """Reads the file now; raises AuthFileError, for use at startup."""
        if self._path is None:
            return
        state, text = _read(self._path)
        self._keys = parse(text)
        self._file_state = state

    async def find(self, key: asyncssh.SSHKey) -> Key | None:
        """The entry of this public key, or None for a key not in the file."""
        await self._maybe_reload()
        return self._keys.get(key.public_data)

    async def _maybe_reload(self) -> None:
        if self._path is None or self._clock() - self._checked_at < self._reload_interval:
            return
        self._checked_at = self._clock()
        try:
            await asyncio.to_thread(self._reload_if_changed, self._path)
        except errors.AuthFileError as error:
            log.error(
                "keys file %s not reloaded, keeping %s keys: %s", self._path, len(self), error
            )

    def _reload_if_changed(self, path: pathlib.Path) -> None:
        try:
            stat = path.stat()
        except OSError as error:
            raise errors.AuthFileError(f"cannot read {path}: {error}") from error
        if (stat.st_ino, stat.st_size, stat.st_mtime_ns) == self._file_state:
            return
        state, text = _read(path)
        self._keys = parse(text)
        self._file_state = state
        log.info("keys file %s reloaded: %s keys", path, len(self._keys))


def _read(path: pathlib.Path) -> tuple[tuple[int, int, int], str]:
    try:
        with path.open("rb") as file:
            stat = os.fstat(file.fileno())
            if stat.st_size > MAX_FILE_BYTES:
                raise errors.AuthFileError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
            text = file.read(MAX_FILE_BYTES).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise errors.AuthFileError(f"cannot read {path}: {error}") from error
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns), text
