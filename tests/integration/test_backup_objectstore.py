"""The backup object store against a real S3 implementation (versitygw on loopback)."""

import datetime
import logging
import pathlib
import secrets
import socket
import time

import pytest

from gitquorum import errors
from gitquorum.backup import layout, manifests, objectstore
from gitquorum.backup.location import Location
from gitquorum.replication import checksum
from tests.objectstore import ObjectStoreEndpoint

pytestmark = pytest.mark.integration

T0 = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=datetime.UTC)
UNREACHABLE_DEADLINE = 15.0


def _location(endpoint: ObjectStoreEndpoint, **changes: str) -> Location:
    # A prefix of its own per test: the store is shared by the session.
    prefix = layout.repository_prefix(f"t-{secrets.token_hex(4)}", "team", "app")
    values = {
        "endpoint": endpoint.endpoint,
        "bucket": endpoint.bucket,
        "prefix": prefix,
        "access_key": endpoint.access_key,
        "secret_key": endpoint.secret_key,
        **changes,
    }
    return Location(**values)


def _manifest(prefix: str, number: int, *, bundle: bool = True) -> manifests.Manifest:
    created = T0 + datetime.timedelta(hours=number)
    backup_id = layout.new_backup_id(created, f"{number:08x}")
    refs = {"refs/heads/main": f"{number:040x}"}
    return manifests.Manifest(
        id=backup_id,
        namespace="team",
        repository="app",
        created=created,
        generation=number,
        head="refs/heads/main",
        refs=refs,
        checksum=checksum.of(refs),
        kind="full",
        base=None,
        bundle=manifests.BundleFile(
            key=layout.bundle_key(prefix, backup_id), size=3, sha256="0" * 64, prerequisites=()
        )
        if bundle
        else None,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_objectstore_check_accepts_store(object_store: ObjectStoreEndpoint) -> None:
    objectstore.ObjectStore(_location(object_store)).check()


def test_objectstore_upload_download_round_trip(
    object_store: ObjectStoreEndpoint, tmp_path: pathlib.Path
) -> None:
    store = objectstore.ObjectStore(_location(object_store))
    source = tmp_path / "in.bin"
    source.write_bytes(secrets.token_bytes(3 * 1024 * 1024 + 7))
    key = store.location.prefix + "some/file"
    sent: list[int] = []
    store.upload(key, source, on_progress=sent.append)
    assert sum(sent) == source.stat().st_size
    received: list[int] = []
    target = tmp_path / "out.bin"
    store.download(key, target, on_progress=received.append)
    assert target.read_bytes() == source.read_bytes()
    assert sum(received) == source.stat().st_size


def test_objectstore_upload_multipart(
    object_store: ObjectStoreEndpoint, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objectstore, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(objectstore, "MULTIPART_CHUNK", 5 * 1024 * 1024)
    store = objectstore.ObjectStore(_location(object_store))
    source = tmp_path / "big.bin"
    source.write_bytes(secrets.token_bytes(12 * 1024 * 1024))
    key = store.location.prefix + "big"
    store.upload(key, source)
    store.download(key, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_objectstore_bytes_round_trip(object_store: ObjectStoreEndpoint) -> None:
    store = objectstore.ObjectStore(_location(object_store))
    key = store.location.prefix + "small"
    store.put_bytes(key, b"hello")
    assert store.get_bytes(key) == b"hello"


def test_objectstore_get_bytes_refuses_larger_than_limit(
    object_store: ObjectStoreEndpoint,
) -> None:
    store = objectstore.ObjectStore(_location(object_store))
    key = store.location.prefix + "small"
    store.put_bytes(key, b"hello")
    with pytest.raises(errors.ObjectStoreError, match="5 bytes, more than 4"):
        store.get_bytes(key, limit=4)


def test_objectstore_missing_key(object_store: ObjectStoreEndpoint, tmp_path: pathlib.Path) -> None:
    store = objectstore.ObjectStore(_location(object_store))
    key = store.location.prefix + "absent"
    with pytest.raises(errors.ObjectStoreError, match=f"{key} is not in bucket"):
        store.get_bytes(key)
    with pytest.raises(errors.ObjectStoreError, match=f"{key} is not in bucket"):
        store.download(key, tmp_path / "x")


def test_objectstore_list_manifests_sorted_and_skips_broken(
    object_store: ObjectStoreEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    store = objectstore.ObjectStore(_location(object_store))
    prefix = store.location.prefix
    written = [_manifest(prefix, number) for number in (3, 1, 2)]
    for manifest in written:
        store.put_bytes(layout.manifest_key(prefix, manifest.id), manifest.to_json())
        store.put_bytes(layout.bundle_key(prefix, manifest.id), b"abc")
    broken = layout.manifest_key(prefix, layout.new_backup_id(T0, "ffffffff"))
    store.put_bytes(broken, b"{not json")
    misplaced = layout.manifest_key(prefix, layout.new_backup_id(T0, "eeeeeeee"))
    store.put_bytes(misplaced, written[0].to_json())
    # Not manifests of this repository: below a backup, and a bundle without a manifest.
    store.put_bytes(f"{prefix}{written[0].id}/x/manifest.json", written[0].to_json())
    store.put_bytes(layout.bundle_key(prefix, layout.new_backup_id(T0, "dddddddd")), b"abc")
    with caplog.at_level(logging.WARNING, logger=objectstore.__name__):
        found = store.list_manifests()
    assert found == sorted(written, key=lambda m: m.id)
    assert broken in caplog.text and "not JSON" in caplog.text
    assert misplaced in caplog.text


def test_objectstore_list_manifests_of_empty_prefix(object_store: ObjectStoreEndpoint) -> None:
    assert objectstore.ObjectStore(_location(object_store)).list_manifests() == []


def test_objectstore_delete_backup(object_store: ObjectStoreEndpoint) -> None:
    store = objectstore.ObjectStore(_location(object_store))
    prefix = store.location.prefix
    kept, gone = _manifest(prefix, 1), _manifest(prefix, 2)
    for manifest in (kept, gone):
        store.put_bytes(layout.manifest_key(prefix, manifest.id), manifest.to_json())
        store.put_bytes(layout.bundle_key(prefix, manifest.id), b"abc")
    store.delete_backup(gone.id)
    assert store.list_manifests() == [kept]
    with pytest.raises(errors.ObjectStoreError, match="is not in bucket"):
        store.get_bytes(layout.bundle_key(prefix, gone.id))
    assert store.get_bytes(layout.bundle_key(prefix, kept.id)) == b"abc"
    store.delete_backup(gone.id)  # deleting again is not an error


def test_objectstore_wrong_secret_is_refused_credentials(
    object_store: ObjectStoreEndpoint, tmp_path: pathlib.Path
) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    store = objectstore.ObjectStore(_location(object_store, secret_key=wrong))
    source = tmp_path / "f"
    source.write_bytes(b"x")
    for action in (
        store.check,
        store.list_manifests,
        lambda: store.put_bytes(store.location.prefix + "k", b"x"),
        lambda: store.upload(store.location.prefix + "k", source),
    ):
        with pytest.raises(errors.ObjectStoreError) as raised:
            action()
        message = str(raised.value)
        assert f"the object store at {object_store.endpoint} refused the credentials" in message
        assert "check the Secret's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
        assert wrong not in message and object_store.secret_key not in message


def test_objectstore_unknown_access_key_is_refused_credentials(
    object_store: ObjectStoreEndpoint,
) -> None:
    store = objectstore.ObjectStore(_location(object_store, access_key="nobody"))
    with pytest.raises(errors.ObjectStoreError, match="refused the credentials"):
        store.check()


def test_objectstore_unreachable_fails_fast(tmp_path: pathlib.Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    location = Location(endpoint=endpoint, bucket="b-1", prefix="", access_key="a", secret_key="s")
    store = objectstore.ObjectStore(location)
    started = time.monotonic()
    with pytest.raises(
        errors.ObjectStoreError, match=f"cannot reach the object store at {endpoint}"
    ):
        store.check()
    with pytest.raises(errors.ObjectStoreError, match="cannot reach"):
        store.list_manifests()
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(errors.ObjectStoreError, match="cannot reach"):
        store.upload("k", source)
    assert time.monotonic() - started < UNREACHABLE_DEADLINE


def test_objectstore_missing_bucket(object_store: ObjectStoreEndpoint) -> None:
    store = objectstore.ObjectStore(_location(object_store, bucket="no-such-bucket"))
    with pytest.raises(errors.ObjectStoreError, match="the bucket no-such-bucket does not exist"):
        store.check()
    with pytest.raises(errors.ObjectStoreError, match="the bucket no-such-bucket does not exist"):
        store.list_manifests()
    with pytest.raises(errors.ObjectStoreError, match="the bucket no-such-bucket does not exist"):
        store.put_bytes("k", b"x")
