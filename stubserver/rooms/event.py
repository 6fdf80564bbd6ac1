"""One PDU, as a frozen record over its JSON (spec: Server-Server API, "PDUs").

An :class:`Event` keeps the PDU exactly as built or received (``pdu``, never with an
``event_id`` key: v3+ events carry none, the receiver computes it) beside the event ID and
the room version it was checked under. Accessors read the fields the algorithms need; the
format rules that make those accessors safe are applied before an Event is made (see
``stubserver.rooms.format``), so they do not re-validate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stubserver.rooms.versions import RoomVersion


@dataclass(frozen=True)
class Event:
    """A PDU with its computed event ID and room version."""

    event_id: str
    room_version: RoomVersion
    pdu: Mapping[str, Any]
    # The room the event belongs to: the PDU's room_id, or for a v12 create event (which
    # has none) "!" + its event ID without the sigil.
    room_id: str

    @property
    def type(self) -> str:
        return str(self.pdu["type"])

    @property
    def state_key(self) -> str | None:
        value = self.pdu.get("state_key")
        return value if isinstance(value, str) else None

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @property
    def sender(self) -> str:
        return str(self.pdu["sender"])

    @property
    def content(self) -> Mapping[str, Any]:
        value = self.pdu.get("content")
        return value if isinstance(value, dict) else {}

    @property
    def prev_event_ids(self) -> tuple[str, ...]:
        return tuple(self.pdu.get("prev_events", ()))

    @property
    def auth_event_ids(self) -> tuple[str, ...]:
        """The auth_events as listed in the PDU (in v12 the create event is implied, not
        listed; callers that need it add ``"$" + room_id[1:]``)."""
        return tuple(self.pdu.get("auth_events", ()))

    @property
    def depth(self) -> int:
        return int(self.pdu["depth"])

    @property
    def origin_server_ts(self) -> int:
        return int(self.pdu["origin_server_ts"])

    @property
    def redacts(self) -> str | None:
        """The redacted event ID: top-level in v10, in ``content`` from v11 on."""
        value = self.pdu.get("redacts")
        if value is None:
            value = self.content.get("redacts")
        return value if isinstance(value, str) else None

    @property
    def membership(self) -> str | None:
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    def state_tuple(self) -> tuple[str, str]:
        """The (type, state_key) this state event sets; only for state events."""
        if self.state_key is None:
            raise ValueError(f"{self.event_id} is not a state event")
        return (self.type, self.state_key)
