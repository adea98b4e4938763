"""Malformed, truncated, corrupt and compressed requests: clear errors, repository untouched."""

import gzip
import pathlib

import pytest

from gitquorum.protocol import pktline
from tests.integration import helpers
from tests.integration.helpers import Git, Seeded, Server

pytestmark = pytest.mark.integration

ZERO = "0" * 40


def snapshot(git: Git, repo: Seeded) -> tuple[dict[str, str], int]:
    return git.refs(repo.path), git.object_count(repo.path)


def new_commit(git: Git, repo: Seeded, size: int = 50_000) -> str:
    """A commit on top of main in the seed work tree, not pushed; big enough for a real pack."""
    content = "".join(
        f"line {index} of a file that makes the pack big\n" for index in range(size // 40)
    )
    return git.commit(repo.work, "big.txt", content)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"zzzz", id="bad-length"),
        pytest.param(b"0003", id="length-three"),
        pytest.param(b"0032want ", id="truncated-packet"),
        pytest.param(pktline.encode(b"want 1234\n"), id="no-flush-or-done"),
        pytest.param(b"ffff" + b"x" * 100, id="oversized-packet"),
    ],
)
def test_malformed_upload_pack_request_gets_git_error(
    git: Git, server: Server, repo: Seeded, body: bytes
) -> None:
    reply = helpers.upload_pack(server, repo.name, body)
    assert reply.status == 200
    assert reply.body.startswith(pktline.encode(b"ERR protocol error")[:4]) or b"ERR" in reply.body
    assert b"protocol error" in reply.body


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"00zz", id="bad-length"),
        pytest.param(
            pktline.encode(f"{ZERO} {ZERO} refs/heads/x\0report-status".encode()),
            id="truncated-section",
        ),
        pytest.param(
            pktline.encode(b"not a command\0report-status") + pktline.FLUSH, id="bad-command"
        ),
        pytest.param(
            pktline.encode(f"{ZERO} {'a' * 40} refs/heads/a..b\0x".encode()) + pktline.FLUSH,
            id="bad-ref-name",
        ),
        # A flush alone is git's authentication probe (test_auth_probe), not a malformed push.
        pytest.param(pktline.FLUSH + pktline.FLUSH, id="no-commands"),
    ],
)
def test_malformed_push_commands_get_git_error_and_change_nothing(
    git: Git, server: Server, repo: Seeded, body: bytes
) -> None:
    before = snapshot(git, repo)
    reply = helpers.receive_pack(server, repo.name, body)
    assert reply.status == 200
    assert b"ERR protocol error" in reply.body
    assert snapshot(git, repo) == before


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_pack_is_refused_and_changes_nothing(
    git: Git, server: Server, repo: Seeded, cut: float
) -> None:
    new = new_commit(git, repo)
    commands, pack = helpers.push_body(
        git, repo.work, ref="refs/heads/main", old=repo.head, new=new
    )
    before = snapshot(git, repo)
    reply = helpers.receive_pack(server, repo.name, commands + pack[: int(len(pack) * cut)])
    assert reply.status == 200
    assert b"unpack " in reply.body and b"unpack ok" not in reply.body
    assert snapshot(git, repo) == before
    assert helpers.quarantines(repo.path) == []


def test_corrupt_pack_is_refused_and_changes_nothing(
    git: Git, server: Server, repo: Seeded
) -> None:
    new = new_commit(git, repo)
    commands, pack = helpers.push_body(
        git, repo.work, ref="refs/heads/main", old=repo.head, new=new
    )
    corrupt = bytearray(pack)
    for offset in range(len(pack) // 2, len(pack) // 2 + 64):
        corrupt[offset] ^= 0x5A
    before = snapshot(git, repo)
    reply = helpers.receive_pack(server, repo.name, commands + bytes(corrupt))
    assert reply.status == 200
    assert b"unpack ok" not in reply.body
    assert b"ng refs/heads/main" in reply.body
    assert snapshot(git, repo) == before
    assert helpers.quarantines(repo.path) == []


def test_valid_raw_push_updates_the_ref(git: Git, server: Server, repo: Seeded) -> None:
    new = new_commit(git, repo)
    commands, pack = helpers.push_body(
        git, repo.work, ref="refs/heads/main", old=repo.head, new=new
    )
    reply = helpers.receive_pack(server, repo.name, commands + pack)
    assert b"unpack ok" in reply.body and b"ok refs/heads/main" in reply.body
    assert git.refs(repo.path)["refs/heads/main"] == new


def test_gzip_push_body_is_decompressed(git: Git, server: Server, repo: Seeded) -> None:
    new = new_commit(git, repo)
    commands, pack = helpers.push_body(git, repo.work, ref="refs/heads/zipped", old=ZERO, new=new)
    reply = helpers.receive_pack(
        server, repo.name, gzip.compress(commands + pack), headers={"Content-Encoding": "gzip"}
    )
    assert b"ok refs/heads/zipped" in reply.body
    assert git.refs(repo.path)["refs/heads/zipped"] == new


@pytest.mark.parametrize("protocol", [0, 2])
def test_gzip_fetch_request_is_decompressed(
    git: Git, server: Server, repo: Seeded, protocol: int
) -> None:
    if protocol == 2:
        request = (
            pktline.encode(b"command=ls-refs\n")
            + pktline.DELIM
            + pktline.encode(b"ref-prefix refs/heads/\n")
            + pktline.FLUSH
        )
        headers = {"Git-Protocol": "version=2"}
    else:
        request = (
            pktline.encode(f"want {repo.head} ofs-delta\n".encode())
            + pktline.FLUSH
            + pktline.encode(b"done\n")
        )
        headers = {}
    reply = helpers.upload_pack(
        server, repo.name, gzip.compress(request), headers={"Content-Encoding": "gzip", **headers}
    )
    assert reply.status == 200
    if protocol == 2:
        assert f"{repo.head} refs/heads/main".encode() in reply.body
    else:
        assert b"PACK" in reply.body


def test_git_client_gzips_large_fetch_requests(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    # Hundreds of local commits become hundreds of haves: git compresses request bodies
    # over 1 KiB (remote-curl), so the negotiation reaches the server gzipped.
    clone = tmp_path / "clone"
    git.run("clone", "-q", server.url(repo.name), str(clone), protocol=0)
    commits = []
    for number in range(300):
        message = f"local {number}\n".encode()
        content = f"{number}\n".encode()
        parent = b"from refs/heads/main^0\n" if number == 0 else b""
        commits.append(
            b"commit refs/heads/local\ncommitter T <t@example.com> 4000000000 +0000\n"
            + b"data %d\n%s" % (len(message), message)
            + parent
            + b"M 644 inline n.txt\ndata %d\n%s\n" % (len(content), content)
        )
    git.run("fast-import", "--quiet", cwd=clone, input=b"".join(commits))
    git.run("checkout", "-q", "local", cwd=clone)
    new_head = git.commit(repo.work, "z.txt", "z\n")
    git.run("push", "-q", str(repo.path), "main", cwd=repo.work)
    traced = git.run(
        "-c",
        "http.postBuffer=1048576",
        "fetch",
        "origin",
        cwd=clone,
        protocol=0,
        env={"GIT_TRACE_CURL": "1", "GIT_TRACE_CURL_NO_DATA": "1"},
    )
    assert "Content-Encoding: gzip" in traced.stderr, traced.stderr[-3000:]
    assert git.out("rev-parse", "origin/main", cwd=clone) == new_head


def test_corrupt_gzip_body_is_400(server: Server, repo: Seeded) -> None:
    reply = helpers.upload_pack(
        server, repo.name, b"\x1f\x8b\x08\x00garbage", headers={"Content-Encoding": "gzip"}
    )
    assert reply.status == 400


def test_unknown_content_encoding_is_415(server: Server, repo: Seeded) -> None:
    reply = helpers.upload_pack(server, repo.name, b"0000", headers={"Content-Encoding": "br"})
    assert reply.status == 415


def test_git_push_refused_in_python_prints_the_reason(
    git: Git, server: Server, repo: Seeded, tmp_path: pathlib.Path
) -> None:
    # git asks for side-band, so the refusal must come on band 3 for git to print it.
    before = snapshot(git, repo)
    long_ref = "refs/heads/" + "x" * 1100
    result = git.run(
        "push", server.url(repo.name, helpers.ALICE), f"main:{long_ref}", cwd=repo.work, check=False
    )
    assert result.returncode != 0
    assert "protocol error: ref name longer than 1024 bytes" in result.stderr
    assert "bad band" not in result.stderr
    assert snapshot(git, repo) == before
