"""The testbed's S3-compatible object store: versitygw on the host, a Service in the cluster.

versitygw runs as a host process, like the service proxy, with its POSIX backend under the
testbed root (``objectstore/data``, a directory per bucket, a file per object) and listens on
the bridge address only. A Service without a selector, ``object-store`` in the namespace
``gitquorum-testbed``, has a fixed ClusterIP and an EndpointSlice that the testbed writes itself,
pointing at that address; the service proxy forwards ``<ClusterIP>:80`` to it as to any pod. So
the store has one address, ``http://<ClusterIP>``, for the host and for every pod, as a store
outside a real cluster would.

The root account's credentials are generated once and kept in ``objectstore/credentials.json``,
so they survive ``down --keep-state`` together with the data.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import botocore.config
import botocore.exceptions
from kubernetes import client

from gitquorum_testbed import processes, settings

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

PROCESS = "objectstore"
NAMESPACE = "gitquorum-testbed"
SERVICE = "object-store"
PORT_NAME = "s3"
BUCKET = "gitquorum-backups"
REGION = "us-east-1"
MANAGED_BY = "testbed.gitquorum.io"
READY_TIMEOUT = 30.0


class ObjectStoreError(RuntimeError):
    """The object store is not set up; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where the testbed's object store answers and how to sign requests to it."""

    endpoint: str
    """Base URL, ``http://<ClusterIP>``: the same from the host and from every pod."""
    access_key: str
    """The root account's access key id."""
    secret_key: str
    """The root account's secret access key."""
    bucket: str
    """The bucket ``up`` creates, ``gitquorum-backups``."""

    def client(self) -> S3Client:
        """A boto3 S3 client with path-style addressing (no per-bucket DNS names here)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30
            ),
        )

    def env(self) -> dict[str, str]:
        """The variables the replica and the AWS tools read."""
        return {
            "GITQUORUM_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "GITQUORUM_S3_BUCKET": self.bucket,
        }


def endpoint(layout: settings.Layout) -> Endpoint:
    """The store of the testbed at ``layout``, once ``up`` has started it."""
    path = _credentials_file(layout)
    if not path.exists():
        raise ObjectStoreError(f"no object store credentials in {path}: run gitquorum-testbed up")
    saved = json.loads(path.read_text())
    return Endpoint(
        endpoint=f"http://{settings.OBJECT_STORE_SERVICE_IP}",
        access_key=saved["access_key"],
        secret_key=saved["secret_key"],
        bucket=BUCKET,
    )


def start(*, layout: settings.Layout, ports: settings.Ports, binary: Path) -> None:
    """Start versitygw on the bridge address unless it runs; idempotent."""
    if processes.running(PROCESS, pids=layout.pids) is not None:
        return
    access_key, secret_key = _ensure_credentials(layout)
    data = layout.object_store / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(binary),
        "--port",
        f"{settings.BRIDGE_ADDRESS}:{ports.object_store}",
        "--region",
        REGION,
        "--quiet",
        "posix",
        *_metadata_options(layout),
        str(data),
    ]
    # The credentials go in the environment, not on the command line that the pid file and
    # /proc/<pid>/cmdline show.
    env = {**os.environ, "ROOT_ACCESS_KEY_ID": access_key, "ROOT_SECRET_ACCESS_KEY": secret_key}
    processes.start(PROCESS, argv, pids=layout.pids, logs=layout.logs, env=env)


def stop(*, layout: settings.Layout) -> None:
    processes.stop(PROCESS, pids=layout.pids, grace=5)


def publish(*, api_client: client.ApiClient, ports: settings.Ports) -> None:
    """The namespace, the selector-less Service and its EndpointSlice; idempotent."""
    core = client.CoreV1Api(api_client)
    if not _exists(lambda: core.read_namespace(NAMESPACE)):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
    # Read before creating: asked for a ClusterIP it holds already, the apiserver answers 422
    # (the address is taken) rather than 409.
    if not _exists(lambda: core.read_namespaced_service(SERVICE, NAMESPACE)):
        core.create_namespaced_service(NAMESPACE, _service(ports))
    discovery = client.DiscoveryV1Api(api_client)
    if _exists(lambda: discovery.read_namespaced_endpoint_slice(SERVICE, NAMESPACE)):
        # Patched: a changed port setting must reach the slice.
        discovery.patch_namespaced_endpoint_slice(SERVICE, NAMESPACE, _endpoint_slice(ports))
    else:
        discovery.create_namespaced_endpoint_slice(NAMESPACE, _endpoint_slice(ports))


def ensure_bucket(store: Endpoint, *, layout: settings.Layout) -> None:
    """Create the bucket through the ClusterIP, which proves the whole path: store, Service,
    EndpointSlice and proxy; waits for the proxy to have picked the Service up."""
    s3 = store.client()

    def create() -> bool:
        try:
            s3.create_bucket(Bucket=store.bucket)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
        return True

    processes.wait_until(
        f"bucket {store.bucket} at {store.endpoint}",
        create,
        timeout=READY_TIMEOUT,
        log=layout.logs / f"{PROCESS}.log",
    )


def _metadata_options(layout: settings.Layout) -> list[str]:
    """The POSIX backend keeps ETags and content types in user.* xattrs (ext4, xfs and btrfs
    have them); on a filesystem without, it must keep them in a sidecar directory instead."""
    probe = layout.object_store / "data"
    try:
        os.setxattr(probe, "user.gitquorum-probe", b"1")
        os.removexattr(probe, "user.gitquorum-probe")
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        sidecar = layout.object_store / "metadata"
        sidecar.mkdir(exist_ok=True)
        return ["--sidecar", str(sidecar)]
    return []


def _credentials_file(layout: settings.Layout) -> Path:
    return layout.object_store / "credentials.json"


def _ensure_credentials(layout: settings.Layout) -> tuple[str, str]:
    path = _credentials_file(layout)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = {"access_key": secrets.token_hex(10), "secret_key": secrets.token_urlsafe(30)}
        path.touch(mode=0o600)
        path.write_text(json.dumps(saved, indent=2))
    saved = json.loads(path.read_text())
    return saved["access_key"], saved["secret_key"]


def _service(ports: settings.Ports) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=SERVICE),
        spec=client.V1ServiceSpec(
            cluster_ip=str(settings.OBJECT_STORE_SERVICE_IP),
            ports=[
                client.V1ServicePort(
                    name=PORT_NAME, port=80, target_port=ports.object_store, protocol="TCP"
                )
            ],
        ),
    )


def _endpoint_slice(ports: settings.Ports) -> client.V1EndpointSlice:
    """The slice a Service without a selector needs, written by the testbed in place of the
    endpoint-slice controller: the bridge address, where versitygw listens."""
    return client.V1EndpointSlice(
        metadata=client.V1ObjectMeta(
            name=SERVICE,
            labels={
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        ),
        address_type="IPv4",
        endpoints=[
            client.V1Endpoint(
                addresses=[str(settings.BRIDGE_ADDRESS)],
                conditions=client.V1EndpointConditions(ready=True),
            )
        ],
        ports=[
            client.DiscoveryV1EndpointPort(name=PORT_NAME, port=ports.object_store, protocol="TCP")
        ],
    )


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        return False
    return True
