"""What a test peer serves otherwise than a homeserver would, by its driver's choice: events
of a room it refuses to serve, and planted PDUs (``stubserver.rooms.planted``) it serves
in ``get_missing_events`` answers. Complement's test peer does both with handlers of its
own (TestCorruptedAuthChain fails ``/event`` for one event, TestUnrejectRejectedEvents
withholds a prev event, TestOutboundFederationIgnoresMissingEventWithBadJSONForRoomVersion6
answers ``get_missing_events`` with a float).

A refused event stays in our room (our own checks and graph are unchanged); the read
endpoints (``stubserver.rooms.routes_read``) answer 404 ``M_NOT_FOUND`` for it as the
subject of ``/event``, ``/state``, ``/state_ids`` and ``/event_auth``, and leave its PDU
out of the ``/state``, ``/event_auth``, ``/backfill`` and ``get_missing_events`` answers
(``/state_ids`` still lists its ID, as Complement's peer does: the event exists, we only
will not hand it over). Both collections are bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from stubserver.rooms.planted import PlantedPdu

#: Most refused events one server keeps, over all its rooms.
MAX_REFUSED_EVENTS: Final = 10_000
#: Most planted PDUs one server keeps, over all its rooms.
MAX_PLANTED_PDUS: Final = 1_000


class TooManyOverrides(Exception):
    """A bound of :class:`ServingOverrides` is reached; ``str()`` says which."""


@dataclass
class ServingOverrides:
    """Refused event IDs and planted PDUs, by room ID."""

    max_refused: int = MAX_REFUSED_EVENTS
    max_planted: int = MAX_PLANTED_PDUS
    _refused: dict[str, set[str]] = field(init=False, default_factory=dict)
    _planted: dict[str, dict[str, PlantedPdu]] = field(init=False, default_factory=dict)

    def refuse(self, room_id: str, event_ids: Iterable[str]) -> None:
        """Refuse to serve ``event_ids`` of ``room_id`` from now on."""
        refused = self._refused.setdefault(room_id, set())
        added = set(event_ids) - refused
        total = sum(len(ids) for ids in self._refused.values())
        if total + len(added) > self.max_refused:
            raise TooManyOverrides(f"at most {self.max_refused} events may be refused")
        refused |= added

    def serve(self, room_id: str, event_ids: Iterable[str]) -> None:
        """Serve ``event_ids`` of ``room_id`` again."""
        refused = self._refused.get(room_id)
        if refused is not None:
            refused.difference_update(event_ids)
            if not refused:
                del self._refused[room_id]

    def refused(self, room_id: str) -> frozenset[str]:
        """The event IDs of ``room_id`` we refuse to serve."""
        return frozenset(self._refused.get(room_id, ()))

    def is_refused(self, room_id: str, event_id: str) -> bool:
        """True when we refuse to serve ``event_id`` of ``room_id``."""
        return event_id in self._refused.get(room_id, ())

    def plant(self, room_id: str, planted: PlantedPdu) -> None:
        """Keep ``planted`` for ``room_id``'s ``get_missing_events`` answers."""
        if sum(len(p) for p in self._planted.values()) >= self.max_planted:
            raise TooManyOverrides(f"at most {self.max_planted} PDUs may be planted")
        self._planted.setdefault(room_id, {})[planted.event_id] = planted

    def planted(self, room_id: str) -> Mapping[str, PlantedPdu]:
        """The planted PDUs of ``room_id`` by event ID (read-only)."""
        return dict(self._planted.get(room_id, {}))
