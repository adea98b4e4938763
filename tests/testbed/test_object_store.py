"""The testbed's object store: one address, ``http://<ClusterIP>``, from the host and from pods."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from gitquorum_testbed import cluster, objectstore, settings
from tests.testbed import kube

pytestmark = pytest.mark.testbed

# Runs in the pod with the credentials from a Secret: reads what the host put, writes an answer.
IN_POD = textwrap.dedent(
    """
    import os, sys
    import boto3
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["GITQUORUM_S3_ENDPOINT"],
        region_name="us-east-1",
        config=boto3.session.Config(s3={"addressing_style": "path"}),
    )
    bucket, key = os.environ["GITQUORUM_S3_BUCKET"], sys.argv[1]
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key + ".answer", Body=b"pod read " + body)
    """
)


def test_object_store_from_host_puts_and_gets_through_the_cluster_ip(
    testbed: cluster.Testbed,
):
    store = testbed.object_store()
    assert store.endpoint == f"http://{settings.OBJECT_STORE_SERVICE_IP}"
    s3 = store.client()
    key = f"host/{uuid.uuid4().hex}"
    s3.put_object(Bucket=store.bucket, Key=key, Body=b"from the host")
    assert s3.get_object(Bucket=store.bucket, Key=key)["Body"].read() == b"from the host"
    listed = s3.list_objects_v2(Bucket=store.bucket, Prefix=key)
    assert [o["Key"] for o in listed["Contents"]] == [key]
    # The data lies under the testbed root, a file per object.
    data = testbed.layout.object_store / "data" / store.bucket / key
    assert data.read_bytes() == b"from the host"


def test_object_store_from_pod_gets_and_puts_through_the_cluster_ip(
    testbed: cluster.Testbed, core: client.CoreV1Api, namespace: str
):
    store = testbed.object_store()
    s3 = store.client()
    key = f"pod/{uuid.uuid4().hex}"
    s3.put_object(Bucket=store.bucket, Key=key, Body=b"hello")
    env = store.env()
    core.create_namespaced_secret(
        namespace,
        kube.secret(
            "s3",
            access=env.pop("AWS_ACCESS_KEY_ID"),
            secret=env.pop("AWS_SECRET_ACCESS_KEY"),
        ),
    )
    body = kube.pod("s3-client", [kube.PYTHON, "-c", IN_POD, key])
    body["spec"]["containers"][0]["env"] = [
        *({"name": name, "value": value} for name, value in env.items()),
        {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "s3", "key": "access"}},
        },
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret"}},
        },
    ]
    phase = kube.run_to_completion(core, namespace, body)
    log = testbed.log_path(namespace, "s3-client", None)
    assert phase == "Succeeded", log.read_text(errors="replace")
    answer = s3.get_object(Bucket=store.bucket, Key=key + ".answer")["Body"].read()
    assert answer == b"pod read hello"


def test_object_store_service_has_fixed_ip_and_testbed_managed_slice(
    testbed: cluster.Testbed, api_client: client.ApiClient
):
    core = client.CoreV1Api(api_client)
    service = core.read_namespaced_service(objectstore.SERVICE, objectstore.NAMESPACE)
    assert service.spec.cluster_ip == str(settings.OBJECT_STORE_SERVICE_IP)
    assert not service.spec.selector
    slices = client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice(
        objectstore.NAMESPACE, label_selector=f"kubernetes.io/service-name={objectstore.SERVICE}"
    )
    (only,) = slices.items
    assert only.metadata.labels["endpointslice.kubernetes.io/managed-by"] == objectstore.MANAGED_BY
    assert only.endpoints[0].addresses == [str(settings.BRIDGE_ADDRESS)]


def test_object_store_env_exports_endpoint_credentials_and_bucket(testbed: cluster.Testbed):
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "gitquorum-testbed"),
            "--root",
            str(testbed.layout.root),
            "env",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    store = testbed.object_store()
    assert f"export GITQUORUM_S3_ENDPOINT={store.endpoint}\n" in result.stdout
    assert f"export AWS_ACCESS_KEY_ID={store.access_key}\n" in result.stdout
    assert f"export AWS_SECRET_ACCESS_KEY={store.secret_key}\n" in result.stdout
    assert "export GITQUORUM_S3_BUCKET=gitquorum-backups\n" in result.stdout


def test_object_store_status_lists_the_running_store(testbed: cluster.Testbed):
    (line,) = [item for item in testbed.status() if item.startswith(objectstore.PROCESS)]
    assert "running pid" in line
