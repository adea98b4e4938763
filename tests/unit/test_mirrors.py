"""The agent's watch mirrors against a fake API: list, follow events, list again on 410 Gone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gitquorum_testbed import mirrors
from tests import waiting

pytestmark = pytest.mark.unit


class FakeResponse:
    def __init__(self, *, data: bytes = b"", lines: list[dict[str, Any]] | None = None) -> None:
        self.status = 200
        self.data = data
        self.lines = lines or []

    def stream(self, amt: int | None = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self.lines:
            yield json.dumps(line).encode() + b"\n"

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


def _object(uid: str, version: str) -> dict[str, Any]:
    return {"metadata": {"uid": uid, "name": uid, "resourceVersion": version}}


class FakeApi:
    """Serves one list, then the scripted watch responses in turn (and nothing after)."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[list[dict[str, Any]]]):
        self.lists = lists
        self.watches = watches
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> FakeResponse:
        self.calls.append(kwargs)
        if kwargs.get("watch"):
            if not self.watches:
                time.sleep(0.05)  # a watch with nothing to say lasts until its timeout
            return FakeResponse(lines=self.watches.pop(0) if self.watches else [])
        items = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        body = {"metadata": {"resourceVersion": "10"}, "items": items}
        return FakeResponse(data=json.dumps(body).encode())


def test_mirror_follows_added_modified_and_deleted_events():
    api = FakeApi(
        lists=[[_object("a", "9")]],
        watches=[
            [
                {"type": "ADDED", "object": _object("b", "11")},
                {"type": "MODIFIED", "object": {**_object("a", "12"), "spec": {"x": 1}}},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
                {"type": "DELETED", "object": _object("b", "14")},
            ]
        ],
    )
    mirror = mirrors.Mirror(api, what="things", field_selector="spec.nodeName=n1")
    mirror.start()
    waiting.until(
        "the mirror to apply every event",
        lambda: [o.get("spec") for o in mirror.items()] == [{"x": 1}] and len(api.calls) >= 3,
    )
    assert api.calls[0]["field_selector"] == "spec.nodeName=n1"
    assert api.calls[1]["resource_version"] == "10"
    # The next watch resumes after the bookmark's version, without a new list.
    assert api.calls[2]["resource_version"] == "14"
    assert api.calls[2]["watch"] is True
    mirror.stopping.set()


def test_mirror_lists_again_when_its_version_is_gone():
    api = FakeApi(
        lists=[[_object("a", "9")], [_object("c", "20")]],
        watches=[[{"type": "ERROR", "object": {"code": 410, "message": "too old"}}]],
    )
    mirror = mirrors.Mirror(api, what="things")
    mirror.start()
    waiting.until(
        "the mirror to list again after 410 Gone",
        lambda: [o["metadata"]["uid"] for o in mirror.items()] == ["c"],
    )
    assert sum(1 for call in api.calls if not call.get("watch")) >= 2
    mirror.stopping.set()
