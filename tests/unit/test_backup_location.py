"""Object store locations: strict JSON, and the secret kept out of sight."""

import gc
import os
from typing import Any

import pytest

from gitquorum import errors
from gitquorum.backup import objectstore
from gitquorum.backup.location import Location

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-value"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
DOCUMENT: dict[str, Any] = {
    "endpoint": "https://s3.example.com:9000",
    "bucket": "backups",
    "prefix": "gitquorum/team/app/",
    "accessKey": "AKIA",
    "secretKey": SECRET,
    "caPem": PEM,
    "region": "eu-west-1",
}


def test_location_round_trip() -> None:
    location = Location.from_json(DOCUMENT)
    assert location.to_json() == DOCUMENT
    assert Location.from_json(location.to_json()) == location


def test_location_defaults_without_optional_fields() -> None:
    document = {k: v for k, v in DOCUMENT.items() if k not in ("caPem", "region")}
    location = Location.from_json(document)
    assert location.ca_pem is None and location.region == "us-east-1"
    assert "caPem" not in location.to_json()


def test_location_repr_hides_secret() -> None:
    assert SECRET not in repr(Location.from_json(DOCUMENT))


@pytest.mark.parametrize("field", ["endpoint", "bucket", "prefix", "accessKey", "secretKey"])
def test_location_rejects_missing_field(field: str) -> None:
    document = {k: v for k, v in DOCUMENT.items() if k != field}
    with pytest.raises(errors.BackupError, match=f"{field} must be a string"):
        Location.from_json(document)


def test_location_rejects_unknown_field() -> None:
    with pytest.raises(errors.BackupError, match="unknown field extra"):
        Location.from_json({**DOCUMENT, "extra": "x"})


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("endpoint", "ftp://host", "not an http"),
        ("endpoint", "s3.example.com", "not an http"),
        ("bucket", "B", "not a valid bucket name"),
        ("bucket", "a/b", "not a valid bucket name"),
        ("prefix", "/abs/", "must be empty or end in '/'"),
        ("prefix", "no-slash", "must be empty or end in '/'"),
        ("accessKey", "", "must not be empty"),
        ("secretKey", "", "must not be empty"),
        ("caPem", "not a certificate", "no PEM certificate"),
        ("region", "", "region must not be empty"),
        ("bucket", 3, "bucket must be a string"),
    ],
)
def test_location_rejects_value(field: str, value: object, match: str) -> None:
    with pytest.raises(errors.BackupError, match=match):
        Location.from_json({**DOCUMENT, field: value})


def test_objectstore_writes_ca_bundle_and_removes_it() -> None:
    store = objectstore.ObjectStore(Location.from_json(DOCUMENT))
    path = store.ca_file
    assert path is not None
    with open(path) as file:
        assert file.read() == PEM
    del store
    gc.collect()
    assert not os.path.exists(path)


@pytest.mark.parametrize("module", ["gitquorum.kube.running", "gitquorum.commands.replica"])
def test_processes_without_backups_leave_boto3_unloaded(module: str) -> None:
    """boto3 costs about 8 MB resident: the operator and the replicas load it only with a
    store (``stores.open_store``)."""
    import subprocess
    import sys

    probe = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('bo')))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert "boto3" not in loaded and "botocore" not in loaded, loaded
