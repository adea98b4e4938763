"""The ``object_store`` fixture is a real S3 store: what is put is got and listed back."""

import botocore.exceptions
import pytest

from tests import objectstore

pytestmark = pytest.mark.integration


def test_object_store_put_then_get_returns_the_bytes(
    object_store: objectstore.ObjectStoreEndpoint,
):
    s3 = object_store.client()
    body = bytes(range(256)) * 1024
    s3.put_object(Bucket=object_store.bucket, Key="backups/r.git/1.pack", Body=body)
    got = s3.get_object(Bucket=object_store.bucket, Key="backups/r.git/1.pack")
    assert got["Body"].read() == body


def test_object_store_list_under_a_prefix_names_each_object(
    object_store: objectstore.ObjectStoreEndpoint,
):
    s3 = object_store.client()
    keys = [f"listing/r.git/{i}.bundle" for i in range(3)]
    for key in keys:
        s3.put_object(Bucket=object_store.bucket, Key=key, Body=key.encode())
    listed = s3.list_objects_v2(Bucket=object_store.bucket, Prefix="listing/")
    assert [o["Key"] for o in listed.get("Contents", [])] == keys


def test_object_store_wrong_secret_is_refused(object_store: objectstore.ObjectStoreEndpoint):
    forged = objectstore.ObjectStoreEndpoint(
        endpoint=object_store.endpoint,
        access_key=object_store.access_key,
        secret_key="not-the-secret",
        bucket=object_store.bucket,
    )
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        forged.client().list_objects_v2(Bucket=object_store.bucket)


def test_object_store_running_stops_its_process(tmp_path):
    with objectstore.running(tmp_path, bucket="stopped-store") as store:
        store.client().put_object(Bucket=store.bucket, Key="k", Body=b"v")
    assert (tmp_path / "data" / "stopped-store" / "k").read_bytes() == b"v"
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        store.client().list_objects_v2(Bucket=store.bucket)
