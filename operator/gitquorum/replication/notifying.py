"""Push notifications: the leader tells webhooks (Flux, Argo CD...) about acknowledged pushes.

The webhooks come from a JSON file (``--notifications-file``; the operator writes it from
the repository's spec), reloaded when it changes, the last good version kept when a new one
does not parse; an absent file means no webhooks:

    {"repository": {"fullName": "team/app", "url": "https://git.example/team/app.git"},
     "webhooks": [{"name": "flux", "url": "http://receiver/hook/...",
                   "format": "generic-hmac", "secret": "..."}]}

Delivery is at least once, across leader changes and restarts, because what is pending is
derived from durable state, never kept only in memory. Every replica stores ``notified``, the
generation up to which every webhook was sent every push (``DIR/notifications.json``, with
each webhook's own generation on a replica that led). The leader advances it after the
deliveries and carries it in its heartbeats; a follower keeps the largest it was told. A new
leader sends every webhook what lies above the generation it holds for it, up to its applied
generation: the pushes it acknowledged itself are in its journal (memory, bounded) and are
sent one by one; for generations it does not know the updates of, it sends one *catch-up*
with the current refs. So a push is told twice rather than never; every notification has a
stable id (``<repository>-<generation>``) a receiver can deduplicate on.

One sender task per webhook, in generation order, woken by each acknowledgement (not polled):
a webhook that fails is retried with exponential back-off, for ever while this replica leads,
and holds up neither pushes nor the other webhooks.
"""

import asyncio
import collections
import dataclasses
import json
import logging
import os
import pathlib
import re
import time
import urllib.parse
from collections.abc import Callable, Container, Mapping
from typing import Any

from gitquorum import errors
from gitquorum.replication import store, transactions, webhooks
from gitquorum.server import metrics

log = logging.getLogger(__name__)

# A few webhooks per repository: the bounds keep a mistaken file from costing memory, and
# each webhook costs a task and a request per push.
MAX_FILE_BYTES = 64 * 1024
MAX_WEBHOOKS = 16
# A name labels metrics and keys the record: short and plain, like a DNS label.
MAX_NAME = 63
# Longer URLs are refused by most servers anyway; the bound keeps the file's error readable.
MAX_URL = 2048
# A secret is an HMAC key; a longer one adds nothing (HMAC hashes keys above a block).
MAX_SECRET = 1024
MAX_FULL_NAME = 256

RECORD_FILE = "notifications.json"
RECORD_FORMAT = 1
# Generations whose updates the leader remembers; a webhook further behind gets a catch-up.
MAX_JOURNAL = 4096
# A catch-up lists the current branches and tags, at most this many (one request each in
# the github format): a repository with more gets its first ones, and a log line says so.
MAX_CATCH_UP_REFS = 1000
CATCH_UP_PREFIXES = ("refs/heads/", "refs/tags/")

FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 60.0
RELOAD_SECONDS = 1.0
"""How often a leader looks at the file again (and at a new leader's readiness, faster)."""

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_FIELDS = frozenset({"name", "url", "format", "secret"})


@dataclasses.dataclass(frozen=True)
class Webhook:
    """One entry of ``webhooks``."""

    name: str
    url: str
    format: str
    secret: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class Settings:
    """A notifications file, parsed."""

    webhooks: tuple[Webhook, ...] = ()
    full_name: str = ""
    """How receivers name the repository (GitHub's ``full_name``); default: its name."""
    url: str = ""
    """The clone URL receivers know the repository by (Argo CD matches applications on it)."""


# -- the file ---------------------------------------------------------------------------------


def parse(data: bytes) -> Settings:
    """The settings of a notifications file; ConfigError saying what is wrong."""
    if len(data) > MAX_FILE_BYTES:
        raise errors.ConfigError(f"notifications file above {MAX_FILE_BYTES} bytes")
    try:
        document = json.loads(data or b"{}")
    except ValueError as error:
        raise errors.ConfigError(f"notifications file is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise errors.ConfigError("notifications file must hold a JSON object")
    unknown = set(document) - {"webhooks", "repository"}
    if unknown:
        raise errors.ConfigError(f"notifications file: unknown field(s) {sorted(unknown)}")
    items = document.get("webhooks", [])
    if not isinstance(items, list) or len(items) > MAX_WEBHOOKS:
        raise errors.ConfigError(f"webhooks must be a list of at most {MAX_WEBHOOKS} webhooks")
    hooks = tuple(_webhook(item, index) for index, item in enumerate(items))
    names = [hook.name for hook in hooks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise errors.ConfigError(f"webhooks: name(s) {duplicates} given more than once")
    full_name, url = _repository(document.get("repository", {}))
    return Settings(hooks, full_name=full_name, url=url)


def _webhook(item: object, index: int) -> Webhook:
    where = f"webhooks[{index}]"
    if not isinstance(item, dict):
        raise errors.ConfigError(f"{where} must be an object")
    unknown = set(item) - _FIELDS
    if unknown:
        raise errors.ConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
    name = item.get("name")
    if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise errors.ConfigError(
            f"{where}.name must be lower-case letters, digits and '-', at most {MAX_NAME}"
        )
    where = f"webhook {name}"
    url = _url(item.get("url"), f"{where}: url")
    format = item.get("format")
    if format not in webhooks.FORMATS:
        raise errors.ConfigError(f"{where}: format must be one of {', '.join(webhooks.FORMATS)}")
    secret = item.get("secret")
    if not isinstance(secret, str) or not 0 < len(secret) <= MAX_SECRET:
        raise errors.ConfigError(f"{where}: secret must be a string of 1 to {MAX_SECRET} chars")
    return Webhook(name=name, url=url, format=str(format), secret=secret)


def _url(value: object, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_URL:
        raise errors.ConfigError(f"{where} must be a URL of at most {MAX_URL} characters")
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as error:
        raise errors.ConfigError(f"{where} is not a URL: {error}") from error
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.ConfigError(f"{where} must be http:// or https:// with a host")
    return value


def _repository(value: object) -> tuple[str, str]:
    if not isinstance(value, dict) or set(value) - {"fullName", "url"}:
        raise errors.ConfigError("repository must be an object with fullName and url")
    full_name = value.get("fullName", "")
    if not isinstance(full_name, str) or len(full_name) > MAX_FULL_NAME:
        raise errors.ConfigError(f"repository.fullName must be text of at most {MAX_FULL_NAME}")
    url = value.get("url")
    return full_name, "" if url is None else _url(url, "repository.url")


class NotificationsFile:
    """The settings of ``path``, read again when the file changes."""

    def __init__(self, path: pathlib.Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self.settings = Settings()

    def current(self) -> Settings:
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            return self.settings
        # The inode too: a Secret volume replaces the file by renaming a new one into place.
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.settings = parse(self._path.read_bytes())
                log.info(
                    "notifications: %s webhook(s) from %s", len(self.settings.webhooks), self._path
                )
            except (OSError, errors.ConfigError) as error:
                log.error(
                    "notifications file %s not taken, keeping the previous webhooks: %s",
                    self._path,
                    error,
                )
        return self.settings


# -- the record -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Record:
    """What this replica knows was delivered, durably."""

    notified: int = 0
    """Every webhook was sent every push up to this generation."""
    webhooks: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Each webhook's own generation, as this replica delivered it while it led."""

    def to_json(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "notified": self.notified, "webhooks": dict(self.webhooks)}

    @classmethod
    def from_json(cls, data: object) -> "Record":
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError("not a notifications record of a known format")
        hooks = data.get("webhooks")
        if not isinstance(hooks, dict):
            raise ValueError("webhooks must be an object")
        return cls(int(data["notified"]), {str(k): int(v) for k, v in hooks.items()})


class RecordFile:
    """The record on disk (rewritten whole with fsync and rename); its methods block."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def load(self) -> Record | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return Record.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as error:
            raise errors.ReplicationError(f"{self.path} is unreadable: {error}") from error

    def save(self, record: Record) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w") as output:
            json.dump(record.to_json(), output)
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, self.path)
        transactions.fsync_directory(self.path.parent)


# -- decisions (pure) -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
    """The next notification a webhook is owed."""

    generation: int
    catch_up: bool = False
    since: int = 0
    """A catch-up covers the generations above this one, up to ``generation``."""


def next_item(*, delivered: int, acknowledged: int, known: Container[int]) -> Item | None:
    """What to send a webhook that was sent everything up to ``delivered``: the next push if
    its updates are known, else one catch-up up to ``acknowledged`` (the current refs)."""
    if delivered >= acknowledged:
        return None
    if delivered + 1 in known:
        return Item(delivered + 1)
    return Item(acknowledged, catch_up=True, since=delivered)


def retry_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row: 0.5, 1, 2, ... up to 60."""
    if failures <= 0:
        return 0.0
    return min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2.0 ** min(failures - 1, 16))


def catch_up_updates(refs: Mapping[str, str]) -> tuple[webhooks.Update, ...]:
    """The current branches and tags, ``before`` unknown."""
    names = sorted(ref for ref in refs if ref.startswith(CATCH_UP_PREFIXES))
    return tuple(webhooks.Update(ref, None, refs[ref]) for ref in names[:MAX_CATCH_UP_REFS])


# -- the notifier -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Push:
    """An acknowledged push, as the journal keeps it."""

    changes: tuple[transactions.Change, ...]
    at: float
    """Wall-clock seconds when it was acknowledged."""
    monotonic: float


@dataclasses.dataclass
class Sender:
    """One webhook while this replica leads."""

    webhook: Webhook
    delivered: int
    wake: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    task: "asyncio.Task[None] | None" = None
    consecutive_failures: int = 0
    last_error: str = ""
    last_success: float | None = None
    last_latency: float | None = None


class Notifier:
    """The webhooks of one replica: senders while it leads, the record always."""

    def __init__(
        self,
        *,
        repository: str,
        local: store.Store,
        path: pathlib.Path,
        poster: webhooks.Poster,
    ) -> None:
        self.repository = repository
        self._store = local
        self._file = NotificationsFile(path)
        self._records = RecordFile(local.data / RECORD_FILE)
        self._poster = poster
        self.record = Record()
        self.journal: collections.OrderedDict[int, Push] = collections.OrderedDict()
        self.acknowledged = 0
        self.senders: dict[str, Sender] = {}
        self._leading: asyncio.Task[None] | None = None
        self._saving = asyncio.Lock()
        self._saver: asyncio.Task[None] | None = None
        self.deliveries = metrics.Counter(
            "gitquorum_webhook_deliveries_total",
            "Notifications delivered (answered 2xx), per webhook.",
            labels=("webhook",),
        )
        self.failures = metrics.Counter(
            "gitquorum_webhook_failures_total",
            "Notification attempts that failed (unreachable, timeout, not 2xx), per webhook.",
            labels=("webhook",),
        )
        self.latency = metrics.Histogram(
            "gitquorum_webhook_latency_seconds",
            "Seconds from a push's acknowledgement to its delivery, per webhook.",
            labels=("webhook",),
        )

    async def open(self) -> None:
        """Loads the record; a replica without one starts notifying from where it is."""
        record = await asyncio.to_thread(self._records.load)
        if record is None:
            record = Record(notified=self._store.state.generation)
            await asyncio.to_thread(self._records.save, record)
        self.record = record
        self._file.current()

    def metrics(self) -> list[metrics.Metric]:
        return [self.deliveries, self.failures, self.latency]

    # -- what the replication protocol calls -------------------------------------------------------

    def acknowledged_push(self, transaction: transactions.Transaction) -> None:
        """A push was acknowledged: remember it and wake every sender."""
        self.journal[transaction.generation] = Push(
            transaction.changes, at=time.time(), monotonic=time.monotonic()
        )
        while len(self.journal) > MAX_JOURNAL:
            self.journal.popitem(last=False)
        self.acknowledged = max(self.acknowledged, transaction.generation)
        for sender in self.senders.values():
            sender.wake.set()

    def heartbeat_value(self) -> int:
        """What the leader tells its followers: every push up to it was delivered."""
        return self.record.notified

    def observe(self, notified: int) -> None:
        """A follower heard from its leader; keeps the largest value, saved in the background
        (a value lost in a crash costs duplicates, never a missed push)."""
        if notified <= self.record.notified:
            return
        self.record = dataclasses.replace(self.record, notified=notified)
        if self._saver is None or self._saver.done():
            self._saver = asyncio.ensure_future(self._save())

    # -- leading -----------------------------------------------------------------------------------

    def lead(self, ready: Callable[[], bool]) -> None:
        """Starts notifying once ``ready`` (the new leader settled what it held prepared)."""
        self.stop_leading()
        self._leading = asyncio.ensure_future(self._lead(ready))

    def stop_leading(self) -> None:
        if self._leading is not None:
            self._leading.cancel()
            self._leading = None
        for sender in self.senders.values():
            if sender.task is not None:
                sender.task.cancel()
        self.senders.clear()

    async def close(self) -> None:
        self.stop_leading()
        if self._saver is not None:
            await asyncio.gather(self._saver, return_exceptions=True)
        await self._poster.close()

    async def _lead(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await asyncio.sleep(RELOAD_SECONDS / 20)
        self.acknowledged = max(self.acknowledged, self._store.state.generation)
        while True:
            settings = self._file.current()
            self._reconcile(settings)
            if not settings.webhooks and self.acknowledged > self.record.notified:
                # Nobody to tell: a webhook added later starts from here, not from history.
                self.record = Record(notified=self.acknowledged)
                await self._save()
            await asyncio.sleep(RELOAD_SECONDS)

    def _reconcile(self, settings: Settings) -> None:
        """Senders for the webhooks of the file: new ones started, changed ones restarted."""
        wanted = {webhook.name: webhook for webhook in settings.webhooks}
        for name in list(self.senders):
            sender = self.senders[name]
            if wanted.get(name) != sender.webhook:
                if sender.task is not None:
                    sender.task.cancel()
                    sender.task = None
                if name not in wanted:
                    del self.senders[name]
                    log.info("repository %s: webhook %s removed", self.repository, name)
        for name, webhook in wanted.items():
            if name not in self.senders:
                start = max(self.record.webhooks.get(name, 0), self.record.notified)
                self.senders[name] = Sender(webhook, delivered=start)
            current = self.senders[name]
            current.webhook = webhook
            if current.task is None or current.task.done():
                current.task = asyncio.ensure_future(self._send(current))

    async def _send(self, sender: Sender) -> None:
        name = sender.webhook.name
        while True:
            sender.wake.clear()
            item = next_item(
                delivered=sender.delivered, acknowledged=self.acknowledged, known=self.journal
            )
            if item is None:
                await sender.wake.wait()
                continue
            event, push = self._event(item)
            try:
                for request in webhooks.requests(
                    event, format=sender.webhook.format, secret=sender.webhook.secret
                ):
                    await self._poster.post(sender.webhook.url, request)
            except webhooks.DeliveryError as error:
                sender.consecutive_failures += 1
                sender.last_error = str(error)
                self.failures.inc((name,))
                delay = retry_delay(sender.consecutive_failures)
                log.warning(
                    "repository %s: webhook %s failed for %s (%s in a row), again in %.1f s: %s",
                    self.repository,
                    name,
                    event.id,
                    sender.consecutive_failures,
                    delay,
                    error,
                )
                await asyncio.sleep(delay)
                continue
            sender.consecutive_failures = 0
            sender.last_success = time.time()
            if push is not None:
                sender.last_latency = time.monotonic() - push.monotonic
                self.latency.observe((name,), sender.last_latency)
            self.deliveries.inc((name,))
            sender.delivered = item.generation
            await self._delivered()

    def _event(self, item: Item) -> tuple[webhooks.Event, Push | None]:
        """The notification for ``item``; reads the journal or the refs, with no await."""
        push = None if item.catch_up else self.journal.get(item.generation)
        if push is not None:
            updates = tuple(webhooks.Update(c.ref, c.old, c.new) for c in push.changes)
        else:
            updates = catch_up_updates(self._store.refs)
            if len(updates) == MAX_CATCH_UP_REFS:
                log.warning(
                    "repository %s: a catch-up names only the first %s branches and tags",
                    self.repository,
                    MAX_CATCH_UP_REFS,
                )
        settings = self._file.settings
        event = webhooks.Event(
            repository=self.repository,
            generation=item.generation,
            updates=updates,
            catch_up=push is None,
            since=item.since if item.catch_up else item.generation - 1,
            full_name=settings.full_name,
            url=settings.url,
            default_branch=self._store.head.removeprefix("refs/heads/"),
            acknowledged_at=None if push is None else push.at,
        )
        return event, push

    async def _delivered(self) -> None:
        """Records the senders' progress: each webhook's, and the generation all reached."""
        reached = min(sender.delivered for sender in self.senders.values())
        self.record = Record(
            notified=max(self.record.notified, reached),
            webhooks={name: sender.delivered for name, sender in self.senders.items()},
        )
        await self._save()

    async def _save(self) -> None:
        async with self._saving:
            await asyncio.to_thread(self._records.save, self.record)

    # -- status ------------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        leading = self._leading is not None
        hooks: dict[str, Any] = {}
        for webhook in self._file.current().webhooks:
            found = self.senders.get(webhook.name)
            delivered = (
                found.delivered
                if found is not None
                else max(self.record.webhooks.get(webhook.name, 0), self.record.notified)
            )
            hooks[webhook.name] = {
                "format": webhook.format,
                "delivered": delivered,
                "pending": max(0, self.acknowledged - delivered) if leading else 0,
                "failures": self.failures.values.get((webhook.name,), 0.0),
                "consecutiveFailures": 0 if found is None else found.consecutive_failures,
                "deliveries": self.deliveries.values.get((webhook.name,), 0.0),
                "lastError": "" if found is None else found.last_error,
                "lastSuccess": None if found is None else found.last_success,
                "lastLatencySeconds": None if found is None else found.last_latency,
            }
        return {
            "sending": leading,
            "notified": self.record.notified,
            "acknowledged": self.acknowledged if leading else None,
            "webhooks": hooks,
        }
