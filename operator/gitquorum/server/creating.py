"""Repositories created by a push: they appear only once a push into them has succeeded.

With ``--create-on-push`` a push to a missing repository creates it, but a push can fail in
many ways (rejected, malformed, truncated, corrupt pack, client gone), and a client may ask
for the receive-pack advertisement and never push at all. None of these may leave an empty
repository behind, so nothing is created where the repository will be served until the end.

The advertisement comes from git itself, run against a throwaway empty repository, so a
client sees exactly what git sends for an empty repository (the ``capabilities^{}`` line and
receive-pack's capabilities). The push goes into a fresh repository under a staging name in
the root (``.creating-<random>``), which the resolver never serves because it refuses hidden
path segments. Staging sits in the root itself rather than beside the target so that a
failed push does not even leave the target's parent directories behind; the root is one
file system, so moving the repository into place is a single ``rename(2)``. That happens
only if the push left at least one ref; otherwise the staging directory is removed.

rename(2) refuses to replace a directory that has entries, so if another push created the
repository meanwhile, this one loses: its staging copy is removed and the client is told, in
report-status, to fetch and push again. Two histories are never merged behind the clients'
backs. The cost is that git's report for a creating push is held back until that decision is
made, bounded by :data:`MAX_REPORT_BYTES`.
"""

import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import pathlib
import secrets
import shutil
from collections.abc import AsyncIterator

from dulwich import repo as dulwich_repo

from gitquorum.protocol import reporting
from gitquorum.server import clients, repositories, spawning, writepath

log = logging.getLogger(__name__)

STAGING_PREFIX = ".creating-"
REFS_PREFIX = b"refs/"

# git's report for a creating push is held in memory until the repository is in place. It
# is one short line per ref (the command section is already bounded) plus hook output; the
# bound keeps a chatty hook from growing the server's memory without limit.
MAX_REPORT_BYTES = 16 * 1024 * 1024

LOST_RACE = "repository was created by another push meanwhile; fetch and push again"
REPORT_TOO_LARGE = "push output too large for a repository being created"


class Creator:
    """Answers receive-pack for repositories that do not exist yet, all or nothing."""

    def __init__(
        self,
        runner: spawning.GitRunner,
        write_path: writepath.WritePath,
        *,
        root: pathlib.Path,
        default_branch: str,
    ) -> None:
        self._runner = runner
        self._write_path = write_path
        self._root = root
        self._default_branch = default_branch

    @contextlib.asynccontextmanager
    async def advertise(
        self, target: repositories.Repository, client: clients.Client
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The advertisement of an empty repository; nothing of it outlives the request."""
        yield self._advertisement(target, client)

    @contextlib.asynccontextmanager
    async def receive(self, push: writepath.Push) -> AsyncIterator[AsyncIterator[bytes]]:
        """Applies a push to a new repository, which is moved into place if refs were left."""
        yield self._receive(push)

    # Both answers are produced whole before their first byte is yielded: by the time the
    # client reads them, the staging directory is gone or in place, and a failure surfaces
    # on the first chunk, where the HTTP layer can still answer it properly.

    async def _advertisement(
        self, target: repositories.Repository, client: clients.Client
    ) -> AsyncIterator[bytes]:
        async with self._staged(target) as empty, self._write_path.advertise(empty, client) as out:
            advertisement = b"".join([chunk async for chunk in out])
        yield advertisement

    async def _receive(self, push: writepath.Push) -> AsyncIterator[bytes]:
        target = push.repository
        async with self._staged(target) as staging:
            staged = dataclasses.replace(push, repository=staging)
            async with self._write_path.receive(staged) as output:
                report = await _collect(output, limit=MAX_REPORT_BYTES)
            if report is None:
                log.warning(
                    "repository %s: push output over %s bytes", target.name, MAX_REPORT_BYTES
                )
                answer = reporting.rejection(push.commands, REPORT_TOO_LARGE)
            elif not await asyncio.to_thread(has_refs, staging.path):
                log.info("repository %s: push left no refs, nothing created", target.name)
                answer = report
            elif await asyncio.to_thread(publish, staging.path, target.path):
                log.info("repository %s: created for a push", target.name)
                answer = report
            else:
                log.warning("repository %s: created by another push meanwhile", target.name)
                answer = reporting.rejection(push.commands, LOST_RACE)
        yield answer

    @contextlib.asynccontextmanager
    async def _staged(
        self, target: repositories.Repository
    ) -> AsyncIterator[repositories.Repository]:
        """An empty bare repository under a staging name, removed when the block ends."""
        path = self._root / f"{STAGING_PREFIX}{secrets.token_hex(8)}"
        try:
            await self._runner.run(
                [
                    "init",
                    "--bare",
                    "--quiet",
                    f"--initial-branch={self._default_branch}",
                    str(path),
                ]
            )
            yield repositories.Repository(name=target.name, path=path)
        finally:
            # Shielded: a request cancelled while it cleans up must still clean up.
            await asyncio.shield(asyncio.to_thread(remove, path))


async def _collect(output: AsyncIterator[bytes], *, limit: int) -> bytes | None:
    """All of ``output``, or None once it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in output:
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def has_refs(path: pathlib.Path) -> bool:
    """Whether a repository has any ref under refs/ (HEAD of an empty one names none)."""
    repo = dulwich_repo.Repo(str(path))
    try:
        return any(ref.startswith(REFS_PREFIX) for ref in repo.refs.allkeys())
    finally:
        repo.close()


def publish(staging: pathlib.Path, target: pathlib.Path) -> bool:
    """Moves a staged repository to its served path; False if something is there already."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # rename(2) would replace an empty directory, so look first; a repository that another
    # push moved there after this look is not empty, and the rename below then fails.
    if os.path.lexists(target):
        return False
    try:
        os.rename(staging, target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            return False
        raise
    return True


def remove(path: pathlib.Path) -> None:
    """Removes a staging directory; gone already is fine (it was moved into place)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def remove_abandoned(root: pathlib.Path) -> list[pathlib.Path]:
    """Removes staging repositories that a server killed mid-push left behind.

    Called at startup, when this server has no push in flight: one server owns its root.
    """
    abandoned = sorted(root.glob(f"{STAGING_PREFIX}*"))
    for path in abandoned:
        remove(path)
    return abandoned
