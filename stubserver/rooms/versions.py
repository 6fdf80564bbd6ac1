"""The room versions we take part in, and the rules that differ between them.

Spec: "Room Versions" (`content/rooms/v10.md`, `v11.md`, `v12.md`). Only the flags that
change an algorithm we implement are recorded; each names the spec rule it switches.
Version 12 is Synapse 1.163.2's default (its ``DEFAULT_ROOM_VERSION``), so it is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class RedactionRules(Enum):
    """Which redaction algorithm applies: v9's (used by v10) or v11's (v11 and v12)."""

    V9 = "v9"
    V11 = "v11"


@dataclass(frozen=True)
class RoomVersion:
    """One room version's identifier and the algorithm switches that follow from it."""

    identifier: str
    redaction_rules: RedactionRules
    # v11+: the create event has no `creator`; the creator is its `sender`.
    implicit_room_creator: bool
    # v12: room ID = "!" + the create event's reference hash; the create event has no
    # room_id and is never listed in auth_events (it is implied by room_id).
    room_id_is_create_hash: bool
    # v12: creators (sender + additional_creators) have infinite power and must not
    # appear in power_levels.users.
    creators_have_infinite_power: bool
    # State resolution: "v2" for v10/v11, "v2.1" (MSC4297) for v12.
    state_resolution: str
    # v11+: Synapse enforces the byte limits on the event's fields strictly.
    strict_event_byte_limits: bool

    @property
    def redacts_in_content(self) -> bool:
        """v11+: an ``m.room.redaction`` names its target in ``content.redacts``; v10 has
        a top-level ``redacts``. Changed together with the v11 redaction rules."""
        return self.redaction_rules is RedactionRules.V11


ROOM_VERSIONS: dict[str, RoomVersion] = {
    "10": RoomVersion("10", RedactionRules.V9, False, False, False, "v2", False),
    "11": RoomVersion("11", RedactionRules.V11, True, False, False, "v2", True),
    "12": RoomVersion("12", RedactionRules.V11, True, True, True, "v2.1", True),
}

DEFAULT_ROOM_VERSION = "12"
SUPPORTED_ROOM_VERSIONS: tuple[str, ...] = tuple(ROOM_VERSIONS)


class UnsupportedRoomVersion(Exception):
    """A room version we do not implement (answered as M_UNSUPPORTED_ROOM_VERSION or
    M_INCOMPATIBLE_ROOM_VERSION, depending on the endpoint)."""

    def __init__(self, identifier: object) -> None:
        super().__init__(f"room version {identifier!r} is not supported (we support 10, 11, 12)")
        self.identifier = identifier


def room_version(identifier: object) -> RoomVersion:
    """The :class:`RoomVersion` for ``identifier``; raise :class:`UnsupportedRoomVersion`."""
    if isinstance(identifier, str) and identifier in ROOM_VERSIONS:
        return ROOM_VERSIONS[identifier]
    raise UnsupportedRoomVersion(identifier)
