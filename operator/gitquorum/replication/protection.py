"""Protected refs: the branches a cluster deploys from refuse force pushes and deletion.

git's own ``receive.denyNonFastForwards`` and ``denyDeletes`` hold for a whole repository;
a platform needs them per ref. The rules come from a JSON file (``--policy-file``; the
operator writes ``spec.protectedRefs`` into it), reloaded when it changes, the last good
version kept when a new one does not parse:

    {"protectedRefs": [{"pattern": "refs/heads/main", "allowForcePush": false,
                        "allowDeletion": false}]}

A pattern is a full ref name with shell-style wildcards (``fnmatch``: ``*`` also matches
``/``, so ``refs/heads/release/*`` covers every release branch; ``?`` and ``[...]`` as
usual); a ref that matches several rules is allowed a change only if every one allows it.
The leader applies them to each push before the quorum round, with the push's objects still
in git's quarantine, so a refused push changes nothing on any replica.
"""

import dataclasses
import fnmatch
import json
import logging
import os
import pathlib
from collections.abc import Iterable, Mapping

from gitquorum import errors
from gitquorum.replication import transactions
from gitquorum.server import spawning

log = logging.getLogger(__name__)

# A policy is a few rules; the bound keeps a mistaken file from costing memory on every push.
MAX_POLICY_BYTES = 1024 * 1024
MAX_RULES = 1000
MAX_PATTERN = 256


@dataclasses.dataclass(frozen=True)
class Rule:
    """One entry of ``protectedRefs``."""

    pattern: str
    allow_force_push: bool = False
    allow_deletion: bool = False

    def covers(self, ref: str) -> bool:
        return fnmatch.fnmatchcase(ref, self.pattern)


def parse(data: bytes) -> tuple[Rule, ...]:
    """The rules of a policy file; ConfigError saying what is wrong."""
    if len(data) > MAX_POLICY_BYTES:
        raise errors.ConfigError(f"policy file above {MAX_POLICY_BYTES} bytes")
    try:
        document = json.loads(data or b"{}")
    except ValueError as error:
        raise errors.ConfigError(f"policy file is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise errors.ConfigError("policy file must hold a JSON object")
    items = document.get("protectedRefs", [])
    if not isinstance(items, list) or len(items) > MAX_RULES:
        raise errors.ConfigError(f"protectedRefs must be a list of at most {MAX_RULES} rules")
    return tuple(_rule(item, index) for index, item in enumerate(items))


def _rule(item: object, index: int) -> Rule:
    where = f"protectedRefs[{index}]"
    if not isinstance(item, dict):
        raise errors.ConfigError(f"{where} must be an object")
    pattern = item.get("pattern")
    if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN:
        raise errors.ConfigError(f"{where}.pattern must be a ref name pattern")
    if not pattern.startswith("refs/"):
        raise errors.ConfigError(f"{where}.pattern must start with refs/ (a full ref name)")
    flags = {}
    for name in ("allowForcePush", "allowDeletion"):
        value = item.get(name, False)
        if not isinstance(value, bool):
            raise errors.ConfigError(f"{where}.{name} must be true or false")
        flags[name] = value
    return Rule(pattern, flags["allowForcePush"], flags["allowDeletion"])


class PolicyFile:
    """The rules of ``path``, read again when the file changes."""

    def __init__(self, path: pathlib.Path | None) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self.rules: tuple[Rule, ...] = ()

    def current(self) -> tuple[Rule, ...]:
        if self._path is None:
            return ()
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return self.rules
        # The inode too: a Secret volume replaces the file by renaming a new one into place.
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.rules = parse(self._path.read_bytes())
                log.info("policy: %s protected ref rule(s) from %s", len(self.rules), self._path)
            except (OSError, errors.ConfigError) as error:
                log.error(
                    "policy file %s not taken, keeping the previous rules: %s", self._path, error
                )
        return self.rules


async def refusal(
    runner: spawning.GitRunner,
    *,
    repository: pathlib.Path,
    quarantine: pathlib.Path | None,
    changes: Iterable[transactions.Change],
    rules: tuple[Rule, ...],
) -> str | None:
    """Why the push breaks a rule (the first ref that does), or None."""
    if not rules:
        return None
    for change in changes:
        covering = [rule for rule in rules if rule.covers(change.ref)]
        if not covering or change.old == transactions.ZERO_ID:
            continue  # creating a protected ref is allowed
        if change.deletes:
            if not all(rule.allow_deletion for rule in covering):
                return f"protected ref {change.ref}: deletion is not allowed"
            continue
        if all(rule.allow_force_push for rule in covering):
            continue
        if not await _fast_forward(runner, repository, quarantine, change):
            return f"protected ref {change.ref}: force push (not a fast-forward) is not allowed"
    return None


async def _fast_forward(
    runner: spawning.GitRunner,
    repository: pathlib.Path,
    quarantine: pathlib.Path | None,
    change: transactions.Change,
) -> bool:
    env = {"GIT_DIR": str(repository), **_objects(repository, quarantine)}
    try:
        await runner.run(["merge-base", "--is-ancestor", change.old, change.new], env=env)
    except errors.GitFailed as error:
        if error.returncode == 1:
            return False
        raise
    return True


def _objects(repository: pathlib.Path, quarantine: pathlib.Path | None) -> Mapping[str, str]:
    """The push's objects are still in git's quarantine: look there, then in the repository."""
    if quarantine is None:
        return {}
    return {
        "GIT_OBJECT_DIRECTORY": str(quarantine),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(repository / "objects"),
    }
