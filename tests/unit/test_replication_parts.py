"""Unit tests of replication's data: checksums, transactions from peers, the hook channel."""

import asyncio
import contextlib
import os
import pathlib
import random
import subprocess

import pytest

from gitquorum import errors
from gitquorum.protocol import pktline, reporting
from gitquorum.replication import checksum, hooks, membership, transactions
from tests import waiting

pytestmark = pytest.mark.unit

A = "a" * 40
B = "b" * 40
ZERO = "0" * 40


def test_checksum_incremental_equals_full_recomputation() -> None:
    rng = random.Random(7)
    refs: dict[str, str] = {}
    value = checksum.EMPTY
    for _ in range(500):
        ref = f"refs/heads/b{rng.randrange(20)}"
        new = rng.choice([ZERO, f"{rng.getrandbits(160):040x}"])
        old = refs.get(ref, ZERO)
        value = checksum.updated(value, [(ref, old, new)])
        if new == ZERO:
            refs.pop(ref, None)
        else:
            refs[ref] = new
        assert value == checksum.of(refs)


def test_checksum_differs_when_one_ref_differs() -> None:
    assert checksum.of({"refs/heads/main": A}) != checksum.of({"refs/heads/main": B})
    assert checksum.of({"refs/heads/main": A}) != checksum.of({"refs/heads/other": A})
    assert checksum.of({}) == checksum.EMPTY


def _transaction(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "id": "c" * 32,
        "term": 1,
        "generation": 1,
        "seq": 1,
        "changes": [["refs/heads/main", ZERO, A]],
        "head": None,
        "files": [["pack-" + "d" * 40 + ".pack", 10], ["pack-" + "d" * 40 + ".idx", 5]],
    }
    data.update(overrides)
    return data


def test_transaction_round_trips_through_json() -> None:
    parsed = transactions.Transaction.from_json(_transaction(head="refs/heads/main"))
    assert transactions.Transaction.from_json(parsed.to_json()) == parsed
    assert parsed.size == 15


@pytest.mark.parametrize(
    "field,value",
    [
        ("files", [["../HEAD", 1]]),
        ("files", [["pack-" + "d" * 40 + ".keep", 1]]),
        ("files", [["pack-" + "d" * 40 + ".pack", -1]]),
        ("changes", [["HEAD", ZERO, A]]),
        ("changes", [["refs/heads/a b", ZERO, A]]),
        ("changes", [["refs/heads/x", "zz", A]]),
        ("changes", "refs/heads/main"),
        ("head", "../../etc"),
        ("id", "../x"),
        ("term", -1),
        ("generation", True),
    ],
)
def test_rejects_malformed_transaction(field: str, value: object) -> None:
    with pytest.raises(errors.ReplicationError):
        transactions.Transaction.from_json(_transaction(**{field: value}))


def test_rejects_transaction_with_too_many_changes() -> None:
    changes = [[f"refs/heads/b{i}", ZERO, A] for i in range(transactions.MAX_UPDATES + 1)]
    with pytest.raises(errors.ReplicationError):
        transactions.Transaction.from_json(_transaction(changes=changes))


def test_pack_files_lists_index_last(tmp_path: pathlib.Path) -> None:
    name = "pack-" + "e" * 40
    for suffix in (".idx", ".pack", ".rev", ".keep"):
        (tmp_path / (name + suffix)).write_bytes(b"x")
    assert [f.name for f in transactions.pack_files(tmp_path)] == [
        name + ".pack",
        name + ".rev",
        name + ".idx",
    ]


MEMBER = {"id": "r0", "url": "http://127.0.0.1:1", "peer_url": "http://127.0.0.1:2"}


def test_rejects_configuration_without_its_leader() -> None:
    data = {"term": 1, "leader": "r9", "members": [MEMBER]}
    with pytest.raises(errors.BadRequest, match="not a member"):
        membership.Configuration.from_json(data)


def test_rejects_configuration_naming_a_replica_twice() -> None:
    with pytest.raises(errors.BadRequest, match="twice"):
        membership.Configuration.from_json({"term": 1, "leader": "r0", "members": [MEMBER] * 2})


def _run_hook(hook: pathlib.Path, env: dict[str, str]) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        [str(hook)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("reason", [None, "no quorum: 1 of 3"])
def test_hook_hands_over_the_push_and_obeys_the_verdict(
    tmp_path: pathlib.Path, reason: str | None
) -> None:
    hook = hooks.install(tmp_path / "hooks")

    async def scenario() -> tuple[int, str, hooks.Request]:
        channel = hooks.Channel.open(tmp_path / "pushes")
        env = {**channel.environment, "GIT_QUARANTINE_PATH": "/q/incoming-1"}
        process = _run_hook(hook, env)
        assert process.stdin is not None
        process.stdin.write(f"{ZERO} {A} refs/heads/main\n{A} {ZERO} refs/tags/v1\n")
        process.stdin.close()
        request = await asyncio.wait_for(channel.request(), 10)
        channel.reply(reason=reason)
        await asyncio.to_thread(process.wait, 10)
        assert process.stderr is not None
        stderr = process.stderr.read()
        channel.close()
        return process.returncode, stderr, request

    code, stderr, request = asyncio.run(scenario())
    assert request.quarantine == pathlib.Path("/q/incoming-1")
    assert [(c.ref, c.old, c.new) for c in request.changes] == [
        ("refs/heads/main", ZERO, A),
        ("refs/tags/v1", A, ZERO),
    ]
    assert code == (0 if reason is None else 1)
    if reason is not None:
        assert reason in stderr


def test_hook_hands_over_a_push_larger_than_its_pipe(tmp_path: pathlib.Path) -> None:
    hook = hooks.install(tmp_path / "hooks")
    refs = [f"refs/heads/branch-{index:05}" for index in range(3000)]  # some 250 KiB

    async def scenario() -> tuple[int, hooks.Request]:
        channel = hooks.Channel.open(tmp_path / "pushes")
        process = _run_hook(hook, {**channel.environment, "GIT_QUARANTINE_PATH": "/q/in"})
        assert process.stdin is not None
        process.stdin.write("".join(f"{ZERO} {A} {ref}\n" for ref in refs))
        process.stdin.close()
        request = await asyncio.wait_for(channel.request(), 30)
        channel.reply()
        await asyncio.to_thread(process.wait, 10)
        channel.close()
        return process.returncode, request

    code, request = asyncio.run(scenario())
    assert code == 0
    assert [change.ref for change in request.changes] == refs


def test_hook_request_without_quarantine_or_updates_is_parsed() -> None:
    request = hooks.parse_request(f"\n{hooks.END}\n")
    assert request.quarantine is None
    assert request.changes == []


def test_hook_refuses_a_push_that_bypasses_the_replica(tmp_path: pathlib.Path) -> None:
    hook = hooks.install(tmp_path / "hooks")
    env = {k: v for k, v in os.environ.items() if k != hooks.PUSH_VARIABLE}
    result = subprocess.run(
        [str(hook)], input="", capture_output=True, text=True, env=env, timeout=10
    )
    assert result.returncode == 1
    assert "go through the replica" in result.stderr


def test_hook_abandoned_by_a_restarted_replica_is_answered(tmp_path: pathlib.Path) -> None:
    hook = hooks.install(tmp_path / "hooks")
    channel = hooks.Channel.open(tmp_path / "pushes")
    process = _run_hook(hook, channel.environment)
    # The replica "dies": its descriptors close, the hook is left waiting on its FIFO.
    os.close(channel._request)
    os.close(channel._verdict)
    channel._request = channel._verdict = -1
    assert process.stdin is not None
    process.stdin.close()

    request = os.open(channel.directory / "request", os.O_RDWR | os.O_NONBLOCK)
    received = bytearray()

    def waiting_for_verdict() -> bool:
        with contextlib.suppress(BlockingIOError):
            received.extend(os.read(request, 65536))
        return received.endswith(f"\n{hooks.END}\n".encode()) and process.poll() is None

    try:
        waiting.until("the hook to hand its push over", waiting_for_verdict, timeout=10)
    finally:
        os.close(request)
    assert hooks.answer_abandoned(tmp_path / "pushes") == 1
    assert process.wait(timeout=10) == 1
    assert process.stderr is not None
    assert "restarted" in process.stderr.read()


def _report(lines: list[bytes], *, sideband: bool) -> bytes:
    report = b"".join(pktline.encode(line) for line in lines) + pktline.FLUSH
    return reporting.sideband(1, report) + pktline.FLUSH if sideband else report


@pytest.mark.parametrize("sideband", [False, True])
def test_report_status_names_only_the_refs_git_updated(sideband: bool) -> None:
    output = _report(
        [b"unpack ok\n", b"ok refs/heads/main\n", b"ng refs/heads/x stale info\n"],
        sideband=sideband,
    )
    assert reporting.updated_refs(output, sideband_enabled=sideband) == {"refs/heads/main"}


def test_report_status_malformed_trusts_nothing() -> None:
    assert reporting.updated_refs(b"00zzok refs/heads/main", sideband_enabled=False) == set()
    assert reporting.updated_refs(b"", sideband_enabled=True) == set()
