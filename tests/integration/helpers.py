"""Helpers for integration tests: ``gitquorum serve`` processes and the real git CLI.

Servers run as child processes (``python -m gitquorum serve``) on 127.0.0.1 with a port the
kernel picks, read from the server's log. git runs with a throwaway HOME and no system
configuration, so the developer's own settings never leak into a test.
"""

import base64
import dataclasses
import http.client as http_client
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from gitquorum.protocol import pktline
from gitquorum.server import auth, passwords
from tests import waiting

ALICE = ("alice", "alice-token")  # may push
BOB = ("bob", "bob-token")  # read only
STARTUP_DEADLINE = 20.0
SERVING = re.compile(r"serving repositories under .* on (http://\S+)")

# Cheap hashes keep the suite fast; the server verifies whatever parameters the file names.
TEST_COST = passwords.Cost(scrypt_n=2**8)


def write_auth_file(path: pathlib.Path) -> pathlib.Path:
    lines = [
        "# test users",
        auth.render(
            ALICE[0],
            passwords.hash_token(ALICE[1].encode(), cost=TEST_COST),
            permission=auth.Permission.WRITE,
        ),
        auth.render(
            BOB[0],
            passwords.hash_token(BOB[1].encode(), cost=TEST_COST),
            permission=auth.Permission.READ,
        ),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for(
    predicate: Callable[[], bool],
    *,
    deadline: float,
    what: str,
    seen: Callable[[], str] = lambda: "",
) -> None:
    """Polls ``predicate`` until it holds; fails naming what was awaited and what was seen."""
    waiting.until(what, predicate, timeout=deadline, interval=0.02, seen=seen)


@dataclasses.dataclass
class Git:
    """The git CLI with an isolated environment."""

    home: pathlib.Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "Test Author",
            "GIT_AUTHOR_EMAIL": "author@example.com",
            "GIT_COMMITTER_NAME": "Test Committer",
            "GIT_COMMITTER_EMAIL": "committer@example.com",
            "LANG": "C",
        }

    def run(
        self,
        *args: str,
        cwd: pathlib.Path | None = None,
        check: bool = True,
        protocol: int | None = None,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        config = ["-c", f"protocol.version={protocol}"] if protocol is not None else []
        result = subprocess.run(
            ["git", "-c", "init.defaultBranch=main", *config, *args],
            cwd=cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            input=input.decode() if input is not None else None,
        )
        if check and result.returncode != 0:
            pytest.fail(f"git {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def out(self, *args: str, cwd: pathlib.Path | None = None) -> str:
        return self.run(*args, cwd=cwd).stdout.strip()

    def commit(self, work: pathlib.Path, name: str, content: str, message: str = "") -> str:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(content)
        self.run("add", name, cwd=work)
        self.run("commit", "-q", "-m", message or f"change {name}", cwd=work)
        return self.out("rev-parse", "HEAD", cwd=work)

    def refs(self, repository: pathlib.Path) -> dict[str, str]:
        lines = self.out(
            "for-each-ref", "--format=%(refname) %(objectname)", cwd=repository
        ).splitlines()
        return {ref: oid for ref, oid in (line.split(" ") for line in lines)}

    def object_count(self, repository: pathlib.Path) -> int:
        """Every object stored, loose or packed, quarantine leftovers included."""
        counts = self.out("count-objects", "-v", cwd=repository)
        fields = dict(line.split(": ") for line in counts.splitlines())
        return int(fields["count"]) + int(fields["in-pack"])


class Server:
    """A running ``gitquorum serve`` child process."""

    def __init__(
        self,
        root: pathlib.Path,
        log: pathlib.Path,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.log = log
        command = [
            sys.executable,
            "-m",
            "gitquorum",
            "serve",
            "--root",
            str(root),
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "DEBUG",
            *args,
        ]
        self.process = subprocess.Popen(
            command,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        found: list[str] = []

        def serving() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log_text()}")
            match = SERVING.search(self.log_text())
            if match:
                found.append(match.group(1))
            return bool(found)

        wait_for(
            serving,
            deadline=STARTUP_DEADLINE,
            what="the server's 'serving' log line",
            seen=self.log_text,
        )
        self.base = found[0]
        self.port = urllib.parse.urlsplit(self.base).port

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str, user: tuple[str, str] | None = None) -> str:
        if user is None:
            return f"{self.base}/{path}"
        return f"http://{user[0]}:{user[1]}@127.0.0.1:{self.port}/{path}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    tmp_path_factory: pytest.TempPathFactory, *args: str, env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("server")
    (base / "root").mkdir()
    server = Server(base / "root", base / "server.log", args, env=env)
    try:
        yield server
    finally:
        server.stop()


@dataclasses.dataclass
class Seeded:
    """A bare repository on a server and a work tree that pushed its history."""

    name: str
    path: pathlib.Path
    work: pathlib.Path
    head: str


def seed(git: Git, root: pathlib.Path, name: str, work: pathlib.Path, commits: int = 3) -> Seeded:
    """A bare repository ``name`` under ``root`` with a few commits on main and a tag."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    git.run("init", "-q", "--bare", str(path))
    git.run("init", "-q", str(work))
    for index in range(commits):
        git.commit(work, f"file{index}.txt", f"content {index}\n" * (index + 1))
    git.run("tag", "v1", cwd=work)
    git.run("push", "-q", str(path), "main", "v1", cwd=work)
    return Seeded(name=name, path=path, work=work, head=git.out("rev-parse", "HEAD", cwd=work))


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def http(
    server: Server,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    user: tuple[str, str] | None = None,
) -> Reply:
    """One raw HTTP request, path sent as given (no normalisation, no client smarts)."""
    all_headers = dict(headers or {})
    if user is not None:
        token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        all_headers["Authorization"] = f"Basic {token}"
    connection = http_client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        connection.close()


def push_body(
    git: Git,
    work: pathlib.Path,
    *,
    ref: str,
    old: str,
    new: str,
    capabilities: str = "report-status",
) -> tuple[bytes, bytes]:
    """The command section and the pack git would send to move ``ref`` from old to new."""
    command = f"{old} {new} {ref}\0{capabilities}".encode()
    commands = pktline.encode(command) + pktline.FLUSH
    revs = f"{new}\n" + (f"^{old}\n" if set(old) != {"0"} else "")
    pack = subprocess.run(
        ["git", "pack-objects", "--stdout", "--revs", "--thin", "--quiet"],
        cwd=work,
        env=git.env,
        input=revs.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return commands, pack


def receive_pack(
    server: Server, name: str, body: bytes, *, headers: dict[str, str] | None = None
) -> Reply:
    return http(
        server,
        "POST",
        f"/{name}/git-receive-pack",
        body=body,
        user=ALICE,
        headers={"Content-Type": "application/x-git-receive-pack-request", **(headers or {})},
    )


def upload_pack(
    server: Server, name: str, body: bytes, *, headers: dict[str, str] | None = None
) -> Reply:
    return http(
        server,
        "POST",
        f"/{name}/git-upload-pack",
        body=body,
        user=ALICE,
        headers={"Content-Type": "application/x-git-upload-pack-request", **(headers or {})},
    )


def quarantines(repository: pathlib.Path) -> list[pathlib.Path]:
    """Leftover receive-pack quarantine directories; git removes them when a push fails."""
    return sorted((repository / "objects").glob("incoming-*"))


class RawPush:
    """A push request written by hand over a socket, so the test decides when bytes flow."""

    def __init__(self, server: Server, name: str, body: bytes) -> None:
        token = base64.b64encode(f"{ALICE[0]}:{ALICE[1]}".encode()).decode()
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        self.sock.sendall(
            f"POST /{name}/git-receive-pack HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Basic {token}\r\n"
            "Content-Type: application/x-git-receive-pack-request\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def status(self) -> int:
        head = self.sock.recv(4096).decode(errors="replace")
        match = re.match(r"HTTP/1\.1 (\d{3})", head)
        assert match, f"no HTTP status line in {head!r}"
        return int(match.group(1))

    def close(self) -> None:
        self.sock.close()
