"""A room's answers to other servers, pure functions over a
:class:`~stubserver.rooms.room.Room`: the auth chain of events (``event_auth``), the state
before an event with its auth chain (``state``/``state_ids``, a join's answer),
``backfill`` and ``get_missing_events`` (spec: Server-Server API "Retrieving events",
"Backfilling and retrieving missing events", "Room state"). Each walk is iterative and
bounded by the named constants below, or by the room's own size.

Auth chains (issue 22 row 3) have no cap of their own: a member who changes their
displayname 10,050 times makes an auth chain of 10,050 member events (each member event
cites the sender's previous one: spec "Auth events selection"), and an answer that
refuses past a count makes the room unjoinable for everyone. Synapse serves them whole:
``state_ids`` / ``state`` answer the state before the event with its full auth chain
(``get_auth_chain_ids`` over its chain cover index, no limit; the answers are kept 30 s
per room and event), ``event_auth`` the event's full chain, ``send_join`` the state and
full chain (or non-member state only when the joiner asks for a partial-state join).
So do we: the walk visits each event of the chain once and is bounded by the events the
room holds (:data:`~stubserver.rooms.room.MAX_EVENTS_PER_ROOM`). The work per answer is
that of the answer: the state, plus every event its auth chain holds. It cannot be less:
superseded member events stay in the chain (each member event cites the previous one),
so the answer itself grows with the history; ``stubserver.rooms.routes_read`` keeps the
``state``/``state_ids`` answers 30 s per room and event, as Synapse does.

The room keeps the graph and the checks; these read it through its public methods.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Set
from typing import Final

from stubserver.rooms.event import Event
from stubserver.rooms.room import Room
from stubserver.rooms.state_res import auth_event_ids

#: ``get_missing_events``: Synapse caps the limit at 20 (default 10).
MAX_MISSING_EVENTS: Final = 20
DEFAULT_MISSING_EVENTS: Final = 10
#: ``backfill``: Synapse caps the limit at 100.
MAX_BACKFILL_EVENTS: Final = 100
#: Most events a get_missing_events walk visits, whatever it returns.
MAX_MISSING_EVENTS_WALK: Final = 1_000
_NOTHING_PLANTED: Final[Mapping[str, Event]] = {}


def _event(room: Room, event_id: str) -> Event:
    record = room.record(event_id)
    assert record is not None, event_id
    return record.event


def order_key(room: Room, event_id: str) -> tuple[int, int]:
    """Sort key of a held event: depth, then the position it was gained at."""
    record = room.record(event_id)
    assert record is not None, event_id
    return (record.event.depth, record.position)


def auth_chain(room: Room, event_ids: Iterable[str]) -> list[str]:
    """The IDs in the auth chains of ``event_ids`` (not the events themselves unless
    one cites another) among the events the room holds, depth-ascending. Iterative;
    each held event is visited once."""
    seen: set[str] = set()
    stack = [
        a for s in event_ids if room.record(s) is not None for a in auth_event_ids(_event(room, s))
    ]
    while stack:
        event_id = stack.pop()
        if event_id in seen or room.record(event_id) is None:
            continue
        seen.add(event_id)
        stack.extend(auth_event_ids(_event(room, event_id)))
    return sorted(seen, key=lambda e: order_key(room, e))


def state_ids_before(room: Room, event_id: str) -> tuple[list[str], list[str]]:
    """``/state_ids``: the state IDs before the event and their auth chain IDs. Raise
    KeyError for an event we hold no state at."""
    state = sorted(room.state_before(event_id).values(), key=lambda e: order_key(room, e))
    return state, auth_chain(room, state)


def state_ids_for_new_event(room: Room, event: Event) -> tuple[list[str], list[str]]:
    """:func:`state_ids_before` for an event not added yet (a join being answered): the
    state its prev_events give, and that state's auth chain."""
    state = sorted(room.state_from_prev_events(event).values(), key=lambda e: order_key(room, e))
    return state, auth_chain(room, state)


def backfill(
    room: Room, from_ids: Iterable[str], limit: int, unserved: Set[str] = frozenset()
) -> list[Event]:
    """``/backfill``: the ``from_ids`` events and their ancestors, deepest first, at
    most ``limit`` (capped at :data:`MAX_BACKFILL_EVENTS`); rejected events, the
    ``unserved`` ones (walked through, not returned) and events we lack are skipped."""
    limit = max(0, min(limit, MAX_BACKFILL_EVENTS))
    heap: list[tuple[int, int, str]] = []
    queued: set[str] = set()

    def push(event_id: str) -> None:
        if event_id in queued or not room.has_state_at(event_id):
            return
        queued.add(event_id)
        record = room.record(event_id)
        assert record is not None
        heapq.heappush(heap, (-record.event.depth, -record.position, event_id))

    for event_id in from_ids:
        push(event_id)
    result: list[Event] = []
    while heap and len(result) < limit:
        _, _, event_id = heapq.heappop(heap)
        record = room.record(event_id)
        assert record is not None
        if record.outcome != "rejected" and event_id not in unserved:
            result.append(record.event)
        for prev in record.event.prev_event_ids:
            push(prev)
    return result


def get_missing_events(
    room: Room,
    earliest: Iterable[str],
    latest: Iterable[str],
    limit: int,
    min_depth: int,
    *,
    unserved: Set[str] = frozenset(),
    planted: Mapping[str, Event] = _NOTHING_PLANTED,
) -> list[Event]:
    """``/get_missing_events``: ancestors of ``latest`` (not those), walking
    prev_events breadth-first and stopping at ``earliest`` and below ``min_depth``,
    at most ``limit`` (capped at :data:`MAX_MISSING_EVENTS`), oldest first. Rejected
    and ``unserved`` events are walked through, not returned; ``planted`` events (not in
    the room: stand-ins by ID, ``stubserver.rooms.planted``) are walked and returned."""
    limit = max(0, min(limit, MAX_MISSING_EVENTS))
    seen = set(earliest)
    front = [e for e in dict.fromkeys(latest) if e not in seen and room.record(e) is not None]
    seen.update(front)
    found: list[Event] = []
    visited = 0
    while front and len(found) < limit and visited < MAX_MISSING_EVENTS_WALK:
        next_front: list[str] = []
        for event_id in front:
            event = planted[event_id] if event_id in planted else _event(room, event_id)
            for prev in event.prev_event_ids:
                visited += 1
                record = room.record(prev)
                stand_in = planted.get(prev) if record is None else None
                walked = record.event if record is not None else stand_in
                if prev in seen or walked is None or walked.depth < min_depth:
                    continue
                seen.add(prev)
                next_front.append(prev)
                if stand_in is not None or (
                    record is not None and record.outcome != "rejected" and prev not in unserved
                ):
                    found.append(walked)
        front = next_front
    return list(reversed(found[:limit]))


def event_auth(room: Room, event_id: str) -> list[str]:
    """``/event_auth``: the auth chain of the event (its auth events included)."""
    return auth_chain(room, [event_id])
