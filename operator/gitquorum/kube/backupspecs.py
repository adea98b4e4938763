"""``spec.backup`` and ``spec.bootstrap.fromBackup`` as typed values, and where they point.

The CRD schema validates the shapes; what it cannot check (the Secret exists and holds both
keys, the cron expression parses) is checked here, into a sentence the status can carry.
"""

import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

from gitquorum import errors
from gitquorum.backup import layout, schedule
from gitquorum.backup import retention as keeping
from gitquorum.backup.location import Location

ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
CA_KEY = "ca.crt"
DEFAULT_PATH = "gitquorum"
DEFAULT_REGION = "us-east-1"
DEFAULT_MAX_INCREMENTALS = 6

ReadSecret = Callable[[str, str], "dict[str, str] | None"]
"""(namespace, name) -> the Secret's decoded data, None when there is none."""


@dataclasses.dataclass(frozen=True)
class ObjectStoreSpec:
    """``objectStore``: a bucket and the Secret with its credentials."""

    endpoint: str
    bucket: str
    credentials_secret: str
    path: str = DEFAULT_PATH
    """Key prefix in the bucket; a repository's backups go under ``<path>/<ns>/<name>/``."""
    region: str = DEFAULT_REGION
    ca_secret: str | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "ObjectStoreSpec":
        return cls(
            endpoint=str(body.get("endpoint", "")),
            bucket=str(body.get("bucket", "")),
            credentials_secret=str(body.get("credentialsSecret", "")),
            path=str(body.get("path", DEFAULT_PATH)).strip("/"),
            region=str(body.get("region") or DEFAULT_REGION),
            ca_secret=body.get("caSecret") or None,
        )

    def to_status(self) -> dict[str, Any]:
        status = {
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "path": self.path,
            "region": self.region,
            "credentialsSecret": self.credentials_secret,
        }
        if self.ca_secret:
            status["caSecret"] = self.ca_secret
        return status

    def location(
        self, read_secret: ReadSecret, *, namespace: str, repository_namespace: str, repository: str
    ) -> Location:
        """The store with its credentials, for the backups of ``repository_namespace/repository``
        (the Secrets are read in ``namespace``); ConfigError says what is missing."""
        credentials = read_secret(namespace, self.credentials_secret)
        if credentials is None:
            raise errors.ConfigError(
                f"Secret {namespace}/{self.credentials_secret} (objectStore.credentialsSecret) "
                "does not exist"
            )
        missing = [key for key in (ACCESS_KEY, SECRET_KEY) if not credentials.get(key)]
        if missing:
            raise errors.ConfigError(
                f"Secret {namespace}/{self.credentials_secret} lacks {' and '.join(missing)}"
            )
        ca_pem = None
        if self.ca_secret:
            authority = read_secret(namespace, self.ca_secret) or {}
            ca_pem = authority.get(CA_KEY)
            if not ca_pem:
                raise errors.ConfigError(
                    f"Secret {namespace}/{self.ca_secret} (objectStore.caSecret) has no {CA_KEY}"
                )
        return Location(
            endpoint=self.endpoint,
            bucket=self.bucket,
            prefix=layout.repository_prefix(self.path, repository_namespace, repository),
            access_key=credentials[ACCESS_KEY],
            secret_key=credentials[SECRET_KEY],
            ca_pem=ca_pem,
            region=self.region,
        )


@dataclasses.dataclass(frozen=True)
class BackupSpec:
    """``spec.backup``."""

    object_store: ObjectStoreSpec
    schedule: str | None = None
    """A cron expression (UTC); None: backups only when a GitRepositoryBackup asks."""
    max_incrementals: int = DEFAULT_MAX_INCREMENTALS
    retention: keeping.Retention = dataclasses.field(default_factory=keeping.Retention)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "BackupSpec | None":
        body = spec.get("backup")
        if not body or not body.get("objectStore"):
            return None
        kept = body.get("retention") or {}
        return cls(
            object_store=ObjectStoreSpec.from_body(body["objectStore"]),
            schedule=body.get("schedule") or None,
            max_incrementals=int(body.get("maxIncrementals", DEFAULT_MAX_INCREMENTALS)),
            retention=keeping.Retention(
                last=kept.get("last"),
                daily=kept.get("daily"),
                weekly=kept.get("weekly"),
                monthly=kept.get("monthly"),
            ),
        )

    def schedule_problem(self) -> str | None:
        if self.schedule is None:
            return None
        problem = schedule.validate(self.schedule)
        return None if problem is None else f"spec.backup.schedule: {problem}"


@dataclasses.dataclass(frozen=True)
class RestoreSpec:
    """``spec.bootstrap.fromBackup``: a GitRepositoryBackup by name, or the store alone."""

    name: str | None = None
    object_store: ObjectStoreSpec | None = None
    repository: str | None = None
    namespace: str | None = None
    backup_id: str | None = None
    before: datetime.datetime | None = None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "RestoreSpec | None":
        body = (spec.get("bootstrap") or {}).get("fromBackup")
        if not body:
            return None
        store = body.get("objectStore")
        before = body.get("before")
        return cls(
            name=body.get("name") or None,
            object_store=ObjectStoreSpec.from_body(store) if store else None,
            repository=body.get("repository") or None,
            namespace=body.get("namespace") or None,
            backup_id=body.get("backupId") or None,
            before=_timestamp(before) if before else None,
        )


def _timestamp(value: Any) -> datetime.datetime:
    parsed = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.astimezone(datetime.UTC)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime.datetime | None:
    """A status timestamp; None when absent or unreadable (a status is ours to rewrite)."""
    if not value:
        return None
    try:
        return _timestamp(value)
    except ValueError:
        return None
