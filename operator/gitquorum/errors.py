"""The errors gitquorum raises on purpose, and the one rule that turns them into answers.

Every error the package raises deliberately derives from :class:`GitquorumError`, so callers
can tell our decisions apart from bugs. The hierarchy follows who is at fault and what the
caller should do, not which module raised it:

- :class:`ConfigError` (and :class:`AuthFileError`): the operator of the server gave us
  something unusable (a settings value, an auth file); fatal at startup, logged and ignored on
  a later reload.
- :class:`RequestError` and its subclasses: the client asked for something it may not have
  (:class:`Unauthorized`, :class:`Forbidden`, :class:`PathRefused`), that does not exist
  (:class:`RepositoryNotFound`), that contradicts newer state (:class:`Conflict`, an outdated
  term) or that breaks a rule of the repository (:class:`PushRefused`, a protected ref), or
  sent it badly (:class:`BadRequest`, :class:`UnsupportedMediaType`, :class:`BodyTooLarge`,
  :class:`RequestTimeout`). :class:`MalformedMessage` is the replication and admin ports'
  kind of :class:`BadRequest`: refused before any state changes.
- :class:`ProtocolError`: the client spoke the git protocol wrongly; answered inside the git
  protocol (an ``ERR`` packet) so that git prints it.
- :class:`ReplicationError`: a replication message or a replica's stored state is malformed
  or inconsistent.
- :class:`Unavailable`: the server cannot take the request now (busy, shutting down, not the
  leader); the client may retry. :class:`NoQuorum` when too few replicas confirmed a write in
  time, :class:`Fenced` when a newer term deposed the leader in the middle of one.
- :class:`GitFailed`: a git process we ran exited with an error.
- :class:`BackupError` and its subclasses: a backup or restore could not be made.
  :class:`ObjectStoreError` when the object store cannot be used (unreachable, credentials
  refused, bucket missing, access denied): the user fixes the settings or the store and tries
  again. :class:`BackupCorrupt` when what the store holds is not a sound backup (a checksum
  that does not match, a bundle or manifest git or we refuse, refs that do not resolve): that
  backup cannot be restored, an older one may.
- :class:`StaleObject`: the operator wrote a Kubernetes object that changed since it read it
  (HTTP 409): it reads again and decides again.

:func:`answer` maps an error to its HTTP status and the outcome its log line and metrics
carry, one rule for the git port, the replication and admin port and SSH sessions.

Library errors are wrapped with ``raise ... from`` so the original stays in the logs.
"""

import dataclasses


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
        message = _gist(stderr)
        super().__init__(f"git {command} exited with status {returncode}: {message}")
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        self.message = message


def _gist(stderr: str) -> str:
    """The line of git's stderr that says what went wrong: its first ``fatal:`` or ``error:``
    line (git adds advice after it, "remove the file manually to continue"), else its last."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else "no message"


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


class StaleObject(GitquorumError):
    """A Kubernetes object changed since it was read (HTTP 409): read again, decide again."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """How an error is answered: the HTTP status and the outcome for logs and metrics."""

    status: int
    outcome: str


# Most specific first: the first class an error is an instance of decides.
_ANSWERS: tuple[tuple[type[BaseException], Answer], ...] = (
    (Unauthorized, Answer(401, "unauthorized")),
    (PushRefused, Answer(403, "forbidden")),
    (Forbidden, Answer(403, "forbidden")),
    (RepositoryNotFound, Answer(404, "not_found")),
    (Conflict, Answer(409, "conflict")),
    (RequestTimeout, Answer(408, "timeout")),
    (TimeoutError, Answer(408, "timeout")),
    (BodyTooLarge, Answer(413, "too_large")),
    (UnsupportedMediaType, Answer(415, "unsupported_media_type")),
    (ProtocolError, Answer(400, "protocol_error")),
    (RequestError, Answer(400, "bad_request")),
    (ReplicationError, Answer(400, "bad_request")),
    (Unavailable, Answer(503, "unavailable")),
    (GitFailed, Answer(500, "git_error")),
)
INTERNAL = Answer(500, "internal_error")
"""Anything else: a bug, or a failure we did not foresee."""


def answer(error: BaseException) -> Answer:
    """The HTTP status and outcome of ``error``: the same on every port."""
    for kind, answered in _ANSWERS:
        if isinstance(error, kind):
            return answered
    return INTERNAL
