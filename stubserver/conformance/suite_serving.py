"""What the homeserver serves of its rooms over federation, per room version: the state
and state IDs at an event, one event, an event's auth chain, backfill and missing events,
checked event by event against the peer's own copy of the room (IDs equal, signatures
valid, PDUs well-formed); a server not in the room refused; ``joined`` history
visibility honoured.

Spec: Server-Server API v1.19, "Retrieving events" (``/state``, ``/state_ids``,
``/event``), "Retrieving event authorization information" (``/event_auth``),
"Backfilling and retrieving missing events" (``/backfill``, ``/get_missing_events``);
Client-Server API v1.19, "Room History Visibility" ("Server behaviour").
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from nacl.signing import VerifyKey

from stubserver.conformance.context import (
    PEER_USER,
    Context,
    VersionTest,
    client_call,
    expect,
    expect_accepted,
    per_version,
    q,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.conformance.serving import (
    Keys,
    ancestors,
    auth_chain,
    expect_ids,
    leaks,
    same_event,
    served_pdus,
    state_ids,
)
from stubserver.rooms.versions import RoomVersion, room_version
from stubserver.signing.keys import decode_verify_key

V1 = "/_matrix/federation/v1"
STATE = "Retrieving events: GET /_matrix/federation/v1/state/{roomId}"
STATE_IDS = "Retrieving events: GET /_matrix/federation/v1/state_ids/{roomId}"
EVENT = "Retrieving events: GET /_matrix/federation/v1/event/{eventId}"
EVENT_AUTH = (
    "Retrieving event authorization information: "
    "GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}"
)
BACKFILL = "Backfilling and retrieving missing events: GET /_matrix/federation/v1/backfill/{roomId}"
MISSING = (
    "Backfilling and retrieving missing events: "
    "POST /_matrix/federation/v1/get_missing_events/{roomId}"
)
HISTORY = BACKFILL  # the rule is the Client-Server API's ("Room History Visibility")
#: The largest answer a backfill is asked for (more than any test room holds).
BACKFILL_ALL = 100


def federation_keys(ctx: Context) -> Keys:
    """The verify keys of both sides: its published ``verify_keys`` and our key."""
    answer = ctx.peer.federation_request(ctx.server_name, "GET", "/_matrix/key/v2/server")
    expect("GET /_matrix/key/v2/server status", 200, answer.status)
    published = answer.body.get("verify_keys") if isinstance(answer.body, dict) else None
    theirs = {
        k: decode_verify_key(str(v.get("key")))
        for k, v in (published or {}).items()
        if isinstance(v, dict)
    }
    ours = ctx.our_key()
    mine: dict[str, VerifyKey] = {ours.key_id: ours.key.verify_key}
    return {ctx.server_name: theirs, ctx.peer.server_name: mine}


def fetch(ctx: Context, what: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """One signed request of ours; its JSON object answer, which must come with 200."""
    answer = ctx.peer.federation_request(ctx.server_name, method, path, body)
    expect(f"{what}: status", 200, answer.status, answer=answer.body)
    if not isinstance(answer.body, dict):
        raise CheckFailed(what, "a JSON object", answer.body)
    return answer.body


@dataclass(frozen=True)
class ServedRoom:
    """A room of the homeserver we joined, then its user sent ``messages`` (all
    accepted by us); ``ours``: every PDU we hold of it, by event ID."""

    room_id: str
    version: RoomVersion
    messages: list[str]
    ours: dict[str, dict[str, Any]]


def served_room(ctx: Context, version: str, messages: int) -> ServedRoom:
    """We join its public room of ``version``; its user sends ``messages`` messages,
    each of which reaches us accepted (so that we hold the room as it does)."""
    room_id = ctx.join_homeserver_room(version)
    sent = [ctx.user.send_message(room_id, f"served {i}") for i in range(messages)]
    for event_id in sent:
        expect_accepted(
            f"our verdict on its message {event_id}",
            ctx.peer.wait_for_event(room_id, event_id=event_id),
        )
    ours = {e.event_id: e.pdu for e in ctx.peer.events(room_id)}
    return ServedRoom(room_id, room_version(version), sent, ours)


#: How many messages its user sends in the room the read-only tests share (the
#: ``get_missing_events`` tests walk from the fourth back to the first).
SHARED_MESSAGES = 4


def shared_served_room(ctx: Context, version: str) -> ServedRoom:
    """The :func:`served_room` of ``version`` with :data:`SHARED_MESSAGES` messages that
    the tests which only read it share (made once per run: a room creation, a join and
    messages fewer per test for the homeserver). What they ask for is at or before its
    last message, and what they add to it (``serving.event``'s message of ours) changes
    no state and comes after it, so no answer they judge depends on another test."""
    return ctx.shared(("serving", version), lambda: served_room(ctx, version, SHARED_MESSAGES))


def _current_state_ids(ctx: Context, room: ServedRoom) -> set[str]:
    return state_ids(ctx.peer.room_state(room.room_id)["state"], room.version)


def it_serves_state_ids(ctx: Context, version: str) -> None:
    """``/state_ids`` at its last message: ``pdu_ids`` is the room's state before it (as we
    hold it: no state changed since) and ``auth_chain_ids`` the auth events of those,
    recursively ("the full set of authorization events that make up the state of the
    room, and their authorization events, recursively"; the state events themselves
    may be listed too)."""
    room = shared_served_room(ctx, version)
    at = room.messages[-1]
    body = fetch(ctx, "its /state_ids", "GET", f"{V1}/state_ids/{q(room.room_id)}?event_id={q(at)}")
    state = _current_state_ids(ctx, room)
    expect_ids(f"its pdu_ids at {at}", state, body.get("pdu_ids"))
    chain = auth_chain(room.ours, state, room.version)
    expect_ids("its auth_chain_ids", chain, body.get("auth_chain_ids"), also_allowed=state)


def it_serves_state(ctx: Context, version: str) -> None:
    """``/state`` at its last message: ``pdus`` are the room's state before it and
    ``auth_chain`` their auth events recursively; every PDU well-formed, signed by its
    sender's server, intact, and the same as our copy."""
    room = shared_served_room(ctx, version)
    at = room.messages[-1]
    body = fetch(ctx, "its /state", "GET", f"{V1}/state/{q(room.room_id)}?event_id={q(at)}")
    keys = federation_keys(ctx)
    pdus = served_pdus("its /state pdus", body.get("pdus"), room.version, keys)
    chain_pdus = served_pdus("its /state auth_chain", body.get("auth_chain"), room.version, keys)
    state = _current_state_ids(ctx, room)
    expect_ids(f"its state at {at}", state, list(pdus))
    chain = auth_chain(room.ours, state, room.version)
    expect_ids("its auth_chain", chain, list(chain_pdus), also_allowed=state)
    for event_id, pdu in {**pdus, **chain_pdus}.items():
        same_event(f"its copy of {event_id}", room.ours[event_id], pdu)


def it_serves_an_event(ctx: Context, version: str) -> None:
    """``/event`` of its message and of ours: a transaction of one PDU, that event
    (same ID), signed by its sender's server and the same as our copy."""
    room = shared_served_room(ctx, version)
    mine = ctx.send_text(room.room_id, "ours, to be served back")
    ctx.wait_visible(room.room_id, mine, "our message")
    keys = federation_keys(ctx)
    for event_id in (room.messages[0], mine):
        body = fetch(ctx, f"its /event/{event_id}", "GET", f"{V1}/event/{q(event_id)}")
        pdus = served_pdus(f"its /event/{event_id}", body.get("pdus"), room.version, keys)
        expect(f"the event IDs its /event/{event_id} holds", [event_id], list(pdus))
        ours = {e.event_id: e.pdu for e in ctx.peer.events(room.room_id)}
        same_event(f"its copy of {event_id}", ours[event_id], pdus[event_id])
        if not isinstance(body.get("origin_server_ts"), int):
            raise CheckFailed("its /event origin_server_ts", "an integer", body)


def it_serves_an_event_auth_chain(ctx: Context, version: str) -> None:
    """``/event_auth`` of its message, and of its topic set after it changed the power
    levels: exactly the event's auth events and theirs, recursively (nothing more: not
    the event, not its prev_events; Complement's TestEventAuth), each well-formed, signed
    and the same as our copy. The topic's chain holds both power levels events."""
    room = served_room(ctx, version, 1)
    levels = client_call(ctx.user, "GET", f"/rooms/{q(room.room_id)}/state/m.room.power_levels/")
    ctx.user.send_state(
        room.room_id,
        "m.room.power_levels",
        {**levels, "events": {**(levels.get("events") or {}), "m.room.topic": 50}},
    )
    topic = ctx.user.send_state(room.room_id, "m.room.topic", {"topic": "auth chain"})
    expect_accepted(
        f"our verdict on its topic {topic}", ctx.peer.wait_for_event(room.room_id, event_id=topic)
    )
    ours = {e.event_id: e.pdu for e in ctx.peer.events(room.room_id)}
    keys = federation_keys(ctx)
    for at in (room.messages[-1], topic):
        path = f"{V1}/event_auth/{q(room.room_id)}/{q(at)}"
        body = fetch(ctx, f"its /event_auth of {at}", "GET", path)
        served = served_pdus(
            "its /event_auth auth_chain", body.get("auth_chain"), room.version, keys
        )
        expect_ids(f"the auth chain of {at}", auth_chain(ours, [at], room.version), list(served))
        for event_id, pdu in served.items():
            same_event(f"its copy of {event_id}", ours[event_id], pdu)


def it_serves_backfill(ctx: Context, version: str) -> str:
    """``/backfill`` from its last message: with a ``limit`` above the room's size, that
    event and every event before it (by ``prev_events``); with ``limit`` 2, at most 2 of
    those, the given event among them ("the PDUs given in v and the PDUs that preceded
    them ... up to the total number given by the limit")."""
    room = shared_served_room(ctx, version)
    last = room.messages[-1]
    keys = federation_keys(ctx)
    before = ancestors(room.ours, [last])
    path = f"{V1}/backfill/{q(room.room_id)}?v={q(last)}&limit="
    body = fetch(ctx, "its /backfill", "GET", f"{path}{BACKFILL_ALL}")
    served = served_pdus("its /backfill pdus", body.get("pdus"), room.version, keys)
    expect_ids(f"its backfill from {last}", {last} | before, list(served))
    for event_id, pdu in served.items():
        same_event(f"its copy of {event_id}", room.ours[event_id], pdu)
    two = served_pdus(
        "its /backfill pdus (limit 2)",
        fetch(ctx, "its /backfill (limit 2)", "GET", f"{path}2").get("pdus"),
        room.version,
        keys,
    )
    if len(two) > 2 or last not in two or not set(two) <= {last} | before:
        raise CheckFailed(
            "its backfill with limit 2", f"{last} and at most one event before it", sorted(two)
        )
    return f"limit 2 gave {len(two)} events"


def _missing_events_request(room: ServedRoom) -> dict[str, Any]:
    """The walk from its fourth message back to its first."""
    first, _, _, fourth = room.messages
    return {"earliest_events": [first], "latest_events": [fourth], "min_depth": 0}


def it_serves_missing_events(ctx: Context, version: str) -> str:
    """``/get_missing_events`` between its first and fourth messages, with ``limit`` 10:
    the two between (neither the ``earliest_events`` nor the ``latest_events``; a server
    that reads "ignoring any events in earliest_events" as walking on past them may add
    events before the first), at most ``limit``."""
    room = shared_served_room(ctx, version)
    first, second, third, fourth = room.messages
    path = f"{V1}/get_missing_events/{q(room.room_id)}"
    request = {**_missing_events_request(room), "limit": 10}
    body = fetch(ctx, "its /get_missing_events", "POST", path, request)
    served = served_pdus(
        "its missing events", body.get("events"), room.version, federation_keys(ctx)
    )
    beyond = ancestors(room.ours, [first])
    expect_ids(
        f"the events between {first} and {fourth}",
        {second, third},
        list(served),
        also_allowed=beyond,
    )
    if len(served) > 10:
        raise CheckFailed("its missing events (limit 10)", "at most 10", len(served))
    extra = sorted(set(served) & beyond)
    return f"also walked past earliest_events: {extra}" if extra else "stopped at earliest_events"


def it_serves_missing_events_to_the_limit(ctx: Context, version: str) -> None:
    """``/get_missing_events`` between its first and fourth messages with ``limit`` 1:
    the one event a breadth-first walk of ``prev_events`` reaches first, the third ("a
    breadth-first walk of the prev_events for the latest_events, ignoring any events in
    earliest_events and stopping at the limit"; ``limit``: "The maximum number of events
    to retrieve"). The ``latest_events`` are not retrieved, so they do not count."""
    room = shared_served_room(ctx, version)
    third = room.messages[2]
    path = f"{V1}/get_missing_events/{q(room.room_id)}"
    request = {**_missing_events_request(room), "limit": 1}
    one = fetch(ctx, "its /get_missing_events (limit 1)", "POST", path, request)
    keys = federation_keys(ctx)
    got = list(served_pdus("its missing events (limit 1)", one.get("events"), room.version, keys))
    expect("its missing events with limit 1", [third], got)


#: The read endpoints a server not in the room asks, and the status the spec names (None:
#: it names none, so any 4xx refusal is right).
_NOT_IN_ROOM: list[tuple[str, str, str, int | None]] = [
    ("state_ids", "GET", "/state_ids/{room}?event_id={event}", 403),
    ("state", "GET", "/state/{room}?event_id={event}", None),
    ("event_auth", "GET", "/event_auth/{room}/{event}", None),
    ("backfill", "GET", "/backfill/{room}?v={event}&limit=10", None),
    ("get_missing_events", "POST", "/get_missing_events/{room}", None),
]


def it_refuses_a_server_not_in_the_room(ctx: Context, version: str) -> str:
    """A room we never joined: ``/state_ids`` is refused 403 ("The requesting host is not
    in the room"); ``/state``, ``/event_auth``, ``/backfill`` and
    ``/get_missing_events``, for which the spec names no refusal, are refused with a 4xx
    or answered 200 without the message's content; ``/event`` of its message does not
    serve the message's content either (refused, or redacted: no user of ours may see it,
    "Room History Visibility"). Synapse refuses them all; Dendrite 0.13.8 answers
    ``/backfill`` 200 with the events it may not show us redacted. The note lists the
    statuses."""
    room_id = ctx.user.create_room(preset="public_chat", room_version=version)
    secret = f"not for outsiders {secrets.token_hex(6)}"
    event_id = ctx.user.send_message(room_id, secret)
    seen: list[str] = []
    for name, method, template, status in _NOT_IN_ROOM:
        path = V1 + template.format(room=q(room_id), event=q(event_id))
        body = {"earliest_events": [], "latest_events": [event_id], "limit": 10}
        answer = ctx.peer.federation_request(
            ctx.server_name, method, path, body if method == "POST" else None
        )
        seen.append(f"{name} {answer.status}")
        what = f"its /{name} to a server not in the room"
        if status is not None:
            expect(what, status, answer.status, answer=answer.body)
        elif not (400 <= answer.status < 500 or answer.status == 200):
            raise CheckFailed(
                what, "a 4xx refusal or 200 without its content", answer.status, answer.body
            )
        if leaks(secret, answer.body):
            raise CheckFailed(what, "no event served", "its message's content")
    answer = ctx.peer.federation_request(ctx.server_name, "GET", f"{V1}/event/{q(event_id)}")
    seen.append(f"event {answer.status}")
    if leaks(secret, answer.body):
        raise CheckFailed("its /event to a server not in the room", "no content", answer.body)
    return "; ".join(seen)


def _room_across_our_join(ctx: Context, version: str, visibility: str) -> tuple[str, str, str, str]:
    """A public room with ``history_visibility`` ``visibility``; its user sends a secret
    message, we join, it sends another, which reaches us. Room ID, the secret, the
    secret's event ID, the later message's event ID."""
    room_id = ctx.user.create_room(preset="public_chat", room_version=version)
    ctx.user.send_state(room_id, "m.room.history_visibility", {"history_visibility": visibility})
    secret = f"before you came {secrets.token_hex(6)}"
    hidden = ctx.user.send_message(room_id, secret)
    ctx.peer.join(room_id, PEER_USER, via=[ctx.server_name])
    after = ctx.user.send_message(room_id, "after you came")
    wait_until(
        "its message after our join, at us",
        lambda: any(e.event_id == after for e in ctx.peer.events(room_id)) or None,
        expected="received",
    )
    return room_id, secret, hidden, after


def it_honours_joined_history_visibility(ctx: Context, version: str) -> str:
    """With ``history_visibility`` ``joined``, a message sent before we joined is not
    served with its content to us (no user of ours was joined when it was sent:
    "Events are accessible to newly joined members from the point they joined the room
    onwards"): not by ``/event``, ``/backfill`` or ``/get_missing_events`` (left out,
    refused or redacted are all right: the note says which), while a message sent after
    our join is served whole."""
    room_id, secret, hidden, after = _room_across_our_join(ctx, version, "joined")
    ways: list[str] = []
    event = ctx.peer.federation_request(ctx.server_name, "GET", f"{V1}/event/{q(hidden)}")
    ways.append(f"event {event.status}" + (" (redacted)" if event.status == 200 else ""))
    backfill = ctx.peer.federation_request(
        ctx.server_name, "GET", f"{V1}/backfill/{q(room_id)}?v={q(after)}&limit={BACKFILL_ALL}"
    )
    missing = ctx.peer.federation_request(
        ctx.server_name,
        "POST",
        f"{V1}/get_missing_events/{q(room_id)}",
        {"earliest_events": [], "latest_events": [after], "limit": 20, "min_depth": 0},
    )
    for name, answer in (("event", event), ("backfill", backfill), ("get_missing_events", missing)):
        if leaks(secret, answer.body):
            raise CheckFailed(
                f"its /{name} with a message sent before our join (history_visibility joined)",
                "the message left out, refused or redacted",
                "its content served",
            )
    expect("its /backfill status", 200, backfill.status, answer=backfill.body)
    pdus = backfill.body.get("pdus") if isinstance(backfill.body, dict) else None
    listed = {p.get("content", {}).get("body") for p in pdus or [] if isinstance(p, dict)}
    if "after you came" not in listed:
        raise CheckFailed("its backfill from the message after our join", "that message", listed)
    in_backfill = any(
        isinstance(p, dict) and p.get("type") == "m.room.message" and p.get("content") == {}
        for p in pdus or []
    )
    ways.append("backfill redacts it" if in_backfill else "backfill leaves it out")
    return "; ".join(ways)


def _missing_events_across_our_join(ctx: Context, version: str, visibility: str) -> tuple[str, Any]:
    """:func:`_room_across_our_join`, then our ``/get_missing_events`` from the message
    after our join back to the room's start (limit 20). The secret, and the answer."""
    room_id, secret, _, after = _room_across_our_join(ctx, version, visibility)
    answer = ctx.peer.federation_request(
        ctx.server_name,
        "POST",
        f"{V1}/get_missing_events/{q(room_id)}",
        {"earliest_events": [], "latest_events": [after], "limit": 20, "min_depth": 0},
    )
    return secret, answer


def _history_served_whole(visibility: str) -> VersionTest:
    def check(ctx: Context, version: str) -> None:
        secret, answer = _missing_events_across_our_join(ctx, version, visibility)
        what = (
            f"its /get_missing_events (history_visibility {visibility}) of a message sent"
            f" before our join (answer status {answer.status})"
        )
        if not leaks(secret, answer.body):
            raise CheckFailed(what, "the message served with its content", "not served whole")

    check.__doc__ = (
        f"With ``history_visibility`` ``{visibility}``, a message sent before we joined is"
        ' served whole by ``/get_missing_events`` (Client-Server API, "Room History'
        f' Visibility": {visibility} history is visible to any member, "even those sent'
        " when the member was not a part of the room\"; Complement's"
        " TestInboundCanReturnMissingEvents)."
    )
    return check


def it_hides_invited_history(ctx: Context, version: str) -> str:
    """With ``history_visibility`` ``invited``, a message sent before we joined (we were
    never invited) is not served with its content by ``/get_missing_events`` ("Events
    are accessible to newly joined members from the point they were invited onwards"):
    left out, refused or redacted (the note says which; Complement's
    TestInboundCanReturnMissingEvents, invited)."""
    secret, answer = _missing_events_across_our_join(ctx, version, "invited")
    if leaks(secret, answer.body):
        raise CheckFailed(
            "its /get_missing_events (history_visibility invited) of a message sent before"
            " our join",
            "the message left out, refused or redacted",
            "its content served",
        )
    events = answer.body.get("events") if isinstance(answer.body, dict) else None
    redacted = any(
        isinstance(e, dict) and e.get("type") == "m.room.message" and e.get("content") == {}
        for e in events or []
    )
    return f"status {answer.status}, " + ("redacted" if redacted else "left out")


AREA: list[tuple[str, str, VersionTest]] = [
    ("serving.state_ids", STATE_IDS, it_serves_state_ids),
    ("serving.state", STATE, it_serves_state),
    ("serving.event", EVENT, it_serves_an_event),
    ("serving.event_auth", EVENT_AUTH, it_serves_an_event_auth_chain),
    ("serving.backfill", BACKFILL, it_serves_backfill),
    ("serving.get_missing_events", MISSING, it_serves_missing_events),
    ("serving.get_missing_events_limit", MISSING, it_serves_missing_events_to_the_limit),
    ("serving.history_visibility_shared", MISSING, _history_served_whole("shared")),
    (
        "serving.history_visibility_world_readable",
        MISSING,
        _history_served_whole("world_readable"),
    ),
]

#: Negative tests and the positive baselines (of the same room version) they need.
NEGATIVE: list[tuple[str, str, VersionTest, tuple[str, ...]]] = [
    (
        "serving.refused_to_a_server_not_in_the_room",
        STATE_IDS,
        it_refuses_a_server_not_in_the_room,
        (
            "serving.state_ids",
            "serving.state",
            "serving.event_auth",
            "serving.backfill",
            "serving.get_missing_events",
        ),
    ),
    (
        "serving.history_visibility_invited",
        MISSING,
        it_hides_invited_history,
        ("serving.history_visibility_shared", "serving.history_visibility_world_readable"),
    ),
    (
        "serving.history_visibility_joined",
        HISTORY,
        it_honours_joined_history_visibility,
        ("serving.event", "serving.backfill", "serving.get_missing_events"),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version: the baselines, then the negatives."""
    return per_version(AREA, versions) + per_version(NEGATIVE, versions)
