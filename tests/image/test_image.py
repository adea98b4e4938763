"""The image `make image` built, run as the chart runs it: uid 65532, read-only root file
system, a tmpfs on /tmp, every capability dropped, no privilege escalation.

The OCI archive is loaded into an image store of the test's own (Debian's podman with the
project's containers.conf: host networking, runc); then ``operator --help`` answers, ``serve``
takes a push and serves a clone, and three ``replica`` containers replicate a push to each
other, reached on loopback. A dependency that writes to a read-only path, or a file the
non-root user cannot read, fails here before it ships.
"""

import os
import pathlib
import subprocess
import uuid
from collections.abc import Iterator, Sequence

import pytest

from tests import waiting
from tests.integration import helpers
from tests.integration.helpers import Git
from tests.integration.replicas import Replicas
from tests.ports import free_port

pytestmark = pytest.mark.image

REPO = pathlib.Path(__file__).resolve().parents[2]
ARCHIVE = REPO / "build" / "gitquorum-image.tar"
CONTAINERS_CONF = REPO / "hack" / "containers" / "containers.conf"
IMAGE = "localhost/gitquorum:dev"
USER = "65532:65532"
"""The chart's runAsUser and runAsGroup (and fsGroup, which owns the data volume)."""
CONTAINER_START = 120.0
"""Seconds for a container to answer."""


class Podman:
    """podman with an image store of its own, and the containers it ran, removed at the end."""

    def __init__(self, store: pathlib.Path) -> None:
        self.store = store
        self.names: list[str] = []

    @property
    def base(self) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.store / "graph"),
            "--runroot",
            str(self.store / "run"),
            "--storage-driver",
            "vfs",
        ]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def as_the_chart_runs_it(self, mounts: Sequence[pathlib.Path] = ()) -> list[str]:
        """``podman run ... IMAGE``: what comes after is gitquorum's own command line."""
        name = f"gitquorum-test-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return [
            *self.base,
            "run",
            "--rm",
            f"--name={name}",
            "--network=host",
            f"--user={USER}",
            "--read-only",
            "--tmpfs=/tmp:rw,mode=1777",
            "--cap-drop=all",
            "--security-opt=no-new-privileges",
            *(f"--volume={path}:{path}" for path in mounts),
            IMAGE,
        ]

    def remove_all(self) -> None:
        for name in self.names:
            self.run("rm", "--force", "--time=5", name)


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    assert ARCHIVE.exists(), f"no image at {ARCHIVE}: `make image` builds it (make test does)"
    engine = Podman(tmp_path_factory.mktemp("image-store"))
    # Every podman started here, the replicas' included, reads the project's settings.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONTAINERS_CONF", str(CONTAINERS_CONF))
        loaded = engine.run("load", "--input", str(ARCHIVE), timeout=300)
        assert loaded.returncode == 0, loaded.stderr
        try:
            yield engine
        finally:
            engine.remove_all()


def _owned_by_the_chart_user(path: pathlib.Path) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 65532, 65532)
    return path


def test_image_operator_help_answers(podman: Podman):
    result = subprocess.run(
        [*podman.as_the_chart_runs_it(), "operator", "--help"],
        capture_output=True,
        text=True,
        env=podman.env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: gitquorum operator" in result.stdout


def test_image_serve_takes_a_push_and_serves_a_clone(
    podman: Podman, git: Git, auth_file: pathlib.Path, tmp_path: pathlib.Path
):
    root = _owned_by_the_chart_user(tmp_path / "repositories")
    port = free_port()
    command = [
        *podman.as_the_chart_runs_it([root, auth_file]),
        "serve",
        "--root",
        str(root),
        "--listen",
        f"127.0.0.1:{port}",
        "--auth-file",
        str(auth_file),
        "--create-on-push",
    ]
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=podman.env)
    try:
        url = f"http://{helpers.ALICE[0]}:{helpers.ALICE[1]}@127.0.0.1:{port}/project.git"
        work = tmp_path / "work"
        git.run("init", "-q", str(work))
        head = git.commit(work, "README", "from the image test\n")
        waiting.until(
            "the server in the container to take a push",
            lambda: git.run("push", "-q", url, "main", cwd=work, check=False).returncode == 0,
            timeout=60,
            interval=0.5,
            seen=lambda: log.read_text(errors="replace")[-2000:],
        )
        clone = tmp_path / "clone"
        git.run("clone", "-q", url, str(clone))
        assert git.out("rev-parse", "HEAD", cwd=clone) == head
        assert (root / "project.git").stat().st_uid == 65532
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_image_replicas_replicate_a_push(
    podman: Podman, git: Git, auth_file: pathlib.Path, tmp_path: pathlib.Path
):
    base = _owned_by_the_chart_user(tmp_path / "replicas")

    def program(replica: str) -> Sequence[str]:
        data = _owned_by_the_chart_user(base / replica)
        return podman.as_the_chart_runs_it([data, base / "token", auth_file])

    # A container's start copies the image's files (the vfs store): slower than a process.
    group = Replicas(base, auth_file, 3, program=program, startup_timeout=CONTAINER_START)
    (base / "token").chmod(0o644)
    try:
        group.start_all()
        work = tmp_path / "work"
        git.run("init", "-q", str(work))
        head = git.commit(work, "README", "replicated from the image test\n")
        git.run("push", "-q", group.url("r1"), "main", cwd=work)  # a follower forwards it
        group.wait_in_sync()
        for replica in group.ids:
            served = git.out("ls-remote", group.url(replica), "refs/heads/main")
            assert served.split() == [head, "refs/heads/main"], replica
            assert group.status(replica)["generation"] == 1, replica
            repository = group.data(replica) / "repositories" / "repository.git"
            assert repository.stat().st_uid == 65532, replica
    finally:
        group.stop_all()
