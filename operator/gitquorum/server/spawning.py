"""Running git processes: bounded in number, fed and drained without blocking the loop.

Pack work belongs to git. Python starts ``git upload-pack`` or ``git receive-pack`` with
``--stateless-rpc``, streams the request body into its stdin from one task while the caller
streams its stdout out, and drains stderr on the side so git never blocks on a full pipe. A
semaphore bounds how many git processes run at once; a request that cannot get a slot within
the queue timeout is refused as :class:`errors.Unavailable` rather than piling up. However a
request ends (done, failed, client gone, timed out) the process is killed if still running,
reaped, and its slot returned.
"""

import asyncio
import collections
import contextlib
import logging
import os
import pathlib
import signal
from collections.abc import AsyncIterator, Mapping, Sequence

from gitquorum import errors
from gitquorum.server import settings

log = logging.getLogger(__name__)

# Reads from git's stdout take what the pipe has, up to this much: large enough that a clone
# costs few loop iterations, small enough that memory per request stays flat.
READ_SIZE = 256 * 1024

# Only the end of stderr is kept for error messages; git can be chatty on big operations.
MAX_STDERR_BYTES = 16 * 1024

# Variables that would point git at another repository, object store or configuration than
# the one the server chose; they are never passed on from the server's own environment.
_SCRUBBED_VARIABLES = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_QUARANTINE_PATH",
        "GIT_NAMESPACE",
        "GIT_PROTOCOL",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
    }
)


def server_config(options: settings.GitOptions) -> dict[str, str]:
    """git configuration the server sets on every command, over any repository's own."""
    return {
        # Partial clone: filters, and the lazy fetches of single objects they lead to.
        "uploadpack.allowFilter": "true",
        "uploadpack.allowAnySHA1InWant": "true",
        "receive.fsckObjects": "true" if options.fsck_objects else "false",
        "receive.advertisePushOptions": "true",
    }


class GitRunner:
    """Starts git commands under the concurrency limit."""

    def __init__(
        self,
        options: settings.GitOptions,
        limits: settings.Limits,
        *,
        environment: Mapping[str, str],
        config: Mapping[str, str] | None = None,
    ) -> None:
        self._executable = options.executable
        self._config = {**server_config(options), **(config or {})}
        self._queue_timeout = limits.queue_timeout
        self._slots = asyncio.Semaphore(limits.max_git_processes)
        self._environment = {
            key: value
            for key, value in environment.items()
            if key not in _SCRUBBED_VARIABLES
            and not key.startswith("GIT_CONFIG_KEY_")
            and not key.startswith("GIT_CONFIG_VALUE_")
        }
        self._environment["GIT_TERMINAL_PROMPT"] = "0"
        self.running = 0
        self.waiting = 0

    def command_line(
        self, args: Sequence[str], *, repository: pathlib.Path | None = None
    ) -> list[str]:
        """git's command line; ``repository`` is the one the server resolved for it to serve."""
        settings = dict(self._config)
        if repository is not None:
            # git refuses a repository owned by another uid ("dubious ownership") unless
            # safe.directory names it, and reads that only from protected configuration such as
            # -c: a repository's own config cannot trust itself. The server confined this path
            # below the root it was started to serve, whoever owns the files.
            settings["safe.directory"] = str(repository)
        config = [item for key, value in settings.items() for item in ("-c", f"{key}={value}")]
        return [self._executable, *config, *args]

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds one of the git process slots, or raises Unavailable after the queue timeout."""
        self.waiting += 1
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._slots.acquire()
        except TimeoutError as error:
            raise errors.Unavailable("too many git operations in progress") from error
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()

    @contextlib.asynccontextmanager
    async def start(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: AsyncIterator[bytes] | None = None,
        repository: pathlib.Path | None = None,
    ) -> AsyncIterator["GitProcess"]:
        """A running git process, fed from ``stdin``; cleaned up however the block ends."""
        async with self.slot():
            process = await asyncio.create_subprocess_exec(
                *self.command_line(args, repository=repository),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**self._environment, **(env or {})},
                limit=READ_SIZE,
                # Its own process group, so that killing it also kills the helpers it runs
                # (index-pack, unpack-objects, pack-objects), which share its pipes.
                process_group=0,
            )
            git = GitProcess(args[0], process=process, stdin=stdin)
            try:
                yield git
            finally:
                await git.close()

    async def run(self, args: Sequence[str], *, env: Mapping[str, str] | None = None) -> bytes:
        """Runs a short git command to completion and returns its output."""
        async with self.start(args, env=env) as git:
            return b"".join([chunk async for chunk in git.output()])


class GitProcess:
    """One running git command: its output as a stream, its input fed in the background."""

    def __init__(
        self,
        command: str,
        *,
        process: asyncio.subprocess.Process,
        stdin: AsyncIterator[bytes] | None,
    ) -> None:
        self.command = command
        self._process = process
        self._stderr: collections.deque[bytes] = collections.deque()
        self._input_error: BaseException | None = None
        self.bytes_in = 0
        self._stderr_task = asyncio.create_task(self._drain_stderr())
        self._stdin_task = asyncio.create_task(self._feed(stdin))

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    async def output(self) -> AsyncIterator[bytes]:
        """git's stdout, chunk by chunk; raises if the input failed or git exited non-zero."""
        assert self._process.stdout is not None
        while chunk := await self._process.stdout.read(READ_SIZE):
            yield chunk
        returncode = await self._process.wait()
        # git has exited: whatever the client still sends has no reader, so stop waiting.
        self._stdin_task.cancel()
        await asyncio.gather(self._stdin_task, return_exceptions=True)
        if self._input_error is not None:
            raise self._input_error
        await self._stderr_task
        if returncode != 0:
            raise errors.GitFailed(self.command, returncode, self.stderr)

    def kill(self) -> None:
        """Kills git and every helper process it started."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)

    async def close(self) -> None:
        """Kills git if it still runs and reaps it; safe to call more than once."""
        if self._process.returncode is None:
            self.kill()
        self._stdin_task.cancel()
        await asyncio.gather(self._stdin_task, self._stderr_task, return_exceptions=True)
        await self._process.wait()

    async def _feed(self, stdin: AsyncIterator[bytes] | None) -> None:
        pipe = self._process.stdin
        assert pipe is not None
        try:
            if stdin is not None:
                async for chunk in stdin:
                    self.bytes_in += len(chunk)
                    if not await _write(pipe, chunk):
                        return
        except Exception as error:
            # The request body failed (too large, timed out, client gone): git must not see
            # a partial request as if it were whole, so it is killed, and the error surfaces.
            # A client that went away raises ConnectionResetError here too, which must not
            # pass for git's pipe breaking: git would wait for the rest of its input forever.
            self._input_error = error
            self.kill()
            pipe.close()
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            pipe.close()
            await pipe.wait_closed()

    async def _drain_stderr(self) -> None:
        assert self._process.stderr is not None
        kept = 0
        while chunk := await self._process.stderr.read(READ_SIZE):
            self._stderr.append(chunk)
            kept += len(chunk)
            while kept > MAX_STDERR_BYTES and len(self._stderr) > 1:
                kept -= len(self._stderr.popleft())
        if self._stderr:
            log.debug("git %s stderr: %s", self.command, self.stderr.strip())


async def _write(pipe: asyncio.StreamWriter, chunk: bytes) -> bool:
    """Writes to git's stdin; False once git stopped reading.

    git stops reading when it exits or fails, which its status and stderr report.
    """
    try:
        pipe.write(chunk)
        await pipe.drain()
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True
