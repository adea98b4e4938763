"""The S3-compatible object store that holds backups, through boto3.

:class:`ObjectStore`, at a :class:`location.Location`, does the few things backups need
(check, upload, download, small objects, list manifests, delete a backup) and turns every
botocore failure into an :class:`errors.ObjectStoreError` whose message says what a user can do
about it: the store is unreachable, the credentials are refused, the bucket is missing, access
is denied.

The client is set up for S3-compatible stores rather than AWS alone: path-style addressing
(``http://host/bucket/key``: no wildcard DNS needed), checksums only where S3 requires them
(newer botocore adds trailing checksums that some stores refuse), and short timeouts with one
retry, so an unreachable store fails within about ten seconds instead of the minutes of
botocore's defaults. Every method blocks: callers on an event loop run them in a thread.

The secret key never appears in a message or a log line: the location leaves it out of its
repr, and no message quotes the signed request. Open a store with ``stores.open_store``, so
that boto3 is loaded only by a process that uses one.
"""

import contextlib
import logging
import os
import tempfile
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import boto3
import boto3.exceptions
import boto3.s3.transfer
import botocore.config
import botocore.exceptions

from gitquorum import errors
from gitquorum.backup import layout, manifests
from gitquorum.backup.location import Location

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 4.0
"""Seconds to open a connection; with one retry, an unreachable store fails within ~10 s."""
READ_TIMEOUT = 30.0
"""Seconds to wait for a response; a store that accepted a part may take a while to store it."""
MAX_ATTEMPTS = 2
"""Attempts per request, the first included: one retry covers a dropped keep-alive connection."""
MULTIPART_THRESHOLD = 64 * 1024 * 1024
"""Files from this size on go up in parts: a failed part is retried alone, and S3 caps single
uploads at 5 GiB."""
MULTIPART_CHUNK = 64 * 1024 * 1024
"""The part size: 10 000 parts (S3's maximum) make 640 GiB."""
TRANSFER_THREADS = 4
"""Parts in flight at once."""
DELETE_BATCH = 1000
"""S3's maximum number of keys per DeleteObjects request."""

CREDENTIALS_REFUSED = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        # versitygw's answer to an access key it does not know, where S3 says InvalidAccessKeyId.
        "XAdminUserNotFound",
    }
)
BUCKET_MISSING = frozenset({"NoSuchBucket"})
ACCESS_DENIED = frozenset({"AccessDenied", "AllAccessDisabled", "403"})
KEY_MISSING = frozenset({"NoSuchKey", "404"})


class ObjectStore:
    """One bucket and prefix of an S3-compatible store; every method may raise
    ObjectStoreError."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.ca_file: str | None = None
        """The CA bundle written for ``location.ca_pem``; removed with the store, since
        botocore reads it at every new connection."""
        if location.ca_pem is not None:
            self.ca_file = _ca_file(location.ca_pem)
            weakref.finalize(self, _remove, self.ca_file)
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=location.endpoint,
            aws_access_key_id=location.access_key,
            aws_secret_access_key=location.secret_key,
            region_name=location.region,
            verify=self.ca_file if self.ca_file is not None else True,
            config=botocore.config.Config(
                s3={"addressing_style": "path"},
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        self._transfer = boto3.s3.transfer.TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNK,
            max_concurrency=TRANSFER_THREADS,
        )

    def check(self) -> None:
        """Raises ObjectStoreError unless the bucket exists and the credentials are accepted."""
        bucket = self.location.bucket
        try:
            self._client.head_bucket(Bucket=bucket)
            return
        except botocore.exceptions.ClientError as error:
            if _code(error) not in ("400", "403", "404"):
                raise self._failure(error, f"bucket {bucket}") from error
        except Exception as error:
            raise self._failure(error, f"bucket {bucket}") from error
        # A HEAD response has no body, so only a status code says what is wrong; a listing of
        # at most one key tells a refused signature from a missing bucket or denied access.
        try:
            self._client.list_objects_v2(Bucket=bucket, Prefix=self.location.prefix, MaxKeys=1)
        except Exception as error:
            raise self._failure(error, f"bucket {bucket}") from error

    def upload(
        self, key: str, path: os.PathLike[str], *, on_progress: Callable[[int], None] | None = None
    ) -> None:
        """Uploads a file, in parts if large; ``on_progress`` gets the bytes sent since its
        last call (from transfer threads)."""
        try:
            self._client.upload_file(
                os.fspath(path),
                self.location.bucket,
                key,
                Callback=on_progress,
                Config=self._transfer,
            )
        except Exception as error:
            raise self._failure(error, key) from error
        log.info("uploaded %s to %s", key, self.location.endpoint)

    def download(
        self, key: str, path: os.PathLike[str], *, on_progress: Callable[[int], None] | None = None
    ) -> None:
        """Downloads an object into a file; ``on_progress`` as for :meth:`upload`."""
        try:
            self._client.download_file(
                self.location.bucket,
                key,
                os.fspath(path),
                Callback=on_progress,
                Config=self._transfer,
            )
        except Exception as error:
            raise self._failure(error, key) from error

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.location.bucket, Key=key, Body=data)
        except Exception as error:
            raise self._failure(error, key) from error

    def get_bytes(self, key: str, *, limit: int | None = None) -> bytes:
        """An object's bytes; with ``limit``, ObjectStoreError for a larger object."""
        try:
            response = self._client.get_object(Bucket=self.location.bucket, Key=key)
            if limit is not None and response["ContentLength"] > limit:
                response["Body"].close()
                raise errors.ObjectStoreError(
                    f"object {key} is {response['ContentLength']} bytes, more than {limit}"
                )
            return response["Body"].read()
        except errors.ObjectStoreError:
            raise
        except Exception as error:
            raise self._failure(error, key) from error

    def list_manifests(self) -> list[manifests.Manifest]:
        """Every backup's manifest under the prefix, oldest first; a manifest that does not
        parse, or names another backup than its key, is skipped with a warning."""
        found: list[manifests.Manifest] = []
        for key in self._keys(self.location.prefix):
            backup_id = layout.backup_id_of(key)
            if backup_id is None or key != layout.manifest_key(self.location.prefix, backup_id):
                continue
            try:
                manifest = manifests.from_json(
                    self.get_bytes(key, limit=manifests.MAX_MANIFEST_BYTES)
                )
            except errors.BackupCorrupt as error:
                log.warning("skipping the backup manifest %s: %s", key, error)
                continue
            if manifest.id != backup_id:
                log.warning("skipping the backup manifest %s: it is of %s", key, manifest.id)
                continue
            found.append(manifest)
        return sorted(found, key=lambda manifest: manifest.id)

    def delete_backup(self, backup_id: str) -> None:
        """Deletes a backup's objects, its manifest first: from then on the backup no longer
        counts, even if deleting the rest fails and is left to a later try."""
        prefix = self.location.prefix
        manifest = layout.manifest_key(prefix, backup_id)
        try:
            self._client.delete_object(Bucket=self.location.bucket, Key=manifest)
        except Exception as error:
            raise self._failure(error, manifest) from error
        keys = list(self._keys(f"{prefix}{backup_id}/"))
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            try:
                response = self._client.delete_objects(
                    Bucket=self.location.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            except Exception as error:
                raise self._failure(error, f"{prefix}{backup_id}/") from error
            failed = response.get("Errors", [])
            if failed:
                first = failed[0]
                raise errors.ObjectStoreError(
                    f"the object store at {self.location.endpoint} kept {len(failed)} objects of "
                    f"backup {backup_id}: {first.get('Key')}: {first.get('Code')}"
                )
        log.info("deleted backup %s under %s", backup_id, prefix)

    def _keys(self, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if "Key" in item:
                        yield item["Key"]
        except Exception as error:
            raise self._failure(error, prefix or "the bucket's root") from error

    def _failure(self, error: Exception, what: str) -> errors.ObjectStoreError:
        """The ObjectStoreError a user can act on, for a botocore or boto3 failure on ``what``."""
        endpoint = self.location.endpoint
        bucket = self.location.bucket
        cause = _client_error(error)
        if cause is None:
            if isinstance(error, botocore.exceptions.BotoCoreError | OSError):
                return errors.ObjectStoreError(
                    f"cannot reach the object store at {endpoint}: {error}"
                )
            return errors.ObjectStoreError(
                f"the object store at {endpoint} failed on {what}: {type(error).__name__}: {error}"
            )
        code = _code(cause)
        if code in CREDENTIALS_REFUSED:
            return errors.ObjectStoreError(
                f"the object store at {endpoint} refused the credentials ({code}): check the "
                "Secret's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if code in BUCKET_MISSING:
            return errors.ObjectStoreError(
                f"the bucket {bucket} does not exist at {endpoint}: create it, or check the "
                "bucket name"
            )
        if code in ACCESS_DENIED:
            return errors.ObjectStoreError(
                f"the object store at {endpoint} denied access to {what} in bucket {bucket} "
                f"({code}): the credentials need read, write, list and delete there"
            )
        if code in KEY_MISSING:
            return errors.ObjectStoreError(f"{what} is not in bucket {bucket} at {endpoint}")
        message = cause.response.get("Error", {}).get("Message", "")
        return errors.ObjectStoreError(
            f"the object store at {endpoint} refused a request on {what} ({code}): {message}"
        )


def _client_error(error: BaseException) -> botocore.exceptions.ClientError | None:
    """The S3 error answer behind ``error``; boto3's transfers wrap it without ``from``."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, botocore.exceptions.ClientError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _code(error: botocore.exceptions.ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "unknown"))


def _ca_file(pem: str) -> str:
    with tempfile.NamedTemporaryFile("w", prefix="gitquorum-ca-", suffix=".pem", delete=False) as f:
        f.write(pem)
        return f.name


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
