"""What a replica remembers of its upkeep across restarts (``DIR/upkeep.json``): its last
maintenance, scrub and repair, its last full repack, and the damage a scrub found until a
repair was verified, so that a replica that stops while damaged stays damaged, and repairs,
when it starts again. Rewritten whole (a temporary file, fsync, rename), like the state file.
"""

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from gitquorum.replication import reports, transactions

log = logging.getLogger(__name__)

FORMAT = 1
RECORD_FILE = "upkeep.json"


@dataclasses.dataclass(frozen=True)
class Record:
    """What the replica remembers of its upkeep across restarts."""

    last_maintenance: reports.Run | None = None
    last_scrub: reports.Run | None = None
    last_repair: reports.Run | None = None
    last_full_repack: float | None = None
    """Wall-clock seconds of the last full repack."""
    damage: str | None = None
    """What the last scrub found, until a repair was verified: the replica is damaged."""

    def to_json(self) -> dict[str, Any]:
        def run(value: reports.Run | None) -> dict[str, Any] | None:
            return None if value is None else value.to_json()

        return {
            "format": FORMAT,
            "lastMaintenance": run(self.last_maintenance),
            "lastScrub": run(self.last_scrub),
            "lastRepair": run(self.last_repair),
            "lastFullRepack": self.last_full_repack,
            "damage": self.damage,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Record":
        full = data.get("lastFullRepack")
        damage = data.get("damage")
        return cls(
            last_maintenance=reports.Run.from_json(data.get("lastMaintenance")),
            last_scrub=reports.Run.from_json(data.get("lastScrub")),
            last_repair=reports.Run.from_json(data.get("lastRepair")),
            last_full_repack=float(full) if isinstance(full, int | float) else None,
            damage=str(damage) if damage is not None else None,
        )


def load(path: pathlib.Path) -> Record:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return Record()
    except ValueError as error:
        # Only upkeep's memory is lost: the next scrub finds any damage again.
        log.warning("%s is unreadable (%s): starting afresh", path, error)
        return Record()
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return Record()
    return Record.from_json(data)


def save(path: pathlib.Path, record: Record) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as output:
        json.dump(record.to_json(), output)
        output.flush()
        os.fsync(output.fileno())
    os.replace(temporary, path)
    transactions.fsync_directory(path.parent)
