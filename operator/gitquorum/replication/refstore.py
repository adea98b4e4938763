"""Reading and writing a replica's refs with git itself.

Refs are written with ``git update-ref --stdin``: one transaction for all updates of a
transaction, with git's own locking, packed-refs handling and ref-name rules, and fsync of
every ref file (``core.fsync`` includes references in the replica's git configuration). A
follower passes the old values it expects, so git refuses an update whose ref is not where
the leader saw it: that is a divergence, caught here rather than applied over.
"""

from collections.abc import AsyncIterator, Iterable

from gitquorum.replication import transactions
from gitquorum.server import spawning

HEAD_PREFIX = "ref: "


async def read_all(runner: spawning.GitRunner, repository: str) -> dict[str, str]:
    """Every ref under ``refs/`` and the object it names."""
    output = await runner.run(
        ["for-each-ref", "--format=%(objectname) %(refname)", "refs/"],
        env={"GIT_DIR": repository},
    )
    refs: dict[str, str] = {}
    for line in output.decode().splitlines():
        object_id, _, ref = line.partition(" ")
        refs[ref] = object_id
    return refs


async def read_head(runner: spawning.GitRunner, repository: str) -> str:
    """The ref HEAD names."""
    output = await runner.run(["symbolic-ref", "HEAD"], env={"GIT_DIR": repository})
    return output.decode().strip()


async def set_head(runner: spawning.GitRunner, repository: str, target: str) -> None:
    await runner.run(["symbolic-ref", "HEAD", target], env={"GIT_DIR": repository})


async def apply(
    runner: spawning.GitRunner,
    repository: str,
    changes: Iterable[transactions.Change],
    *,
    check_old: bool,
) -> None:
    """Applies all changes in one ref transaction; raises GitFailed and changes nothing if
    any ref is not at its old value (with ``check_old``) or cannot be written."""
    lines = [_line(change, check_old=check_old) for change in changes]
    if not lines:
        return
    async with runner.start(
        ["update-ref", "--stdin"], env={"GIT_DIR": repository}, stdin=_once("".join(lines))
    ) as git:
        async for _ in git.output():
            pass


def _line(change: transactions.Change, *, check_old: bool) -> str:
    old = f" {change.old}" if check_old else ""
    if change.deletes:
        return f"delete {change.ref}{old}\n"
    return f"update {change.ref} {change.new}{old}\n"


async def _once(text: str) -> AsyncIterator[bytes]:
    yield text.encode()


def differences(current: dict[str, str], wanted: dict[str, str]) -> list[transactions.Change]:
    """The changes that turn ref state ``current`` into ``wanted``."""
    changes = [
        transactions.Change(ref, current.get(ref, transactions.ZERO_ID), object_id)
        for ref, object_id in wanted.items()
        if current.get(ref) != object_id
    ]
    changes += [
        transactions.Change(ref, object_id, transactions.ZERO_ID)
        for ref, object_id in current.items()
        if ref not in wanted
    ]
    return changes
