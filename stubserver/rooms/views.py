"""The control API's reads of the rooms: ``room_info`` and the long-polls ``events`` and
``edus`` (DESIGN.md "Rooms and the control API"), as :class:`RoomViews`.

A long-poll is answered as soon as what it waits for exists, else woken by what a room
gains (every room the server holds is watched: :meth:`RoomViews.watch`) or by received
EDUs, else at its deadline (:mod:`stubserver.rooms.long_poll`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime

from stubserver.rooms.errors import RoomRequestRefused
from stubserver.rooms.event import Event
from stubserver.rooms.long_poll import LongPolls, ReceivedEdus, event_json
from stubserver.rooms.room import Room
from stubserver.rooms.store import RoomStore
from stubserver.rooms.transaction import Edu
from stubserver.signing.canonical_json import JsonDict


class RoomViews:
    """Reads of ``store``'s rooms; ``find(room)`` resolves a room ID or alias to a held
    room (raising :class:`~stubserver.rooms.errors.UnknownRoom`)."""

    def __init__(self, clock: IReactorTime, store: RoomStore, find: Callable[[str], Room]) -> None:
        self._clock = clock
        self._store = store
        self._find = find
        # Rooms whose long-polls are woken at the end of this reactor turn.
        self._to_wake: set[str] = set()
        # Long-poll waiters: per room ID, and under None for EDUs.
        self._polls = LongPolls(clock)
        self._edus = ReceivedEdus()
        # The rooms themselves (weakly), not their id(): a room freed after a re-join
        # and a new one at its address must not look watched.
        self._watched: weakref.WeakSet[Room] = weakref.WeakSet()
        for room in store:
            self.watch(room)

    def watch(self, room: Room) -> None:
        """Wake the long-polls of ``room``'s ID whenever ``room`` gains an event."""
        if room in self._watched:
            return
        self._watched.add(room)
        room_id = room.room_id
        room.add_listener(lambda _record: self._wake_after_this_turn(room_id))

    def _wake_after_this_turn(self, room_id: str) -> None:
        """Wake ``room_id``'s long-polls once the events added in this reactor turn are
        all in (a /send adds up to 50 in one turn): one answer for them, not an answer
        for the first and another long-poll for the rest (issue 22: each answer costs a
        response written, a request read and routed)."""
        if room_id not in self._to_wake:
            self._to_wake.add(room_id)
            self._clock.callLater(0, self._wake_now, room_id)

    def _wake_now(self, room_id: str) -> None:
        self._to_wake.discard(room_id)
        self._polls.wake(room_id)

    def wake(self, room_id: str) -> None:
        """Wake the long-polls of ``room_id`` (a room now held under it)."""
        self._polls.wake(room_id)

    def add_edus(self, edus: Iterable[Edu]) -> None:
        """Keep received EDUs and wake the ``edus`` long-polls."""
        self._edus.extend(edus)
        self._polls.wake(None)

    def room_info(self, room: str) -> JsonDict:
        """``{"room_id", "room_version", "state", "members", "servers",
        "forward_extremities"}`` of a held room."""
        held = self._find(room)
        state = [held.get_event(i) for i in held.current_state.values()]
        events = sorted(
            (e for e in state if e is not None), key=lambda e: (e.depth, _position(held, e))
        )
        return {
            "room_id": held.room_id,
            "room_version": held.room_version.identifier,
            "state": [dict(e.pdu) for e in events],
            "members": held.members,
            "servers": held.servers,
            "forward_extremities": sorted(held.forward_extremities),
        }

    def events(self, room: str, start: int, wait_ms: int) -> Deferred[JsonDict]:
        """Every PDU the room gained from position ``start``; waits up to ``wait_ms``."""
        try:
            held = self._find(room)
        except RoomRequestRefused as e:
            return fail(e)
        room_id = held.room_id

        def answer() -> JsonDict:
            current = self._store.get_room(room_id) or held
            records = current.events_since(start)
            return {
                "events": [event_json(r) for r in records],
                "next": max(start, 0) + len(records) if records else max(start, 0),
            }

        return self._polls.wait(
            room_id,
            lambda: bool((self._store.get_room(room_id) or held).events_since(start)),
            answer,
            wait_ms,
        )

    def edus(self, start: int, wait_ms: int) -> Deferred[JsonDict]:
        """The EDUs received from position ``start``; waits up to ``wait_ms``."""
        return self._polls.wait(
            None, lambda: bool(self._edus.since(start)), lambda: self._edus.answer(start), wait_ms
        )


def _position(room: Room, event: Event) -> int:
    record = room.record(event.event_id)
    return record.position if record is not None else 0
