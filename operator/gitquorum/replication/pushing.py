"""The leader's write path: git receive-pack with the replicating hook (see ``leading``).

The push's command section and pack go to git receive-pack as on a standalone server, with a
per-push channel to the pre-receive hook. While git runs, the leader decides the push when
the hook hands it over. git's answer (report-status, progress) is held back until the push
is acknowledged, so a client never reads "ok" for a push that a majority has not stored; a
push that git accepted but whose replication could not be confirmed is reported as failed
for every ref. The decision runs in a task of its own: a client that goes away in the middle
does not interrupt it, because once a majority holds a push it must be applied here too.
"""

import asyncio
import contextlib
import logging
import pathlib
from collections.abc import AsyncIterator, Awaitable

from gitquorum import errors
from gitquorum.protocol import reporting, smarthttp
from gitquorum.replication import hooks, leading, protection, replica, tracing
from gitquorum.server import bodies, clients, repositories, spawning, writepath

log = logging.getLogger(__name__)


class ReplicatedWritePath:
    """Carries out pushes on the leader; the forwarding layer sends others here."""

    def __init__(
        self,
        runner: spawning.GitRunner,
        member: replica.Replica,
        channels: pathlib.Path,
        *,
        policy: protection.PolicyFile | None = None,
    ) -> None:
        self._runner = runner
        self._replica = member
        self._channels = channels
        self._policy = policy or protection.PolicyFile(None)

    def _leadership(self) -> leading.Leadership:
        leadership = self._replica.leadership
        if leadership is None or not leadership.ready:
            raise errors.Unavailable("this replica does not take writes now")
        return leadership

    @contextlib.asynccontextmanager
    async def advertise(
        self, repository: repositories.Repository, client: clients.Client
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        self._leadership()
        service = smarthttp.Service.RECEIVE_PACK
        args = [service.command, "--stateless-rpc", "--advertise-refs", str(repository.path)]
        async with self._runner.start(args, env=client.environment(service)) as git:
            yield git.output()

    @contextlib.asynccontextmanager
    async def receive(self, push: writepath.Push) -> AsyncIterator[AsyncIterator[bytes]]:
        leadership = self._leadership()
        channel = hooks.Channel.open(self._channels)
        received: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        atomic = push.commands.has(b"atomic")
        trace = tracing.PushTrace()
        decision = leadership.push(
            channel,
            received,
            atomic=atomic,
            screen=self._screen(push.repository.path),
            trace=trace,
        )
        deciding = asyncio.ensure_future(_decide(decision, channel))
        output, failure = b"", None
        try:
            output, failure = await self._run(push, channel)
        finally:
            if not received.done():
                updated = reporting.updated_refs(output, sideband_enabled=push.commands.sideband)
                received.set_result(updated if failure is None else frozenset())
            if not channel.requested:
                deciding.cancel()
        try:
            acknowledged = await asyncio.shield(deciding)
        except asyncio.CancelledError:
            if not deciding.cancelled():
                raise
            acknowledged = None
        except errors.PushRefused as refused:
            log.info("repository %s: push refused: %s", push.repository.name, refused)
            acknowledged = False
            # git only says "pre-receive hook declined": the client sees the rule instead.
            output, failure = reporting.rejection(push.commands, str(refused)), None
        except errors.GitquorumError as error:
            log.warning("repository %s: push not confirmed: %s", push.repository.name, error)
            acknowledged = False
            if channel.answered:
                output, failure = reporting.rejection(push.commands, _unconfirmed(error)), None
        finally:
            channel.close()
        if acknowledged:
            log.info("repository %s: %s", push.repository.name, trace.line())
        yield _replay(output, failure)

    def _screen(self, repository: pathlib.Path) -> leading.Screen:
        rules = self._policy.current()

        async def screen(request: hooks.Request) -> str | None:
            return await protection.refusal(
                self._runner,
                repository=repository,
                quarantine=request.quarantine,
                changes=request.changes,
                rules=rules,
            )

        return screen

    async def _run(
        self, push: writepath.Push, channel: hooks.Channel
    ) -> tuple[bytes, errors.GitFailed | None]:
        service = smarthttp.Service.RECEIVE_PACK
        args = [service.command, "--stateless-rpc", str(push.repository.path)]
        env = {**push.client.environment(service), **channel.environment}
        stdin = bodies.prepend(push.commands.encode(), push.pack)
        chunks: list[bytes] = []
        async with self._runner.start(args, env=env, stdin=stdin) as git:
            try:
                async for chunk in git.output():
                    chunks.append(chunk)
            except errors.GitFailed as error:
                return b"".join(chunks), error
        return b"".join(chunks), None


async def _decide(decision: Awaitable[bool], channel: hooks.Channel) -> bool:
    try:
        return await decision
    except BaseException as error:
        channel.reply(reason=f"the push could not be replicated: {error}")
        raise


def _unconfirmed(error: BaseException) -> str:
    return f"replication not confirmed ({error}); fetch to see whether the push took effect"


async def _replay(output: bytes, failure: errors.GitFailed | None) -> AsyncIterator[bytes]:
    if output:
        yield output
    if failure is not None:
        raise failure
