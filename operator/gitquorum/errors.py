"""The errors gitquorum raises on purpose.

Every error the package raises deliberately derives from :class:`GitquorumError`, so callers
can tell our decisions apart from bugs. The hierarchy follows who is at fault and what the
caller should do, not which module raised it:

- :class:`ConfigError`: the operator of the server gave us something unusable (a settings
  value, an auth file); fatal at startup, logged and ignored on a later reload.
- :class:`RequestError` and its subclasses: the client asked for something it may not have or
  that does not exist; the HTTP layer maps each to a status code. :class:`MalformedMessage`
  is the replication and admin ports' kind of :class:`BadRequest`: refused before any state
  changes.
- :class:`ProtocolError`: the client spoke the git protocol wrongly; answered inside the git
  protocol (an ``ERR`` packet) so that git prints it.
- :class:`Unavailable`: the server cannot take the request now (busy, shutting down); the
  client may retry.
- :class:`GitFailed`: a git process we ran exited with an error.
- :class:`BackupError` and its subclasses: a backup or restore could not be made.
  :class:`ObjectStoreError` when the object store cannot be used (unreachable, credentials
  refused, bucket missing, access denied): the user fixes the settings or the store and tries
  again. :class:`BackupCorrupt` when what the store holds is not a sound backup (a checksum
  that does not match, a bundle or manifest git or we refuse, refs that do not resolve): that
  backup cannot be restored, an older one may.

Library errors are wrapped with ``raise ... from`` so the original stays in the logs.
"""


class GitquorumError(Exception):
    """Base of every error gitquorum raises on purpose."""


class ConfigError(GitquorumError):
    """A setting, file or argument given by the server's operator is unusable."""


class AuthFileError(ConfigError):
    """The auth file cannot be read or has a malformed line."""


class RequestError(GitquorumError):
    """The client's request cannot be served as asked."""


class BadRequest(RequestError):
    """The request is malformed at the HTTP level (query, headers, encoding)."""


class MalformedMessage(BadRequest):
    """A replication or admin message that does not parse: not JSON, nested too deeply, a field
    missing, of the wrong type or out of range. Nothing of it has been acted on."""


class UnsupportedMediaType(RequestError):
    """The request body has a content type or encoding we do not accept."""


class Unauthorized(RequestError):
    """No credentials, or wrong ones, for something that needs them."""


class Forbidden(RequestError):
    """The client is known but may not do this, or the request is refused outright."""


class PathRefused(Forbidden):
    """The repository path is not a plain path below the served root."""


class RepositoryNotFound(RequestError):
    """No bare repository answers to the requested path."""


class BodyTooLarge(RequestError):
    """The request body exceeds its configured limit."""


class RequestTimeout(RequestError):
    """The client sent its request too slowly, or the request ran past its time limit."""


class ProtocolError(GitquorumError):
    """The client sent git protocol data that does not follow the protocol."""

    def __init__(self, message: str, *, sideband: bool = False) -> None:
        super().__init__(message)
        self.sideband = sideband
        """Whether the client asked for side-band, so the answer must travel on band 3."""


class Unavailable(GitquorumError):
    """The server cannot take the request now; a retry later may succeed."""


class GitFailed(GitquorumError):
    """A git process exited with an error status."""

    def __init__(self, command: str, returncode: int, stderr: str) -> None:
        message = stderr.strip().splitlines()[-1] if stderr.strip() else "no message"
        super().__init__(f"git {command} exited with status {returncode}: {message}")
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        self.message = message


class ReplicationError(GitquorumError):
    """A replication message or a replica's stored state is malformed or inconsistent."""


class PushRefused(RequestError):
    """A push breaks a rule of the repository (a protected ref); nothing of it is applied."""


class NoQuorum(Unavailable):
    """Too few replicas confirmed in time: nothing was acknowledged."""


class Fenced(Unavailable):
    """A newer term exists: this replica no longer leads, and its decision stands void."""


class Conflict(RequestError):
    """The request contradicts a newer state (an outdated term, say)."""


class BackupError(GitquorumError):
    """A backup to, or a restore from, object storage failed."""


class ObjectStoreError(BackupError):
    """The object store cannot be used: unreachable, credentials refused, bucket missing or
    access denied. The message says which, for a user to fix, and never holds the secret."""


class BackupCorrupt(BackupError):
    """A backup in the store is not sound: a malformed manifest, a bundle whose size or
    checksum does not match it, a bundle git refuses, refs that do not resolve, or objects
    that fail git fsck."""
