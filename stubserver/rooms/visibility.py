"""What another server may see of a room's events, as Synapse's
``filter_events_for_server`` decides it (spec: Client-Server API "History visibility",
"Redactions"; Server-Server API "Retrieving events": servers SHOULD check history
visibility before answering).

Synapse's rule (``synapse/visibility.py``, the check itself in its Rust core), as
``backfill``, ``/event`` and ``get_missing_events`` apply it with ``redact=True``:

* the ``m.room.history_visibility`` in force **at the event** (the state after it, so a
  history visibility event is judged by its own setting; an outlier, whose state is
  unknown, counts as ``shared``) decides;
* ``shared``, ``world_readable`` (and any other value): the server sees the event;
* ``invited``: it sees the event when one of its users is joined or invited at the event;
  ``joined``: when one of its users is joined at the event;
* an event it may not see is not left out but served **redacted** (the room version's
  redaction algorithm, ``stubserver.rooms.redaction``);
* an event an accepted redaction takes effect on (``Room.is_redacted``) is served
  redacted to everyone, whatever the endpoint (Synapse reads events redacted by default:
  ``state``, ``event_auth`` and ``send_join`` answers too).

Not done here, as in Synapse: ``state`` and ``state_ids`` are not filtered by history
visibility (a server joining or filling a gap needs the whole state to authorise
events). Synapse also redacts the events of users who asked to be erased; this server
has no erasure, so its only hidden content is that of redacted events and of events a
server may not see, and neither is ever served in full.
"""

from __future__ import annotations

from typing import Any, Final

from stubserver.rooms.event import Event
from stubserver.rooms.redaction import redact
from stubserver.rooms.room import Room

HISTORY_VISIBILITY_KEY: Final = ("m.room.history_visibility", "")


def history_visibility_at(room: Room, event_id: str) -> str:
    """The history visibility in force at ``event_id`` (``"shared"`` when none is set,
    or when the event is an outlier)."""
    if not room.has_state_at(event_id):
        return "shared"
    setting_id = room.state_at_key(event_id, HISTORY_VISIBILITY_KEY)
    setting = room.get_event(setting_id) if setting_id is not None else None
    value = setting.content.get("history_visibility") if setting is not None else None
    return value if isinstance(value, str) else "shared"


def server_may_see(room: Room, event_id: str, server: str) -> bool:
    """Whether ``server`` may see ``event_id`` in full (the rule in the module doc)."""
    visibility = history_visibility_at(room, event_id)
    if visibility not in ("invited", "joined"):
        return True
    for membership in room.server_memberships_at(event_id, server):
        if membership == "join" or (membership == "invite" and visibility == "invited"):
            return True
    return False


def redacted_pdu(room: Room, event: Event) -> dict[str, Any]:
    """The PDU of ``event`` redacted, or in full when no redaction takes effect on it:
    what every answer serves."""
    if room.is_redacted(event.event_id):
        return redact(event.pdu, event.room_version)
    return dict(event.pdu)


def pdu_for_server(room: Room, event: Event, server: str) -> dict[str, Any]:
    """The PDU of ``event`` as ``server`` may see it: in full, or redacted when it may
    not see it or a redaction takes effect on it."""
    if not server_may_see(room, event.event_id, server):
        return redact(event.pdu, event.room_version)
    return redacted_pdu(room, event)
