"""What a pass keeps between passes (``kube/context.Memory``)."""

from typing import Any

from gitquorum.kube import reconciler
from gitquorum.kube.context import Written


def _body(version: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "app", "resourceVersion": version},
        "spec": {"replicas": 3},
        "status": status,
    }


def test_memory_latest_is_our_write_while_the_cache_shows_the_replaced_version() -> None:
    memory = reconciler.Memory()
    memory.written = Written(replaced="10", version="11", status={"term": 2})

    latest = memory.latest(_body("10", {"term": 1}))

    assert latest["metadata"]["resourceVersion"] == "11"
    assert latest["status"] == {"term": 2}
    assert latest["spec"] == {"replicas": 3}
    assert memory.written is not None  # until the cache shows it


def test_memory_latest_is_the_cache_once_it_shows_another_version() -> None:
    memory = reconciler.Memory()
    memory.written = Written(replaced="10", version="11", status={"term": 2})
    cached = _body("12", {"term": 3})  # our write, then someone else's

    assert memory.latest(cached) is cached
    assert memory.written is None


def test_memory_latest_is_the_cache_without_a_write() -> None:
    cached = _body("10", {"term": 1})

    assert reconciler.Memory().latest(cached) is cached
