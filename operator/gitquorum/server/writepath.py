"""How a push is carried out: the seam where replication takes over the write path.

The HTTP layer authenticates a push, resolves its repository and parses its command section
(``protocol.refupdates``); from there a :class:`WritePath` decides what happens. The
standalone server uses :class:`LocalWritePath`: git receive-pack applies the push to the
local repository. Objects land first in git's quarantine directory and move into the
repository only after the pack is complete and checked, and the ref updates go through one
ref transaction, so a truncated or corrupt push leaves the repository as it was.

A replica will plug in its own write path here, for instance one that forwards the request
to the current leader when it is a follower, or, as leader, runs receive-pack with a
``reference-transaction`` hook that holds the prepared update list (visible in
:class:`Push`) until a majority of replicas has stored the quarantined objects and voted.
:class:`LocalWritePath` takes extra git configuration and environment for that purpose.
"""

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from dulwich import refs as dulwich_refs
from dulwich import repo as dulwich_repo

from gitquorum.protocol import refupdates, smarthttp
from gitquorum.server import bodies, clients, repositories, spawning

log = logging.getLogger(__name__)

BRANCH_PREFIX = "refs/heads/"
SYMREF_PREFIX = b"ref: "
HEAD = dulwich_refs.Ref(b"HEAD")

Output = contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]
"""A response in the making: entering it starts the work, iterating streams the bytes."""


@dataclasses.dataclass(frozen=True)
class Push:
    """One push as the write path receives it: validated commands and the unread pack."""

    repository: repositories.Repository
    client: clients.Client
    commands: refupdates.PushCommands
    pack: AsyncIterator[bytes]
    """The body after the command section: the pack, read as it arrives."""


class WritePath(Protocol):
    """Carries out pushes for the server."""

    def advertise(self, repository: repositories.Repository, client: clients.Client) -> Output:
        """The receive-pack ref advertisement that the client bases its push on."""
        ...

    def receive(self, push: Push) -> Output:
        """Applies a push and streams git's report (report-status, side-band) back."""
        ...


class LocalWritePath:
    """The standalone write path: git receive-pack on the local repository."""

    def __init__(
        self,
        runner: spawning.GitRunner,
        *,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        self._runner = runner
        self._environment = dict(environment or {})

    @contextlib.asynccontextmanager
    async def advertise(
        self, repository: repositories.Repository, client: clients.Client
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        service = smarthttp.Service.RECEIVE_PACK
        args = [service.command, "--stateless-rpc", "--advertise-refs", str(repository.path)]
        env = {**client.environment(service), **self._environment}
        async with self._runner.start(args, env=env, repository=repository.path) as git:
            yield git.output()

    @contextlib.asynccontextmanager
    async def receive(self, push: Push) -> AsyncIterator[AsyncIterator[bytes]]:
        service = smarthttp.Service.RECEIVE_PACK
        args = [service.command, "--stateless-rpc", str(push.repository.path)]
        env = {**push.client.environment(service), **self._environment}
        stdin = bodies.prepend(push.commands.encode(), push.pack)
        path = push.repository.path
        async with self._runner.start(args, env=env, stdin=stdin, repository=path) as git:
            yield self._report(git, push)

    async def _report(self, git: spawning.GitProcess, push: Push) -> AsyncIterator[bytes]:
        async for chunk in git.output():
            yield chunk
        branches = [
            update.ref
            for update in push.commands.updates
            if update.is_create and update.ref.startswith(BRANCH_PREFIX)
        ]
        if branches:
            await asyncio.to_thread(point_unborn_head, push.repository, branches)


def point_unborn_head(repository: repositories.Repository, branches: list[str]) -> None:
    """Points HEAD at the first pushed branch that exists if HEAD names none.

    A repository created by a push has HEAD on the default branch; when the first push
    brings other branches only, clones would otherwise check out nothing.
    """
    repo = dulwich_repo.Repo(str(repository.path))
    try:
        head = repo.refs.read_ref(HEAD)
        if head is None or not head.startswith(SYMREF_PREFIX):
            return
        if repo.refs.read_ref(dulwich_refs.Ref(head[len(SYMREF_PREFIX) :])) is not None:
            return
        for branch in branches:
            ref = dulwich_refs.Ref(branch.encode())
            if repo.refs.read_ref(ref) is not None:
                repo.refs.set_symbolic_ref(HEAD, ref)
                log.info("repository %s: HEAD now points at %s", repository.name, branch)
                return
    finally:
        repo.close()
