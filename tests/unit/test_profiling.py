"""The operator's opt-in memory profile (kube.profiling) and its /debug/memory endpoint."""

from __future__ import annotations

import tracemalloc

import pytest

from gitquorum.kube import profiling

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("/app/.venv/lib/python3.11/site-packages/kopf/_core/engines/indexing.py", "kopf"),
        ("/usr/lib/python3/dist-packages/yaml/__init__.py", "yaml"),
        ("/work/main/operator/gitquorum/kube/views.py", "gitquorum/kube/views.py"),
        ("/usr/local/lib/python3.11/site-packages/gitquorum/kube/api.py", "gitquorum/kube/api.py"),
        ("/usr/lib/python3.11/json/decoder.py", "decoder"),
        ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap>"),
    ],
)
def test_profiling_groups_files_by_package(filename: str, expected: str) -> None:
    assert profiling.package(filename) == expected


def test_profiling_is_off_unless_started() -> None:
    assert not tracemalloc.is_tracing()
    assert profiling.take() is None


def test_profiling_names_where_the_memory_is() -> None:
    profiling.start(1)
    try:
        held = [bytearray(1024) for _ in range(2000)]  # about 2 MiB, allocated in this file
        profile = profiling.take()
    finally:
        tracemalloc.stop()
    assert profile is not None and len(held) == 2000
    ours = {site.where: site for site in profile.packages}["test_profiling"]
    assert ours.bytes >= 2000 * 1024 and profile.traced_bytes >= ours.bytes
    assert profile.packages[0].where == "test_profiling", profile.packages[:3]
    assert profiling.Profile.from_json(profile.to_json()) == profile
