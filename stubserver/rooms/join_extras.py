"""State events of ours that a room's ``send_join`` answers carry beyond the room's own
state (the control API's ``send_join_extra_state``): how a test peer hands a joining
server a state holding events it must drop or reject, as a homeserver test tool does
(Complement's ``TestJoinFederatedRoomWithUnverifiableEvents`` adds such events to its
peer's room; ours stay out of the room).

An extra event is built on the room as it is when asked for (``prev_events`` its
forward extremities, auth events selected from its current state with the earlier
extras applied over it, so that a later extra can cite an earlier one), signed by us,
broken as ``tamper`` says (:mod:`stubserver.rooms.tamper`) and never added to the room:
our own state does not change and we do not serve it by ``/event``. It is not checked
against our auth rules either: a test may lie on purpose. Every later ``send_join``
answer of the room carries, for each (type, state_key) the extras name, the last extra
of it in ``state`` in place of the room's event, and the extras a later one replaced in
``auth_chain`` (:meth:`JoinExtras.answer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from stubserver.rooms.auth_events import select_auth_events
from stubserver.rooms.builder import EventSigner, build_event
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.room import Room
from stubserver.rooms.state_store import StateKey
from stubserver.rooms.tamper import EXTRA_TAMPER_KINDS, tampered
from stubserver.signing.canonical_json import JsonDict

#: Most extra events one room's send_join answers carry (each at most a PDU's 64 KiB;
#: rooms are bounded by the store).
MAX_EXTRAS_PER_ROOM: Final = 20


class TooManyExtras(ValueError):
    """A room has :data:`MAX_EXTRAS_PER_ROOM` extra events already."""


@dataclass(frozen=True)
class ExtraEvent:
    """One extra state event: its (type, state_key), its event ID (as a receiver
    computes it from ``pdu``) and the PDU, broken where asked."""

    key: StateKey
    event_id: str
    pdu: JsonDict


def build_extra(
    room: Room,
    signer: EventSigner,
    earlier: Sequence[ExtraEvent],
    *,
    sender: str,
    event_type: str,
    content: Mapping[str, Any],
    state_key: str,
    tamper: str | None,
    now: int,
) -> ExtraEvent:
    """A state event of ours on ``room`` (module docstring), its auth events chosen from
    the room's current state with the ``earlier`` extras over it; ``tamper`` one of
    :data:`~stubserver.rooms.tamper.EXTRA_TAMPER_KINDS` or None. Raise ``ValueError``
    for an unknown kind, and what :func:`~stubserver.rooms.builder.build_event` raises
    for an event we cannot build."""
    if tamper is not None and tamper not in EXTRA_TAMPER_KINDS:
        raise ValueError(f"tamper must be one of {', '.join(EXTRA_TAMPER_KINDS)}, not {tamper!r}")
    state = dict(room.current_state)
    state.update({extra.key: extra.event_id for extra in earlier})
    auth_ids = select_auth_events(
        state,
        event_type=event_type,
        state_key=state_key,
        sender=sender,
        content=content,
        room_version=room.room_version,
    )
    built = build_event(
        room.room_version,
        room_id=room.room_id,
        sender=sender,
        event_type=event_type,
        content=content,
        prev_events=room.prev_events_for_new_event(),
        auth_event_ids=auth_ids,
        origin_server_ts=now,
        signer=signer,
        state_key=state_key,
    )
    pdu = built.pdu if tamper is None else tampered(built.pdu, tamper, signer)
    return ExtraEvent((event_type, state_key), compute_event_id(pdu, room.room_version), pdu)


@dataclass
class JoinExtras:
    """The extra events of each room, by room ID, in the order they were added."""

    _rooms: dict[str, list[ExtraEvent]] = field(default_factory=dict)

    def of(self, room_id: str) -> tuple[ExtraEvent, ...]:
        """The room's extras, oldest first."""
        return tuple(self._rooms.get(room_id, ()))

    def add(self, room_id: str, extra: ExtraEvent) -> None:
        """Carry ``extra`` in the room's later send_join answers; raise
        :class:`TooManyExtras` past :data:`MAX_EXTRAS_PER_ROOM`."""
        extras = self._rooms.setdefault(room_id, [])
        if len(extras) >= MAX_EXTRAS_PER_ROOM:
            raise TooManyExtras(f"the room has {MAX_EXTRAS_PER_ROOM} extra state events already")
        extras.append(extra)

    def answer(
        self, room_id: str, state: Sequence[JsonDict], auth_chain: Sequence[JsonDict]
    ) -> tuple[list[JsonDict], list[JsonDict]]:
        """A send_join answer's ``state`` and ``auth_chain`` with the room's extras in
        (pure): each (type, state_key) an extra names has its last extra in ``state``
        in place of the room's event; the extras a later one replaced are added to
        ``auth_chain``. Without extras, both as given."""
        extras = self.of(room_id)
        last = {extra.key: extra for extra in extras}
        kept = [pdu for pdu in state if (pdu.get("type"), pdu.get("state_key")) not in last]
        final = {extra.event_id for extra in last.values()}
        replaced = [extra.pdu for extra in extras if extra.event_id not in final]
        return kept + [extra.pdu for extra in last.values()], [*auth_chain, *replaced]
