"""Versions of the replication and admin wire format, so that replicas of two releases can
serve together during a rolling update.

Every message a replica or the controller sends carries the version it speaks (the header
``Gitquorum-Protocol``); a replica accepts its own version and the previous one, and says
which ones in its status. A controller starts a rolling update only when every running
replica accepts the version that the new replicas will speak. A message without the header
comes from a release before versions existed, which spoke version 1. The golden messages in
``tests/unit/golden/`` pin the format of each version: a change to it shows in review.
"""

HEADER = "Gitquorum-Protocol"
CURRENT = 1
"""The version this release speaks."""
OLDEST_ACCEPTED = 1
"""The oldest version this release understands: its own and the one before."""
UNVERSIONED = 1
"""What a message without the header, or a status without ``protocol``, speaks."""


def accepts(version: int) -> bool:
    return OLDEST_ACCEPTED <= version <= CURRENT


def parse(value: str | None) -> int:
    """The version of a message from its header; ValueError when it is not a number."""
    if value is None:
        return UNVERSIONED
    if not value.isdigit() or len(value) > 6:  # a version is a small number, nothing else
        raise ValueError(f"{HEADER} must be a small integer, not {value[:20]!r}")
    return int(value)


def describe() -> dict[str, int]:
    """What a replica reports: the version it speaks and the range it accepts."""
    return {"speaks": CURRENT, "oldest": OLDEST_ACCEPTED, "newest": CURRENT}
