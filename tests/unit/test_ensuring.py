"""The objects around a repository's replicas: which API calls ``_ensure_objects`` makes for a
new repository, after an operator restart, after a pass interrupted before its status, and on
a steady resync (a fake API server; the testbed's e2e tests run the real one)."""

import asyncio
import base64
import time
from collections.abc import Mapping
from typing import Any

from gitquorum.kube import names, reconciler
from gitquorum.kube.metrics import OperatorMetrics
from gitquorum.kube.spec import RepositorySpec
from gitquorum.server import auth, passwords

NAMESPACE = "team"
REPOSITORY = "app"


class FakeKube:
    """Objects by (kind, name) and every call made, as ``api.Api`` answers them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []
        self.namespaces: list[str] = []
        """The namespace of each call, in order."""

    def create(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        key = (manifest["kind"], manifest["metadata"]["name"])
        self.calls.append(f"create {key[0]}")
        self.namespaces.append(namespace)
        time.sleep(0.001)  # an answer takes a while: other threads' calls come in between
        if key in self.objects:
            return False
        self.objects[key] = dict(manifest)
        return True

    def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append("read Secret")
        secret = self.objects.get(("Secret", name))
        return None if secret is None else _data(secret)

    def secret_annotations(self, namespace: str, name: str) -> dict[str, str] | None:
        self.calls.append("read Secret")
        secret = self.objects.get(("Secret", name))
        return None if secret is None else dict(secret["metadata"].get("annotations") or {})

    def patch_secret(self, namespace: str, manifest: Mapping[str, Any]) -> None:
        self.calls.append("patch Secret")
        secret = self.objects[("Secret", manifest["metadata"]["name"])]
        secret["stringData"] = {**_data(secret), **manifest["stringData"]}
        secret.pop("data", None)
        secret["metadata"]["annotations"] = dict(manifest["metadata"].get("annotations") or {})

    def patch_service(self, namespace: str, name: str, *_: Any) -> bool:
        self.calls.append("patch Service")
        return ("Service", name) in self.objects

    def patch_budget(self, namespace: str, name: str, *_: Any) -> bool:
        self.calls.append("patch PodDisruptionBudget")
        return ("PodDisruptionBudget", name) in self.objects


def _data(secret: Mapping[str, Any]) -> dict[str, str]:
    encoded = {
        key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()
    }
    return {**encoded, **secret.get("stringData", {})}


def _body(status: Mapping[str, Any] | None = None, namespace: str = NAMESPACE) -> dict[str, Any]:
    return {
        "metadata": {"name": REPOSITORY, "namespace": namespace, "uid": f"{namespace}-1"},
        "spec": {"replicas": 3},
        "status": dict(status or {}),
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _work(kube: FakeKube, clock: Clock, ensures: int = 4) -> reconciler.Reconciler:
    return reconciler.Reconciler(
        kube,  # the calls api.Api makes, in memory
        reconciler.Settings(image="gitquorum:test", concurrent_ensures=ensures),
        events=lambda *_: None,
        metrics=OperatorMetrics(repositories=lambda: 0.0, leading=lambda: 1.0),
        clock=clock,
    )


def _ensure(
    work: reconciler.Reconciler, body: Mapping[str, Any], memory: reconciler.Memory
) -> str | None:
    spec = RepositorySpec.from_body(body["spec"])
    return asyncio.run(work._ensure_objects(body, spec, memory))


def _made(kube: FakeKube) -> dict[tuple[str, str], dict[str, Any]]:
    """A repository's objects as its first pass made them."""
    _ensure(_work(kube, Clock()), _body(), reconciler.Memory())
    kube.calls.clear()
    return kube.objects


def test_ensure_objects_of_a_new_repository_creates_each_object_once_without_reading() -> None:
    kube = FakeKube()
    memory = reconciler.Memory()

    assert _ensure(_work(kube, Clock()), _body(), memory) is None

    assert sorted(kube.calls) == sorted(
        ["create Secret"] * 4
        + ["create Service", "create PodDisruptionBudget", "create NetworkPolicy"]
    )
    replication = _data(kube.objects[("Secret", names.replication_secret(REPOSITORY))])
    assert memory.admin_token == replication["admin-token"]
    assert memory.known_hosts
    # The password it drew is random: hashed fast, and the replicas' check accepts it.
    users = _data(kube.objects[("Secret", names.auth_secret(REPOSITORY))])["users"]
    password = _data(kube.objects[("Secret", names.credentials_secret(REPOSITORY))])["password"]
    user = auth.parse(users)["gitquorum"]
    assert users.startswith("gitquorum:pbkdf2-sha256$i=1000$")
    assert passwords.verify(password.encode(), user.secret)


def test_ensure_objects_after_a_restart_keeps_every_stored_secret() -> None:
    kube = FakeKube()
    stored = {key: dict(value) for key, value in _made(kube).items()}
    memory = reconciler.Memory()

    assert _ensure(_work(kube, Clock()), _body({"leader": "app-0"}), memory) is None

    assert kube.objects == stored  # nothing generated again, nothing hashed again
    # One request per object: Secrets read (the known_hosts one created, answered 409),
    # the Service and budget patched to what this operator wants.
    assert sorted(kube.calls) == sorted(
        ["read Secret"] * 3
        + ["create Secret", "patch Service", "patch PodDisruptionBudget", "create NetworkPolicy"]
    )
    replication = _data(stored[("Secret", names.replication_secret(REPOSITORY))])
    assert memory.admin_token == replication["admin-token"]


def test_ensure_objects_of_a_new_repository_keeps_secrets_of_an_interrupted_pass() -> None:
    kube = FakeKube()
    stored = {key: dict(value) for key, value in _made(kube).items()}
    memory = reconciler.Memory()

    # No status yet: the first pass stopped before writing one; its Secrets stand.
    assert _ensure(_work(kube, Clock()), _body(), memory) is None

    credentials = ("Secret", names.credentials_secret(REPOSITORY))
    replication = ("Secret", names.replication_secret(REPOSITORY))
    assert _data(kube.objects[credentials]) == _data(stored[credentials])
    assert _data(kube.objects[replication]) == _data(stored[replication])
    assert memory.admin_token == _data(stored[replication])["admin-token"]


def test_ensure_objects_of_a_steady_repository_reads_its_credentials_once_per_resync() -> None:
    kube = FakeKube()
    clock = Clock()
    work = _work(kube, clock)
    memory = reconciler.Memory()
    _ensure(work, _body(), memory)
    kube.calls.clear()

    clock.now += work.settings.resync_interval / 2
    _ensure(work, _body({"leader": "app-0"}), memory)
    assert kube.calls == []

    clock.now += work.settings.resync_interval
    _ensure(work, _body({"leader": "app-0"}), memory)
    assert kube.calls == ["read Secret"]


def test_ensure_objects_after_a_restart_recreates_a_deleted_service() -> None:
    kube = FakeKube()
    service = next(key for key in _made(kube) if key[0] == "Service")
    del kube.objects[service]

    assert _ensure(_work(kube, Clock()), _body({"leader": "app-0"}), reconciler.Memory()) is None

    assert service in kube.objects


def test_ensure_objects_of_many_new_repositories_runs_a_few_at_a_time() -> None:
    kube = FakeKube()
    work = _work(kube, Clock(), ensures=2)
    bodies = [_body(namespace=f"team-{number}") for number in range(8)]

    async def arrive() -> list[str | None]:
        return await asyncio.gather(
            *(
                work._ensure_objects(
                    body, RepositorySpec.from_body(body["spec"]), reconciler.Memory()
                )
                for body in bodies
            )
        )

    assert asyncio.run(arrive()) == [None] * len(bodies)

    # A repository is open from its first request to its last: never more than two at once,
    # so the first ones are done while the last have not started.
    first = {ns: kube.namespaces.index(ns) for ns in kube.namespaces}
    last = {ns: len(kube.namespaces) - 1 - kube.namespaces[::-1].index(ns) for ns in first}
    most = max(
        sum(first[ns] <= at <= last[ns] for ns in first) for at in range(len(kube.namespaces))
    )
    assert len(first) == len(bodies) and most == 2


def test_ensure_objects_hashes_a_password_it_did_not_draw_with_scrypt() -> None:
    kube = FakeKube()
    kube.objects[("Secret", "people")] = {
        "metadata": {"name": "people"},
        "stringData": {"username": "alice", "password": "correct horse"},
    }
    body = _body()
    body["spec"]["auth"] = {"credentialsSecret": "people"}

    assert _ensure(_work(kube, Clock()), body, reconciler.Memory()) is None

    users = _data(kube.objects[("Secret", names.auth_secret(REPOSITORY))])["users"]
    assert users.startswith("alice:scrypt$")
    assert passwords.verify(b"correct horse", auth.parse(users)["alice"].secret)
