"""Frozen records of what a peer's control API answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CreatedRoom:
    """A room the peer created: its ID, version and the IDs of its initial events."""

    room_id: str
    room_version: str
    event_ids: tuple[str, ...]


@dataclass(frozen=True)
class JoinedRoom:
    """A room the peer joined, and the ID of its join event."""

    room_id: str
    room_version: str
    event_id: str


@dataclass(frozen=True)
class RoomEvent:
    """A PDU a room gained (ours or received), with the peer's verdict on it.

    ``outcome`` is ``"accepted"``, ``"rejected"`` or ``"soft_failed"``; ``reason`` says
    why when not accepted; ``origin`` is the server it came from; ``position`` its place in
    the room's feed.
    """

    event_id: str
    pdu: dict[str, Any]
    origin: str | None
    outcome: str
    reason: str | None
    position: int

    @property
    def type(self) -> str:
        """The event's ``type``."""
        return str(self.pdu.get("type"))

    @property
    def sender(self) -> str:
        """The event's ``sender``."""
        return str(self.pdu.get("sender"))

    @property
    def content(self) -> dict[str, Any]:
        """The event's ``content`` (an empty dict when absent)."""
        content = self.pdu.get("content")
        return content if isinstance(content, dict) else {}

    @property
    def state_key(self) -> str | None:
        """The event's ``state_key`` (None for a message event)."""
        value = self.pdu.get("state_key")
        return value if isinstance(value, str) else None

    def summary(self) -> str:
        """One line for a failure message."""
        body = self.content.get("body") or self.content.get("membership")
        extra = f" {body!r}" if body is not None else ""
        verdict = "" if self.outcome == "accepted" else f" [{self.outcome}: {self.reason}]"
        return f"{self.event_id} {self.type} from {self.sender}{extra}{verdict}"


@dataclass(frozen=True)
class ReceivedEdu:
    """An EDU the peer received."""

    origin: str
    edu_type: str
    content: dict[str, Any]
    position: int

    def summary(self) -> str:
        """One line for a failure message."""
        return f"{self.edu_type} from {self.origin}"


@dataclass(frozen=True)
class FederationAnswer:
    """The answer to a signed federation request the peer made: status and JSON body."""

    status: int
    body: Any
