"""The two git services, as the HTTP layer calls them.

Each function takes what the HTTP layer knows (repository, client, body) and returns an
:data:`writepath.Output`: entering it starts git, iterating it streams the response. Fetches
(upload-pack) are served here directly; pushes (receive-pack) are validated here and then
handed to the write path, which decides how they are applied. A push to a repository that
does not exist yet (``--create-on-push``) goes through ``creating``, which wraps the write
path so that the repository appears only if the push succeeds.
"""

import contextlib
from collections.abc import AsyncIterator

from gitquorum import errors
from gitquorum.protocol import pktline, refupdates, smarthttp, uploadpack
from gitquorum.server import bodies, clients, creating, repositories, spawning, writepath

UPLOAD_PACK = smarthttp.Service.UPLOAD_PACK


class Services:
    """Serves fetches with git upload-pack and hands pushes to the write path."""

    def __init__(
        self,
        runner: spawning.GitRunner,
        write_path: writepath.WritePath,
        *,
        creator: creating.Creator,
    ) -> None:
        self._runner = runner
        self.write_path = write_path
        self._creator = creator

    def advertise(
        self,
        repository: repositories.Repository,
        *,
        service: smarthttp.Service,
        client: clients.Client,
    ) -> writepath.Output:
        """The answer to ``GET info/refs?service=...``."""
        preamble = smarthttp.advertisement_preamble(service, client.protocol.for_service(service))
        if service is smarthttp.Service.RECEIVE_PACK and not repository.exists:
            return _prefixed(preamble, self._creator.advertise(repository, client))
        if service is smarthttp.Service.RECEIVE_PACK:
            return _prefixed(preamble, self.write_path.advertise(repository, client))
        args = [
            service.command,
            "--strict",
            "--stateless-rpc",
            "--advertise-refs",
            str(repository.path),
        ]
        git = self._git(args, client=client, service=service, repository=repository)
        return _prefixed(preamble, git)

    @contextlib.asynccontextmanager
    async def upload_pack(
        self, repository: repositories.Repository, *, client: clients.Client, body: bytes
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The answer to one round of fetch negotiation, validated before git sees it."""
        uploadpack.validate(body, protocol_v2=client.protocol.version >= 2)
        args = [UPLOAD_PACK.command, "--strict", "--stateless-rpc", str(repository.path)]
        git = self._git(
            args,
            client=client,
            service=UPLOAD_PACK,
            repository=repository,
            stdin=bodies.once(body),
        )
        async with git as output:
            yield output

    @contextlib.asynccontextmanager
    async def receive_pack(
        self,
        repository: repositories.Repository,
        *,
        client: clients.Client,
        body: AsyncIterator[bytes],
        max_command_bytes: int,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The answer to a push: its commands are parsed here, the rest is the write path's."""
        commands, pack = await read_commands(body, max_bytes=max_command_bytes)
        push = writepath.Push(repository=repository, client=client, commands=commands, pack=pack)
        receiving = self.write_path.receive if repository.exists else self._creator.receive
        async with receiving(push) as output:
            yield output

    @contextlib.asynccontextmanager
    async def _git(
        self,
        args: list[str],
        *,
        client: clients.Client,
        service: smarthttp.Service,
        repository: repositories.Repository,
        stdin: AsyncIterator[bytes] | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        env = client.environment(service)
        path = repository.path
        async with self._runner.start(args, env=env, stdin=stdin, repository=path) as git:
            yield git.output()


async def read_commands(
    body: AsyncIterator[bytes], *, max_bytes: int
) -> tuple[refupdates.PushCommands, AsyncIterator[bytes]]:
    """The push's command section, and the rest of the body (the pack) still unread."""
    decoder = pktline.Decoder()
    parser = refupdates.Parser(max_bytes=max_bytes)
    try:
        async for chunk in body:
            decoder.feed(chunk)
            while (packet := decoder.next()) is not None:
                if parser.feed(packet):
                    return parser.result(), bodies.prepend(decoder.rest(), body)
        raise errors.ProtocolError("push request ends inside its command section")
    except errors.ProtocolError as error:
        # A client that asked for side-band reads every packet as a band: tell the HTTP
        # layer, so that the error reaches git as a message and not as "bad band".
        raise errors.ProtocolError(str(error), sideband=parser.sideband) from error


@contextlib.asynccontextmanager
async def _prefixed(prefix: bytes, output: writepath.Output) -> AsyncIterator[AsyncIterator[bytes]]:
    """Puts ``prefix`` in front of the first chunk, so a git failure still comes first."""
    async with output as chunks:
        yield _prepend_to_first(prefix, chunks)


async def _prepend_to_first(prefix: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    first = True
    async for chunk in chunks:
        yield prefix + chunk if first else chunk
        first = False
    if first:
        yield prefix
