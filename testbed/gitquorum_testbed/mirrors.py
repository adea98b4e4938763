"""Local copies of API objects kept current by list and watch, as a kubelet's informers keep them.

The agent used to list every claim and every volume of the cluster twice a second. With
hundreds of them (the operator benchmark creates 900 of each) and a dozen agents, that alone
filled the machine's two cores: each list is a serialisation in the API server and a parse
in the agent, and the Kubernetes client's model objects cost ten times the JSON parse (62 ms
against 7 ms for 900 claims). A mirror lists once, then follows a watch from that
resourceVersion, and lists again only when the watch cannot resume (410 Gone, a dropped
connection). Objects stay the plain JSON dictionaries the API server sent.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("gitquorum_testbed.mirrors")

Body = dict[str, Any]

WATCH_SECONDS = 60
"""Server-side lifetime of one watch request; the mirror then resumes from its version."""
RETRY_SECONDS = 1.0
"""Pause before listing again after an error: the API server may be restarting."""
GONE = 410


class Mirror:
    """Every object a list call returns, by uid, followed by watch in a daemon thread."""

    def __init__(
        self,
        list_call: Callable[..., Any],
        *,
        what: str,
        field_selector: str | None = None,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.list_call = list_call
        self.what = what
        self.selectors = {"field_selector": field_selector} if field_selector else {}
        self.watch_seconds = watch_seconds
        self.objects: dict[str, Body] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"mirror {what}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ends the thread once its current watch request ends (``watch_seconds`` at most).

        Agents never stop theirs (they die with the node); a short-lived process does, since
        a daemon thread blocked in a TLS read may abort the interpreter at exit.
        """
        self.stopping.set()
        self.thread.join()

    def items(self) -> list[Body]:
        with self.lock:
            return list(self.objects.values())

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._follow(self._list())
            except Exception as exc:  # the API server restarting, a dropped connection
                log.warning("mirror of %s: %s; listing again", self.what, exc)
                self.stopping.wait(RETRY_SECONDS)

    def _list(self) -> str:
        response = self.list_call(
            _preload_content=False, _request_timeout=(10, 60), **self.selectors
        )
        _check(response)
        body = json.loads(response.data)
        objects = {item["metadata"]["uid"]: item for item in body.get("items") or ()}
        with self.lock:
            self.objects = objects
        self.synced.set()
        return str(body["metadata"]["resourceVersion"])

    def _follow(self, version: str) -> None:
        """Applies watch events until the server says the version is gone."""
        while not self.stopping.is_set():
            response = self.list_call(
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_seconds,
                _preload_content=False,
                _request_timeout=(10, self.watch_seconds + 30),
                **self.selectors,
            )
            try:
                _check(response)
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    kind, body = event["type"], event["object"]
                    if kind == "ERROR":
                        if body.get("code") == GONE:
                            return
                        raise RuntimeError(f"watch error: {body.get('message')}")
                    version = body["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self._apply(kind, body)
            finally:
                response.close()
                response.release_conn()

    def _apply(self, kind: str, body: Body) -> None:
        uid = body["metadata"]["uid"]
        with self.lock:
            if kind == "DELETED":
                self.objects.pop(uid, None)
            else:
                self.objects[uid] = body


def _check(response: Any) -> None:
    """Raw responses (``_preload_content=False``) carry error statuses without raising."""
    status = getattr(response, "status", 200)
    if not 200 <= status <= 299:
        raise RuntimeError(f"HTTP {status}: {response.data[:300]!r}")
