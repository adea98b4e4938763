"""A real S3-compatible object store for tests that need no cluster: versitygw on loopback.

``running`` starts the pinned versitygw from the build cache (building it through
``hack/build-binaries.sh`` when it is missing) with its POSIX backend in a directory of the
caller's, on 127.0.0.1 at a port the kernel picked, with random root credentials; it creates the
bucket, which is also how it knows the store answers, yields where to reach it and stops the
process afterwards. The integration tier's ``object_store`` fixture is one such store per session.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import botocore.exceptions

from gitquorum_testbed import binaries, objectstore
from tests import ports, waiting

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

BUCKET = objectstore.BUCKET
REGION = objectstore.REGION
STARTUP_DEADLINE = 30.0
STOP_GRACE = 10.0


ObjectStoreEndpoint = objectstore.Endpoint
"""Where a running store answers and how to sign requests to it: the testbed's own type, so a
test written against either store reads the same."""


@contextlib.contextmanager
def running(
    directory: Path | None = None, *, bucket: str = BUCKET
) -> Iterator[ObjectStoreEndpoint]:
    """A versitygw serving ``directory`` (a fresh temporary one by default) until the end."""
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="s3-")))
        data = directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        log_path = directory / "versitygw.log"
        port = ports.free_port()
        store = ObjectStoreEndpoint(
            endpoint=f"http://127.0.0.1:{port}",
            access_key=secrets.token_hex(10),
            secret_key=secrets.token_urlsafe(30),
            bucket=bucket,
        )
        argv = [
            str(binaries.versitygw(build=True)),
            "--port",
            f"127.0.0.1:{port}",
            "--access",
            store.access_key,
            "--secret",
            store.secret_key,
            "--region",
            REGION,
            "posix",
            str(data),
        ]
        log = stack.enter_context(open(log_path, "ab"))
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        stack.callback(_stop, proc)
        s3 = store.client()
        waiting.until(
            f"versitygw on {store.endpoint} to create bucket {bucket}",
            lambda: proc.poll() is None and _create_bucket(s3, bucket),
            timeout=STARTUP_DEADLINE,
            seen=lambda: _describe(proc, log_path),
        )
        yield store


def _create_bucket(s3: S3Client, bucket: str) -> bool:
    try:
        s3.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _describe(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    state = "running" if proc.poll() is None else f"exited with {proc.returncode}"
    tail = log_path.read_text(errors="replace").splitlines()[-15:]
    return f"versitygw (pid {proc.pid}) {state}; its log ends:\n" + "\n".join(tail)
