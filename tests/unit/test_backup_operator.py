"""The operator's side of backups without a cluster: specs, schedules, the source replica,
and the conditions a repository's status gets from them."""

import datetime
from typing import Any

import pytest

from gitquorum import errors
from gitquorum.kube import backingup, backupspecs, planning, scheduling, status

pytestmark = pytest.mark.unit

UTC = datetime.UTC
STORE = {"endpoint": "http://store", "bucket": "backups", "credentialsSecret": "creds"}


def _at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def _secrets(found: dict[str, dict[str, str]]) -> backupspecs.ReadSecret:
    return lambda namespace, name: found.get(f"{namespace}/{name}")


def test_backup_spec_absent_without_object_store() -> None:
    assert backupspecs.BackupSpec.from_spec({}) is None
    assert backupspecs.BackupSpec.from_spec({"backup": {"schedule": "@daily"}}) is None


def test_backup_spec_defaults_keep_everything() -> None:
    spec = backupspecs.BackupSpec.from_spec({"backup": {"objectStore": STORE}})
    assert spec is not None
    assert spec.retention.keeps_everything
    assert spec.max_incrementals == backupspecs.DEFAULT_MAX_INCREMENTALS
    assert spec.object_store.path == "gitquorum" and spec.schedule is None


def test_backup_spec_invalid_schedule_is_a_readable_problem() -> None:
    spec = backupspecs.BackupSpec.from_spec({"backup": {"objectStore": STORE, "schedule": "x"}})
    assert spec is not None
    problem = spec.schedule_problem()
    assert problem is not None and problem.startswith("spec.backup.schedule:")


def test_location_missing_secret_names_it() -> None:
    store = backupspecs.ObjectStoreSpec.from_body(STORE)
    with pytest.raises(errors.ConfigError, match=r"ns/creds .* does not exist"):
        store.location(_secrets({}), namespace="ns", repository_namespace="ns", repository="r")


def test_location_secret_without_keys_names_them() -> None:
    store = backupspecs.ObjectStoreSpec.from_body(STORE)
    read = _secrets({"ns/creds": {"AWS_ACCESS_KEY_ID": "a"}})
    with pytest.raises(errors.ConfigError, match="lacks AWS_SECRET_ACCESS_KEY"):
        store.location(read, namespace="ns", repository_namespace="ns", repository="r")


def test_location_prefix_names_the_source_repository() -> None:
    store = backupspecs.ObjectStoreSpec.from_body({**STORE, "path": "/team/"})
    secret = "the-secret-key"
    read = _secrets({"here/creds": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": secret}})
    location = store.location(read, namespace="here", repository_namespace="there", repository="r")
    assert location.prefix == "team/there/r/"
    assert location.secret_key == secret and secret not in repr(location)


def test_restore_spec_reads_before_as_utc() -> None:
    spec = backupspecs.RestoreSpec.from_spec(
        {"bootstrap": {"fromBackup": {"name": "b", "before": "2026-11-28T12:00:00+01:00"}}}
    )
    assert spec is not None and spec.before == _at("2026-11-28T11:00:00")


def test_schedule_due_none_before_the_first_time() -> None:
    assert (
        scheduling.due(
            "0 3 * * *", last=None, since=_at("2026-11-29T04:00"), now=_at("2026-11-30T02:59")
        )
        is None
    )


def test_schedule_due_collapses_missed_times_into_the_newest() -> None:
    moment = scheduling.due(
        "0 * * * *",
        last=_at("2026-11-29T01:00"),
        since=_at("2026-11-01T00:00"),
        now=_at("2026-11-29T05:30"),
    )
    assert moment == _at("2026-11-29T05:00")


def test_schedule_not_due_again_for_the_same_time() -> None:
    last = _at("2026-11-29T05:00")
    assert scheduling.due("0 * * * *", last=last, since=last, now=_at("2026-11-29T05:59")) is None


def test_schedule_backup_name_is_bounded_and_owned() -> None:
    repository = {"metadata": {"name": "r" * 260, "namespace": "ns", "uid": "u"}}
    manifest = scheduling.backup_manifest(repository, _at("2026-11-29T05:00"))
    assert len(manifest["metadata"]["name"]) <= 253
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "u"
    assert manifest["metadata"]["labels"][backingup.SCHEDULED_LABEL] == "true"


def _spec(schedule: str | None = "0 * * * *") -> backupspecs.BackupSpec:
    spec = backupspecs.BackupSpec.from_spec(
        {"backup": {"objectStore": STORE, "schedule": schedule}}
    )
    assert spec is not None
    return spec


def test_condition_failed_backup_is_a_warning() -> None:
    found = scheduling.condition(
        _spec(),
        {"lastFailedBackup": "b", "lastFailure": "refused"},
        created=_at("2026-11-29T00:00"),
        now=_at("2026-11-29T00:10"),
    )
    assert found is not None and found[1:3] == (False, "BackupFailed") and "refused" in found[3]


def test_condition_overdue_after_two_intervals() -> None:
    summary = {"lastSuccessfulBackup": "b", "lastSuccessTime": "2026-11-29T00:00:00Z"}
    created = _at("2026-11-28T00:00")
    fine = scheduling.condition(_spec(), summary, created=created, now=_at("2026-11-29T01:30"))
    late = scheduling.condition(_spec(), summary, created=created, now=_at("2026-11-29T02:10"))
    assert fine is not None and fine[1:3] == (True, "BackupSucceeded")
    assert late is not None and late[1:3] == (False, "BackupOverdue")


def test_condition_without_schedule_or_backup_is_absent() -> None:
    assert (
        scheduling.condition(
            _spec(None), {}, created=_at("2026-11-01T00:00"), now=_at("2026-11-29T00:00")
        )
        is None
    )


def _repository(entries: list[dict[str, Any]], *, leader: str = "r-1") -> dict[str, Any]:
    return {
        "status": {
            "leader": leader,
            "members": [{"name": e["name"]} for e in entries],
            "replicaStatuses": entries,
        }
    }


def test_source_is_an_in_sync_follower_never_the_leader() -> None:
    repository = _repository(
        [
            {"name": "r-1", "state": "InSync"},
            {"name": "r-2", "state": "Behind"},
            {"name": "r-3", "state": "InSync"},
        ]
    )
    source = backingup.choose_source(repository)
    assert source is not None and (source.name, source.leader) == ("r-3", False)


def test_source_none_when_only_the_leader_is_in_sync_of_three() -> None:
    repository = _repository(
        [
            {"name": "r-1", "state": "InSync"},
            {"name": "r-2", "state": "Rebuilding"},
            {"name": "r-3", "state": "Lost"},
        ]
    )
    assert backingup.choose_source(repository) is None


def test_source_is_the_leader_of_a_single_replica() -> None:
    source = backingup.choose_source(_repository([{"name": "r-1", "state": "InSync"}]))
    assert source is not None and source.leader


def _derived(spec: dict[str, Any], restore: dict[str, Any] | None) -> dict[str, str]:
    body = {
        "metadata": {"name": "r", "namespace": "ns", "generation": 1},
        "spec": spec,
        "status": {"restore": restore} if restore else {},
    }
    durable = planning.Durable.from_status({})
    derived = status.derive(body, durable, {}, replicas=1, credentials_secret="c", blocked=None)
    return {c["type"]: f"{c['status']}/{c['reason']}" for c in derived["conditions"]}


def test_status_restored_absent_without_bootstrap() -> None:
    assert "Restored" not in _derived({}, None)


def test_status_not_ready_until_the_restore_completes() -> None:
    spec = {"bootstrap": {"fromBackup": {"name": "b"}}}
    assert _derived(spec, None)["Restored"] == "False/RestorePending"
    assert (
        _derived(spec, {"phase": "Failed", "message": "corrupt"})["Ready"] == "False/RestoreFailed"
    )
    assert _derived(spec, {"phase": "Completed", "message": "done"})["Restored"] == "True/Restored"
