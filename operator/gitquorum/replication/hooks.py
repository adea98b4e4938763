"""The pre-receive hook through which a leader's git receive-pack asks the replica to decide.

git receive-pack runs the pre-receive hook once the push's objects sit complete and checked
(connectivity included) in its quarantine directory, and before it moves them into the
repository or touches a ref; a hook that exits non-zero turns the whole push down. That is
where replication happens (Gitaly votes in a git hook too): the hook hands the quarantine
path and the ref updates to the replica, which ships the objects and the updates to the
followers and answers once a majority has stored them, or refuses.

The hook is a few lines of bash, not Python: it runs on every push, and a shell starts in
about a millisecond where an interpreter takes fifteen. It talks to the replica through a
per-push directory (``GITQUORUM_PUSH``) holding two FIFOs, which both sides open read-write so
that no open blocks: the hook writes the quarantine path and the updates to ``request`` (one
write for any usual push: the replica wakes once and reads it, no file and no thread hop in
between), and the replica writes its verdict line to ``verdict``. Should the replica die,
the hook gives up after ``GITQUORUM_HOOK_TIMEOUT`` seconds, and a replica that starts again
answers every abandoned hook it finds (``answer_abandoned``).
"""

import asyncio
import os
import pathlib
import shutil
import uuid

from gitquorum import errors
from gitquorum.replication import transactions

PUSH_VARIABLE = "GITQUORUM_PUSH"
TIMEOUT_VARIABLE = "GITQUORUM_HOOK_TIMEOUT"
HOOK_NAME = "pre-receive"
OK = "ok"
REJECT = "reject"

SCRIPT = """#!{bash}
# gitquorum: hands this push to the replica and waits for its verdict (replication/hooks.py).
if [ -z "${{GITQUORUM_PUSH:-}}" ]; then
    echo "gitquorum: pushes to a replica go through the replica's server" >&2
    exit 1
fi
# Builtins only: every process started here is on the path of every push.
# The FIFOs are opened first: once the request is written, a verdict written to the FIFO (by
# a restarted replica answering abandoned hooks, say) stays in it for this hook to read.
exec 3<>"$GITQUORUM_PUSH/verdict" 4<>"$GITQUORUM_PUSH/request" || exit 1
# The request in one write where it fits: the quarantine path, the updates, "{end}".
request="${{GIT_QUARANTINE_PATH:-}}"$'\\n'
while IFS= read -r line; do request+="$line"$'\\n'; done
printf '%s{end}\\n' "$request" >&4 || exit 1
if ! IFS= read -r -t "${{GITQUORUM_HOOK_TIMEOUT:-3600}}" verdict <&3; then
    echo "gitquorum: the replica did not decide on this push" >&2
    exit 1
fi
[ "$verdict" = ok ] && exit 0
printf '%s\\n' "${{verdict#reject }}" >&2
exit 1
"""
END = "end"
"""The request's last line; an update line is ``<old> <new> <ref>``, never this."""

# The verdict is one line; a longer reason is cut so the pipe write can never block.
MAX_REASON = 1000


def install(directory: pathlib.Path) -> pathlib.Path:
    """Writes the hook into ``directory`` (git's ``core.hooksPath``) and returns it."""
    bash = shutil.which("bash")
    if bash is None:
        raise errors.ConfigError("bash not found in PATH: the replica's git hook needs it")
    directory.mkdir(parents=True, exist_ok=True)
    hook = directory / HOOK_NAME
    hook.write_text(SCRIPT.format(bash=bash, end=END))
    hook.chmod(0o755)
    return hook


class Request:
    """What the hook handed over: where the objects are, and the ref updates."""

    def __init__(self, quarantine: pathlib.Path | None, changes: list[transactions.Change]):
        self.quarantine = quarantine
        self.changes = changes


class Channel:
    """One push's line to its hook: created before receive-pack starts, closed after."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self._request = -1
        self._verdict = -1
        self.answered = False
        self.requested = False
        """Set once the hook has handed its push over."""

    @classmethod
    def open(cls, parent: pathlib.Path) -> "Channel":
        channel = cls(parent / uuid.uuid4().hex)
        channel.directory.mkdir(mode=0o700, parents=True)
        for name in ("request", "verdict"):
            os.mkfifo(channel.directory / name, 0o600)
        flags = os.O_RDWR | os.O_NONBLOCK
        channel._request = os.open(channel.directory / "request", flags)
        channel._verdict = os.open(channel.directory / "verdict", flags)
        return channel

    @property
    def environment(self) -> dict[str, str]:
        return {PUSH_VARIABLE: str(self.directory)}

    async def request(self) -> Request:
        """Waits for the hook to hand its push over."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        received = bytearray()

        def readable() -> None:
            while not ready.done():
                try:
                    chunk = os.read(self._request, 65536)
                except BlockingIOError:
                    return
                if not chunk:  # no end of file while this side holds the FIFO open: never
                    return
                received.extend(chunk)
                if _complete(received):
                    ready.set_result(None)

        loop.add_reader(self._request, readable)
        try:
            await ready
        finally:
            loop.remove_reader(self._request)
        self.requested = True
        return parse_request(received.decode())

    def reply(self, *, reason: str | None = None) -> None:
        """Tells the hook to let the push through (no reason) or to turn it down, once."""
        if self.answered or self._verdict < 0:
            return
        self.answered = True
        line = OK if reason is None else f"{REJECT} {' '.join(reason.split())[:MAX_REASON]}"
        os.write(self._verdict, (line + "\n").encode())

    def close(self) -> None:
        for descriptor in (self._request, self._verdict):
            if descriptor >= 0:
                os.close(descriptor)
        self._request = self._verdict = -1
        shutil.rmtree(self.directory, ignore_errors=True)


def _complete(received: bytearray) -> bool:
    """Whether the request ends with its ``END`` line, past the quarantine line."""
    tail = f"\n{END}\n".encode()
    return received.endswith(tail) and received.find(b"\n") < len(received) - len(tail) + 1


def parse_request(text: str) -> Request:
    """The hook's request: the quarantine path (empty without one), then the updates as git
    gave them on the hook's standard input (``<old> <new> <ref>``), then ``END``."""
    lines = text.split("\n")
    quarantine, updates = lines[0], lines[1:-2]
    return Request(pathlib.Path(quarantine) if quarantine else None, parse_commands(updates))


def parse_commands(lines: list[str]) -> list[transactions.Change]:
    """Ref updates as the hook's standard input gives them: ``<old> <new> <ref>``."""
    changes = []
    for line in lines:
        old, new, ref = line.split(" ", 2)
        changes.append(transactions.Change(ref=ref, old=old, new=new))
    return changes


def answer_abandoned(parent: pathlib.Path) -> int:
    """Turns down the pushes whose hooks wait on a replica that has since restarted."""
    answered = 0
    if not parent.is_dir():
        return answered
    for directory in parent.iterdir():
        channel = Channel(directory)
        try:
            channel._verdict = os.open(directory / "verdict", os.O_RDWR | os.O_NONBLOCK)
            channel.reply(reason="the replica restarted during this push; push again")
            answered += 1
        except OSError:
            pass
        finally:
            channel.close()
    return answered
