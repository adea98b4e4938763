"""What a replica reports to its controller (``GET /admin/status``), as one typed value that
both sides share: the replica builds it, the operator and ``gitquorum local`` decide on it.

The JSON form is part of the wire format (``versions``): its keys are pinned by a golden file
in the tests. Reading is strict about the fields decisions rest on (term, position, state...)
and lenient about the rest, which a replica of an older release may not send during a rolling
update (``protocol``, ``inTransition``).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

from gitquorum.replication import decisions, versions

LEADER = "Leader"
FOLLOWER = "Follower"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The wire-format versions a replica speaks and accepts."""

    speaks: int
    oldest: int
    newest: int

    def accepts(self, version: int) -> bool:
        return self.oldest <= version <= self.newest


@dataclasses.dataclass(frozen=True)
class Run:
    """One maintenance, scrub or repair: when it ended, what came of it, how long it took."""

    at: float
    """Wall-clock seconds since the epoch when it ended."""
    outcome: str
    """``ok``, ``damaged`` (a scrub found damage), ``failed`` or ``cancelled``."""
    seconds: float
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "outcome": self.outcome,
            "seconds": self.seconds,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, value: object) -> "Run | None":
        if not isinstance(value, Mapping):
            return None
        try:
            return cls(
                at=float(value["at"]),
                outcome=str(value["outcome"]),
                seconds=float(value["seconds"]),
                detail=str(value.get("detail") or ""),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclasses.dataclass(frozen=True)
class Upkeep:
    """A replica's maintenance and integrity (``replication/upkeep.py``): the figures of its
    repository, its last runs, what is due, and whether it found damage."""

    packs: int = 0
    cruft_packs: int = 0
    loose_objects: int = 0
    size_bytes: int = 0
    """Packs and loose objects on disk."""
    damaged: bool = False
    """A scrub found damage that no repair has verified away yet: no reads are served."""
    damage: str = ""
    due: tuple[str, ...] = ()
    """Work waiting for its turn (or for a permit): ``maintenance``, ``scrub``."""
    running: str = ""
    permits: bool = False
    """Whether this replica works only under its controller's permit."""
    permit_seconds: float = 0.0
    """How long the current permit lasts."""
    last_maintenance: Run | None = None
    last_scrub: Run | None = None
    last_repair: Run | None = None
    last_full_repack: float | None = None
    turns: Mapping[str, Any] | None = None
    """The leader's book of turns (holder, waiting)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "packs": self.packs,
            "cruftPacks": self.cruft_packs,
            "looseObjects": self.loose_objects,
            "sizeBytes": self.size_bytes,
            "damaged": self.damaged,
            "damage": self.damage,
            "due": list(self.due),
            "running": self.running,
            "permits": self.permits,
            "permitSeconds": self.permit_seconds,
            "lastMaintenance": None
            if self.last_maintenance is None
            else self.last_maintenance.to_json(),
            "lastScrub": None if self.last_scrub is None else self.last_scrub.to_json(),
            "lastRepair": None if self.last_repair is None else self.last_repair.to_json(),
            "lastFullRepack": self.last_full_repack,
            **({} if self.turns is None else {"turns": dict(self.turns)}),
        }

    @classmethod
    def from_json(cls, value: object) -> "Upkeep | None":
        """Lenient: a replica of another release may send more, less or nothing."""
        if not isinstance(value, Mapping):
            return None
        due = value.get("due")
        full = value.get("lastFullRepack")
        turns = value.get("turns")
        return cls(
            packs=_count(value.get("packs")),
            cruft_packs=_count(value.get("cruftPacks")),
            loose_objects=_count(value.get("looseObjects")),
            size_bytes=_count(value.get("sizeBytes")),
            damaged=value.get("damaged") is True,
            damage=str(value.get("damage") or ""),
            due=tuple(str(item) for item in due) if isinstance(due, list) else (),
            running=str(value.get("running") or ""),
            permits=value.get("permits") is True,
            permit_seconds=_seconds(value.get("permitSeconds")),
            last_maintenance=Run.from_json(value.get("lastMaintenance")),
            last_scrub=Run.from_json(value.get("lastScrub")),
            last_repair=Run.from_json(value.get("lastRepair")),
            last_full_repack=None if full is None else _seconds(full),
            turns=turns if isinstance(turns, Mapping) else None,
        )


@dataclasses.dataclass(frozen=True)
class ReplicaStatus:
    """One replica's own account of itself."""

    replica: str
    role: str
    """``Leader`` or ``Follower``."""
    term: int
    """The newest term this replica has seen (stored before it obeys it)."""
    leader: str | None
    """That term's leader, as far as this replica knows."""
    configured_term: int | None
    """The term of the configuration its controller last gave it (None: none yet)."""
    configuration: Mapping[str, Any] | None
    """That configuration as given, so that a controller can tell a stale one from its own."""
    generation: int
    checksum: str
    transaction: str
    position: decisions.Position
    eligible: bool
    """Whether it may lead: not in the middle of a rebuild."""
    readable: bool
    writable: bool
    state: str
    """InSync, Behind, Diverged, Rebuilding, Promoting."""
    lag: int = 0
    """Generations behind the leader, as the last heartbeat told."""
    in_transition: bool = False
    """A leader change is under way here: requests are held rather than refused."""
    prepared: Mapping[str, Any] | None = None
    copy: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    refs: int = 0
    protocol: Protocol | None = None
    """None for a replica of a release before versions: it speaks version 1 only."""
    leading: Mapping[str, Any] | None = None
    """The leader's view of its followers (reachable, generation, in sync)."""
    upkeep: Upkeep | None = None
    """Maintenance and integrity; None from a replica of a release before them."""
    notifications: Mapping[str, Any] | None = None
    """Push notifications (``notifying``): per webhook, the generation delivered, pending
    pushes, failures, last error and success; None from a replica without webhooks."""

    @property
    def leads(self) -> bool:
        return self.role == LEADER

    def understands(self, version: int) -> bool:
        if self.protocol is None:
            return version == versions.UNVERSIONED
        return self.protocol.accepts(version)

    def to_json(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "role": self.role,
            "term": self.term,
            "leader": self.leader,
            "configuredTerm": self.configured_term,
            "configuration": None if self.configuration is None else dict(self.configuration),
            "generation": self.generation,
            "checksum": self.checksum,
            "transaction": self.transaction,
            "position": [self.position.term, self.position.generation, self.position.seq],
            "prepared": None if self.prepared is None else dict(self.prepared),
            "eligible": self.eligible,
            "readable": self.readable,
            "writable": self.writable,
            "inTransition": self.in_transition,
            "state": self.state,
            "lag": self.lag,
            "copy": dict(self.copy),
            "refs": self.refs,
            "protocol": None if self.protocol is None else dataclasses.asdict(self.protocol),
            **({} if self.leading is None else {"leading": dict(self.leading)}),
            **({} if self.upkeep is None else {"upkeep": self.upkeep.to_json()}),
            **({} if self.notifications is None else {"notifications": dict(self.notifications)}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ReplicaStatus":
        """Raises ValueError, naming the field, for an answer decisions cannot rest on."""
        position = data.get("position")
        if not isinstance(position, list) or len(position) != 3:
            raise ValueError(f"position must be [term, generation, seq], not {position!r}")
        configured = data.get("configuredTerm")
        return cls(
            replica=_text(data, "replica"),
            role=_choice(data, "role", (LEADER, FOLLOWER)),
            term=_integer(data, "term"),
            leader=_optional_text(data, "leader"),
            configured_term=None if configured is None else _integer(data, "configuredTerm"),
            configuration=_optional_mapping(data, "configuration"),
            generation=_integer(data, "generation"),
            checksum=_text(data, "checksum"),
            transaction=str(data.get("transaction") or ""),
            position=decisions.Position(*(_whole(v, "position") for v in position)),
            eligible=_flag(data, "eligible"),
            readable=_flag(data, "readable"),
            writable=_flag(data, "writable"),
            state=_text(data, "state"),
            lag=int(data.get("lag") or 0),
            in_transition=bool(data.get("inTransition", False)),
            prepared=_optional_mapping(data, "prepared"),
            copy=_optional_mapping(data, "copy") or {},
            refs=int(data.get("refs") or 0),
            protocol=_protocol(data.get("protocol")),
            leading=_optional_mapping(data, "leading"),
            upkeep=Upkeep.from_json(data.get("upkeep")),
            notifications=_lenient_mapping(data.get("notifications")),
        )


def _lenient_mapping(value: object) -> Mapping[str, Any] | None:
    """Only shown, never decided on: anything but an object reads as absent."""
    return value if isinstance(value, Mapping) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return 0.0
    return float(value)


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must hold non-negative integers, not {value!r}")
    return value


def _integer(data: Mapping[str, Any], key: str) -> int:
    return _whole(data.get(key), key)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _text(data, key)


def _choice(data: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = _text(data, key)
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r}")
    return value


def _optional_mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = data.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise ValueError(f"{key} must be an object, not {value!r}")
    return value


def _protocol(value: object) -> Protocol | None:
    if not isinstance(value, Mapping):
        return None
    try:
        return Protocol(int(value["speaks"]), int(value["oldest"]), int(value["newest"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"protocol must name speaks, oldest and newest: {value!r}") from error
