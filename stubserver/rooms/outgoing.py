"""Our own events going out: each is added to our copy of the room first, under our own
auth checks (an event they refuse is 403 ``M_FORBIDDEN``), then queued for every other
server in the room (:class:`~stubserver.rooms.sender.TransactionSender`). The test peer's
overrides live here too: chosen ``prev_events``/``auth_events``/``origin_server_ts``
(added whatever the outcome), ``tamper`` (sent broken, never added) and ``destinations``
(sent only there).

:class:`~stubserver.rooms.service.RoomService` resolves the user and the room and calls
:class:`OutgoingEvents`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stubserver.rooms.builder import REDACTION, BuiltEvent, EventBuildError, EventSigner
from stubserver.rooms.create import EventRejected, add_own_event, build_in_room
from stubserver.rooms.errors import InvalidParameter, NotAllowed, UnbuildableEvent
from stubserver.rooms.event import Event
from stubserver.rooms.format import InvalidPdu
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.room import MissingEvents, Room, RoomError
from stubserver.rooms.sender import TransactionSender
from stubserver.rooms.tamper import tampered
from stubserver.rooms.versions import RoomVersion
from stubserver.signing.canonical_json import JsonDict


def redaction_target(
    room_version: RoomVersion, event_type: str, content: Mapping[str, Any]
) -> tuple[Mapping[str, Any], str | None]:
    """The content to build and the top-level ``redacts``: an ``m.room.redaction`` whose
    content names its target (``redacts``, the v11+ place) is built, in a room version
    that keeps ``redacts`` at the top level (v10), with it moved there, as a homeserver
    builds its client's redaction; any other event is built as given."""
    target = content.get("redacts")
    if event_type != REDACTION or room_version.redacts_in_content or not isinstance(target, str):
        return content, None
    return {k: v for k, v in content.items() if k != "redacts"}, target


def planted_prevs(prev_event_ids: Sequence[str], planted: Mapping[str, Event]) -> list[str] | None:
    """The prev_events with each planted one replaced by its own prev_events: what the
    state before an event citing a planted one comes from; None when none is planted."""
    if not any(p in planted for p in prev_event_ids):
        return None
    return [
        p
        for prev in prev_event_ids
        for p in (planted[prev].prev_event_ids if prev in planted else (prev,))
    ]


class OutgoingEvents:
    """Adds our events to our rooms and sends them to the other servers in each room.

    ``now`` gives milliseconds since the epoch.
    """

    def __init__(
        self, signer: EventSigner, sender: TransactionSender, now: Callable[[], int]
    ) -> None:
        self._signer = signer
        self._sender = sender
        self._now = now

    @property
    def server_name(self) -> str:
        return self._signer.server_name

    def others(self, room: Room, *extra: str) -> list[str]:
        """The servers in ``room`` (and ``extra``) but us, sorted."""
        servers = set(room.servers) | set(extra)
        servers.discard(self.server_name)
        return sorted(servers)

    def broadcast(self, destinations: Sequence[str], event_id: str, pdu: Mapping[str, Any]) -> None:
        """Queue ``pdu`` for each of ``destinations``."""
        for destination in destinations:
            self._sender.send_pdu(destination, event_id, pdu)

    def add_and_send(
        self, room: Room, built: BuiltEvent, destinations: Sequence[str] | None = None
    ) -> str:
        """Add our event to ``room`` (403 unless accepted), then send it to the servers
        in the room before or after it (a leave still reaches the others), or only to
        ``destinations`` when given. A :class:`~stubserver.rooms.room.RoomError` other
        than missing events (the room is full, its state cannot be resolved) is raised
        as it is."""
        before = room.servers
        try:
            add_own_event(room, built, self._now(), self.server_name)
        except EventRejected as e:
            raise NotAllowed(str(e)) from None
        except MissingEvents as e:
            raise InvalidParameter(str(e)) from None
        targets = self.others(room, *before) if destinations is None else destinations
        self.broadcast(targets, built.event.event_id, built.pdu)
        return built.event.event_id

    def send(
        self,
        held: Room,
        sender_id: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None,
        prev_events: Sequence[str] | None,
        auth_events: Sequence[str] | None,
        origin_server_ts: int | None,
        tamper: str | None,
        destinations: Sequence[str] | None,
        planted: Mapping[str, Event] | None = None,
    ) -> JsonDict:
        """Build, sign and send an event in ``held`` (``RoomService.send`` says how the
        overrides, ``tamper`` and ``destinations`` change that). ``prev_events`` may name
        ``planted`` events (stand-ins by ID, not in the room): the event is then added with
        the state the planted events' own prev_events give."""
        targets = None if destinations is None else sorted(set(destinations) - {self.server_name})
        content, redacts = redaction_target(held.room_version, event_type, content)
        try:
            built = build_in_room(
                held,
                self._signer,
                sender=sender_id,
                event_type=event_type,
                content=content,
                now=self._now() if origin_server_ts is None else origin_server_ts,
                state_key=state_key,
                redacts=redacts,
                prev_event_ids=prev_events,
                auth_event_ids=auth_events,
                planted=planted,
            )
        except (EventBuildError, InvalidPdu) as e:
            raise UnbuildableEvent(f"cannot build the event: {e}") from None
        if tamper is not None:
            pdu = tampered(built.pdu, tamper, self._signer)
            event_id = compute_event_id(pdu, held.room_version)
            self.broadcast(self.others(held) if targets is None else targets, event_id, pdu)
            return {"event_id": event_id}
        overridden = (
            prev_events is not None or auth_events is not None or origin_server_ts is not None
        )
        if not overridden:
            return {"event_id": self.add_and_send(held, built, targets)}
        through = planted_prevs(built.event.prev_event_ids, planted or {})
        state_before = None if through is None else held.state_after_events(through)
        try:
            held.add_event(
                built.event, self._now(), origin=self.server_name, state_before=state_before
            )
        except RoomError as e:
            raise InvalidParameter(str(e)) from None
        self.broadcast(
            self.others(held) if targets is None else targets, built.event.event_id, built.pdu
        )
        return {"event_id": built.event.event_id}
