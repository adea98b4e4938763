"""Where one repository's backups live, and the credentials to reach them.

Apart from the store itself (``objectstore``), so that naming, checking and passing a location
around does not load boto3 (see ``stores``).
"""

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from gitquorum import errors

_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,62}")
_FIELDS = {
    "endpoint": "endpoint",
    "bucket": "bucket",
    "prefix": "prefix",
    "accessKey": "access_key",
    "secretKey": "secret_key",
    "caPem": "ca_pem",
    "region": "region",
}
_OPTIONAL = frozenset({"caPem", "region"})


@dataclasses.dataclass(frozen=True)
class Location:
    """Where one repository's backups live, and the credentials to reach them."""

    endpoint: str
    """The store's base URL, ``http(s)://host[:port]``."""
    bucket: str
    prefix: str
    """The key prefix of the repository's backups (:func:`layout.repository_prefix`), ending in
    ``/``; empty for the bucket's root."""
    access_key: str
    secret_key: str = dataclasses.field(repr=False)
    ca_pem: str | None = None
    """PEM certificates to trust for an ``https`` endpoint, instead of the system's."""
    region: str = "us-east-1"
    """Signed into every request; most S3-compatible stores accept any, AWS needs the bucket's."""

    def __post_init__(self) -> None:
        url = urllib.parse.urlsplit(self.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise errors.BackupError(f"endpoint {self.endpoint!r} is not an http(s) URL")
        if not _BUCKET.fullmatch(self.bucket):
            raise errors.BackupError(f"bucket {self.bucket!r} is not a valid bucket name")
        if self.prefix.startswith("/") or (self.prefix and not self.prefix.endswith("/")):
            raise errors.BackupError(f"prefix {self.prefix!r} must be empty or end in '/'")
        if not self.access_key or not self.secret_key:
            raise errors.BackupError("the access key and the secret key must not be empty")
        if self.ca_pem is not None and "-----BEGIN CERTIFICATE-----" not in self.ca_pem:
            raise errors.BackupError("caPem holds no PEM certificate")
        if not self.region:
            raise errors.BackupError("the region must not be empty")

    @classmethod
    def from_json(cls, document: Mapping[str, object]) -> "Location":
        """The location in a JSON object as :meth:`to_json` writes it; BackupError otherwise."""
        unknown = sorted(set(document) - set(_FIELDS))
        if unknown:
            raise errors.BackupError(f"unknown field {', '.join(unknown)[:200]}")
        values: dict[str, Any] = {}
        for name, attribute in _FIELDS.items():
            value = document.get(name)
            if value is None and name in _OPTIONAL:
                continue
            if not isinstance(value, str):
                raise errors.BackupError(f"{name} must be a string")
            values[attribute] = value
        return cls(**values)

    def to_json(self) -> dict[str, str]:
        document = {name: getattr(self, attribute) for name, attribute in _FIELDS.items()}
        return {name: value for name, value in document.items() if value is not None}
