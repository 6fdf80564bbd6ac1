"""Rooms under attack, in memory (issue 22 rows 3, 4 and 5): the rooms a hostile member
makes, built fast on a :class:`~stubserver.rooms.room.Room`, and the work our answers and
our state keeping then cost, counted (``scripts/soak.py --rooms`` prints them; the rooms
tests build on the same helpers).

Events are added unsigned with made-up IDs: ``Room`` takes events already checked
(signatures and format are the intake's business), and 10,000 signed events would cost
the run 20 s of signing for nothing the counts depend on.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from nacl.signing import SigningKey
from twisted.internet.task import Clock

from stubserver.rooms.auth_events import select_auth_events
from stubserver.rooms.builder import EventSigner
from stubserver.rooms.create import add_own_event, build_in_room, create_room
from stubserver.rooms.dummy_events import DUMMY_EVENTS_THRESHOLD, DummyEvents
from stubserver.rooms.event import Event
from stubserver.rooms.room import EventRecord, Room
from stubserver.rooms.room_queries import backfill, state_ids_before
from stubserver.rooms.store import RoomStore
from stubserver.rooms.transaction import TransactionMemory
from stubserver.rooms.versions import ROOM_VERSIONS
from stubserver.rooms.visibility import pdu_for_server

HOST: Final = "a.soak"
ALICE: Final = "@alice:a.soak"
MALLORY: Final = "@mallory:m.soak"
LATECOMER: Final = "@late:l.soak"
TS: Final = 1_700_000_000_000
_IDS = itertools.count()


#: Our server's (``a.soak``'s) signer: Alice's events are signed as ours would be.
SIGNER: Final = EventSigner(HOST, "ed25519:s1", SigningKey(b"\x05" * 32))


def hosted_room(version: str = "12") -> Room:
    """A public room Alice (``a.soak``) created, Mallory (``m.soak``) joined."""
    room = create_room(
        ROOM_VERSIONS[version],
        SIGNER,
        creator=ALICE,
        now=TS,
        rng=random.Random(5),  # noqa: S311 - a room ID for a test room, not a secret
        preset="public_chat",
    ).room
    add_unsigned(room, MALLORY, "m.room.member", {"membership": "join"}, state_key=MALLORY)
    return room


def add_unsigned(
    room: Room,
    sender: str,
    event_type: str,
    content: Mapping[str, Any],
    *,
    state_key: str | None = None,
    prev: Sequence[str] | None = None,
) -> EventRecord:
    """Add one event of ``sender`` (unsigned, a made-up ID) on ``prev`` (default: the
    room's forward extremities), its auth events chosen from the current state."""
    prev_ids = sorted(room.forward_extremities) if prev is None else list(prev)
    depths = [e.depth for e in (room.get_event(p) for p in prev_ids) if e is not None]
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": sender,
        "content": dict(content),
        "room_id": room.room_id,
        "prev_events": prev_ids,
        "auth_events": select_auth_events(
            room.current_state,
            event_type=event_type,
            state_key=state_key,
            sender=sender,
            content=content,
            room_version=room.room_version,
        ),
        "origin_server_ts": TS + len(room),
        "depth": max(depths, default=0) + 1,
        "hashes": {"sha256": "unchecked"},
        "signatures": {},
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    event_id = f"$soak-{next(_IDS)}"
    event = Event(event_id=event_id, room_version=room.room_version, pdu=pdu, room_id=room.room_id)
    return room.add_event(event, TS, origin=sender.partition(":")[2])


def displayname_changes(room: Room, user: str, count: int) -> str:
    """``count`` displayname changes of the joined ``user``, in a line: an auth chain of
    ``count`` member events (each cites the previous one). The last one's ID."""
    last = ""
    for i in range(count):
        content = {"membership": "join", "displayname": f"name {i}"}
        record = add_unsigned(room, user, "m.room.member", content, state_key=user)
        assert record.outcome == "accepted", record.reason
        last = record.event_id
    return last


def forks(room: Room, user: str, count: int, *, conflicting: bool) -> list[str]:
    """``count`` events of ``user`` on the same parent (messages, or displayname changes
    when ``conflicting``): ``count`` forward extremities. Their IDs."""
    base = sorted(room.forward_extremities)
    tips = []
    for i in range(count):
        if conflicting:
            content = {"membership": "join", "displayname": f"fork {i}"}
            record = add_unsigned(room, user, "m.room.member", content, state_key=user, prev=base)
        else:
            record = add_unsigned(room, user, "m.room.message", {"body": f"{i}"}, prev=base)
        tips.append(record.event_id)
    return tips


def auth_chain_case(changes: int = 10_050) -> dict[str, Any]:
    """Row 3: Mallory changes her displayname ``changes`` times; what ``state_ids`` at
    the last change answers and costs."""
    room = hosted_room()
    last = displayname_changes(room, MALLORY, changes)
    started = time.perf_counter()
    state, chain = state_ids_before(room, last)
    return {
        "displayname_changes": changes,
        "state_ids_state": len(state),
        "state_ids_auth_chain": len(chain),
        "state_ids_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def our_send(room: Room, body: str) -> EventRecord:
    """Alice's message as our control API sends it: signed, citing the 10 deepest
    forward extremities, checked by our rules."""
    built = build_in_room(
        room, SIGNER, sender=ALICE, event_type="m.room.message", content={"body": body}, now=TS
    )
    add_own_event(room, built, TS, HOST)
    record = room.record(built.event.event_id)
    assert record is not None
    return record


def extremities_case(extremities: int = 2_000, events: int = 50) -> dict[str, Any]:
    """Row 4: Mallory makes ``extremities`` forks (messages, then 100 conflicting ones);
    state resolution work per accepted event as she sends ``events`` more on her tips;
    then, per event Alice sends (ours: citing the 10 deepest extremities), the state
    maps resolved and the extremity heap entries looked at; then the dummy events
    (``stubserver.rooms.dummy_events``, runs every 5 minutes) that bring the room to
    at most 10 extremities, and what resolving them cost."""
    result: dict[str, Any] = {"extremities": extremities, "events": events}
    for label, count, conflicting in (
        ("one_extremity", 1, False),
        ("message_forks", extremities, False),
        ("conflicting_forks", 100, True),
    ):
        room = hosted_room()
        tips = forks(room, MALLORY, count, conflicting=conflicting)
        work = room.resolution_work
        before = (work.resolutions, work.state_sets)
        # What making the forks cost: a new distinct state at an extremity is resolved
        # with the others once (Synapse: the same, until its dummy events merge them).
        started = time.perf_counter()
        for i in range(events):
            tip = tips[i % len(tips)]
            record = add_unsigned(room, MALLORY, "m.room.message", {"body": "x"}, prev=[tip])
            tips[i % len(tips)] = record.event_id
        result[label] = {
            "forward_extremities": len(room.forward_extremities),
            "state_sets_making_the_forks": before[1],
            "resolutions_per_event": (work.resolutions - before[0]) / events,
            "state_sets_per_event": (work.state_sets - before[1]) / events,
            "ms_per_event": round((time.perf_counter() - started) * 1000 / events, 3),
        }
        result[label]["our_sends"] = _our_sends_work(room, events)
        result[label]["dummy_events"] = _dummy_events_work(room)
    return result


def _our_sends_work(room: Room, events: int) -> dict[str, Any]:
    """Per event of ``events`` Alice sends: resolutions, state maps, heap entries."""
    work, tracker = room.resolution_work, room.extremity_tracker
    before = (work.resolutions, work.state_sets, tracker.examined)
    started = time.perf_counter()
    for i in range(events):
        our_send(room, f"ours {i}")
    return {
        "resolutions_per_event": (work.resolutions - before[0]) / events,
        "state_sets_per_event": (work.state_sets - before[1]) / events,
        "heap_entries_per_event": (tracker.examined - before[2]) / events,
        "ms_per_event": round((time.perf_counter() - started) * 1000 / events, 3),
        "forward_extremities_after": len(tracker),
    }


def _dummy_events_work(room: Room) -> dict[str, Any]:
    """The runs of dummy events until ``room`` holds at most the threshold."""
    clock = Clock()
    clock.advance(TS / 1000)
    store = RoomStore(HOST, TransactionMemory(clock))
    store.add_room(room)
    dummies = DummyEvents(store, SIGNER, lambda: int(clock.seconds() * 1000), clock)
    work = room.resolution_work
    before = (work.resolutions, work.state_sets)
    runs = 0
    while len(room.forward_extremities) > DUMMY_EVENTS_THRESHOLD and dummies.run():
        runs += 1
    return {
        "runs": runs,
        "sent": dummies.sent,
        "forward_extremities_after": len(room.forward_extremities),
        "resolutions": work.resolutions - before[0],
        "state_sets": work.state_sets - before[1],
    }


def resolution_history_case(histories: Sequence[int] = (50, 10_050)) -> dict[str, Any]:
    """Row 4, history: Mallory changes her displayname that many times, then makes two
    conflicting changes on one parent; the events that one state resolution visits."""
    result: dict[str, Any] = {}
    for history in histories:
        room = hosted_room()
        displayname_changes(room, MALLORY, history)
        forks(room, MALLORY, 2, conflicting=True)
        work = room.resolution_work
        result[f"after_{history}_changes"] = {
            "resolutions": work.resolutions,
            "events_visited": work.events_visited,
        }
    return result


def visibility_case(messages: int = 100) -> dict[str, Any]:
    """Row 5: ``messages`` said under ``history_visibility: joined``, then one redacted,
    then ``l.soak``'s user joins; what backfill serves ``l.soak`` in full."""
    room = hosted_room()
    add_unsigned(
        room, ALICE, "m.room.history_visibility", {"history_visibility": "joined"}, state_key=""
    )
    said = [
        add_unsigned(room, ALICE, "m.room.message", {"body": f"secret {i}"}).event_id
        for i in range(messages)
    ]
    add_unsigned(room, ALICE, "m.room.redaction", {"redacts": said[-1]})
    add_unsigned(room, LATECOMER, "m.room.member", {"membership": "join"}, state_key=LATECOMER)
    last = add_unsigned(room, LATECOMER, "m.room.message", {"body": "hello"}).event_id
    served = [pdu_for_server(room, e, "l.soak") for e in backfill(room, [last], 100)]
    secrets = [p for p in served if p["type"] == "m.room.message" and p["sender"] == ALICE]
    return {
        "messages_before_join": messages,
        "backfilled": len(served),
        "secrets_served_in_full": sum(1 for p in secrets if "body" in p["content"]),
        "secrets_served_redacted": sum(1 for p in secrets if not p["content"]),
        "redacted_to_members": int(room.is_redacted(said[-1])),
    }
