"""Copying the applied state of a peer: a follower that is behind, or an empty new replica.

The copy takes three steps. It asks the leader for a snapshot of its applied state (every
ref, HEAD, generation, checksum), taken under the leader's write lock so that it is one
state. It fetches the objects of those refs with git itself, from the leader's replication
port (git upload-pack, authenticated with the replication token), which streams one pack and
reports progress; git fetch writes the pack under a temporary name and renames it into place
only when it is complete and indexed, so an interrupted copy leaves nothing half-written and
the next one starts over with what it already has. Then, under the follower's lock, it sets
its refs to the snapshot's, checks the checksum, and records the snapshot's generation; the
``rebuilding`` flag is on while refs move, so a replica stopped in the middle neither leads
nor serves reads, and copies again when it starts.

A follower that moved on by itself while the objects came (it applied the next transactions)
keeps its newer state and drops the snapshot.
"""

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import time
from collections.abc import Mapping

from gitquorum import errors
from gitquorum.replication import membership, peerclient, store

log = logging.getLogger(__name__)

# git prints progress as "Receiving objects:  45% (450/1000), 1.20 MiB | 3.00 MiB/s".
_PROGRESS = re.compile(rb"([A-Za-z ]+):\s+(\d+)% \((\d+)/(\d+)\)")
# Progress lines are short; a longer line is git's error text and kept for the message.
MAX_STDERR_TAIL = 4096
PROGRESS_LOG_STEP = 25


@dataclasses.dataclass
class Progress:
    """Where a copy stands, for the status API."""

    phase: str = "idle"
    percent: int = 0
    objects: int = 0
    total: int = 0
    started: float = 0.0
    copies: int = 0
    last_error: str = ""


class Copier:
    """Copies a peer's applied state into the local store."""

    def __init__(
        self,
        local: store.Store,
        *,
        peers: peerclient.Peers,
        token: str,
        git: str,
        environment: Mapping[str, str],
    ) -> None:
        self._store = local
        self._peers = peers
        self._token = token
        self._git = git
        self._environment = dict(environment)
        self.progress = Progress()

    async def copy(self, source: membership.Member, *, lock: asyncio.Lock) -> None:
        self.progress = Progress(
            phase="snapshot", started=time.monotonic(), copies=self.progress.copies
        )
        try:
            snapshot = await self._peers.call(source.peer_url, "/replication/snapshot")
            refs: dict[str, str] = dict(snapshot["refs"])
            generation = int(snapshot["generation"])
            state = self._store.state
            if (
                generation <= state.generation
                and not state.rebuilding
                and snapshot["checksum"] == self._store.checksum
            ):
                return
            log.info(
                "copying generation %s (%s refs) from %s; here: generation %s",
                generation,
                len(refs),
                source.id,
                self._store.state.generation,
            )
            missing = sorted(set(refs.values()) - set(self._store.refs.values()))
            if missing:
                await self._fetch(source, missing)
            self.progress.phase = "refs"
            async with lock:
                state = self._store.state
                if state.generation > generation and not state.rebuilding:
                    log.info("moved on to generation %s while copying", state.generation)
                    return
                await self._store.begin_rebuild()
                await self._store.adopt(
                    refs=refs,
                    head=str(snapshot["head"]),
                    generation=generation,
                    last_term=int(snapshot["lastTerm"]),
                    last_seq=int(snapshot["lastSeq"]),
                    last_transaction=str(snapshot["transaction"]),
                    expected_checksum=str(snapshot["checksum"]),
                )
            self.progress.copies += 1
            log.info(
                "copied generation %s from %s in %.1f s",
                generation,
                source.id,
                time.monotonic() - self.progress.started,
            )
        except (KeyError, TypeError, ValueError) as error:
            self.progress.last_error = f"malformed snapshot: {error!r}"
            raise errors.ReplicationError(self.progress.last_error) from error
        except errors.GitquorumError as error:
            self.progress.last_error = str(error)
            raise
        finally:
            self.progress.phase = "idle"

    async def _fetch(self, source: membership.Member, objects: list[str]) -> None:
        self.progress.phase = "fetch"
        url = f"{source.peer_url}/replication/git"
        env = {
            **self._environment,
            "GIT_DIR": self._store.git_dir,
            "GIT_TERMINAL_PROMPT": "0",
            # The token travels in the environment, not on a command line others can read.
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {self._token}",
        }
        process = await asyncio.create_subprocess_exec(
            self._git,
            "-c",
            "fetch.unpackLimit=1",
            "-c",
            "core.fsync=objects,reference",
            "fetch",
            "--quiet" if not objects else "--progress",
            "--no-tags",
            "--no-write-fetch-head",
            "--stdin",
            url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            process_group=0,
        )
        try:
            assert process.stdin is not None and process.stderr is not None
            process.stdin.write("".join(f"{object_id}\n" for object_id in objects).encode())
            await process.stdin.drain()
            process.stdin.close()
            tail = await self._follow(process.stderr)
            if await process.wait() != 0:
                raise errors.GitFailed("fetch", process.returncode or 1, tail)
        finally:
            if process.returncode is None:
                with_suppressed_kill(process.pid)
                await process.wait()

    async def _follow(self, stderr: asyncio.StreamReader) -> str:
        """Reads git's progress into ``progress`` and logs it every quarter; returns the tail."""
        tail = b""
        logged = -PROGRESS_LOG_STEP
        buffer = b""
        while chunk := await stderr.read(65536):
            buffer += chunk
            *lines, buffer = re.split(rb"[\r\n]", buffer)
            for line in lines:
                match = _PROGRESS.search(line)
                if match is None:
                    tail = (tail + line + b"\n")[-MAX_STDERR_TAIL:]
                    continue
                self.progress.phase = match.group(1).decode().strip().lower()
                self.progress.percent = int(match.group(2))
                self.progress.objects = int(match.group(3))
                self.progress.total = int(match.group(4))
                if self.progress.phase == "receiving objects" and (
                    self.progress.percent >= logged + PROGRESS_LOG_STEP
                ):
                    logged = self.progress.percent
                    log.info(
                        "copy: receiving objects %s%% (%s/%s)",
                        self.progress.percent,
                        self.progress.objects,
                        self.progress.total,
                    )
        return (tail + buffer).decode("utf-8", "replace")


def with_suppressed_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
