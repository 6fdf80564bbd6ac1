"""An event its user sends between our ``make_join`` and our ``send_join`` is not lost to
us, per room version (Synapse's own Complement test
``TestEventBetweenMakeJoinAndSendJoinIsNotLost``, area A).

Our join, built from the template ``make_join`` gave before that event, does not cite
it: once the join is in, its room has two forward extremities, the event and our join.
The spec obliges no server to tie them at once (Synapse's test says so: it sends an
``m.dummy`` event of its own accord), so the test makes its user send one more message
after the join, which its server must build on both: ``prev_events`` are "Event IDs for
the most recent events in the room that the homeserver was aware of when it made this
event" (Server-Server API v1.19, "PDUs"). The event is reachable to us when a PDU it
sends us after the join is the event itself or cites it in ``prev_events`` (the note
says which, and whether a PDU of its own accord came first).
"""

from __future__ import annotations

from typing import Any

from stubserver.conformance import handshakes
from stubserver.conformance.context import (
    AreaEntry,
    Context,
    expect,
    membership_is,
    per_version,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.versions import room_version
from stubserver.testing import WaitTimeout

PDUS = "PDUs"
SEND = "/_matrix/federation/v1/send/"


def _pdus(entry: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    """The PDUs of ``room_id`` in a logged ``PUT /send`` (pure)."""
    content = entry.get("content")
    pdus = content.get("pdus") if isinstance(content, dict) else None
    return [p for p in pdus or [] if isinstance(p, dict) and p.get("room_id") == room_id]


def reached(
    pdus: list[dict[str, Any]], version: str, missed: str, follow_up: str | None
) -> str | None:
    """How ``missed`` reached us among ``pdus`` (pure): sent itself, or cited in the
    ``prev_events`` of its follow-up message (``follow_up``) or of another of its events;
    None when not yet."""
    rv = room_version(version)
    for pdu in pdus:
        event_id = compute_event_id(pdu, rv)
        if event_id == missed:
            return "the event itself was sent to us"
        prevs = pdu.get("prev_events")
        if isinstance(prevs, list) and missed in prevs:
            if event_id == follow_up:
                return "cited in prev_events by the follow-up message"
            return f"cited in prev_events by an {pdu.get('type')} of its own accord"
    return None


def event_between_make_join_and_send_join_reachable(ctx: Context, version: str) -> str:
    """Its user sends a message after our ``make_join`` and before our ``send_join``;
    after the join its user sends another: a PDU it sends us after the join is that
    message or cites it among its ``prev_events`` ("the most recent events in the room
    that the homeserver was aware of", "PDUs"), so we can reach it."""
    room_id = ctx.user.create_room(preset="public_chat", room_version=version)
    user_id = ctx.peer_user_id(handshakes.local("late-joiner"))
    template = handshakes.template(ctx, "join", room_id, user_id, version)
    missed = ctx.user.send_message(room_id, "between your make_join and your send_join")
    start = len(ctx.peer.requests())
    event_id, pdu = handshakes.signed(ctx, template, version)
    answer = handshakes.send(ctx, "join", room_id, event_id, pdu)
    expect(f"its send_join status (answer {str(answer.body)[:300]})", 200, answer.status)
    wait_until(
        f"{user_id} in its member list",
        membership_is(ctx.user, room_id, user_id, "join"),
        expected="membership 'join'",
    )
    follow_up = ctx.user.send_message(room_id, "after your join")
    seen: dict[str, None] = {}

    def match(entry: dict[str, Any]) -> bool:
        pdus = _pdus(entry, room_id)
        seen.update({f"{p.get('type')} citing {p.get('prev_events')}": None for p in pdus})
        return reached(pdus, version, missed, follow_up) is not None

    try:
        entry = ctx.peer.wait_for_request(SEND, method="PUT", match=match, start=start)
    except WaitTimeout:
        raise CheckFailed(
            f"its message {missed}, sent between our make_join and send_join, in a PDU it "
            "sent us after the join or among such a PDU's prev_events (its follow-up "
            f"message {follow_up} must cite the room's most recent events)",
            "within 30 s",
            f"{'; '.join(seen) or 'no PDU of the room'} (the last seen)",
        ) from None
    how = reached(_pdus(entry, room_id), version, missed, follow_up)
    assert how is not None  # the match found it
    return how


AREA: list[AreaEntry] = [
    (
        "joins.event_between_make_join_and_send_join_reachable",
        PDUS,
        event_between_make_join_and_send_join_reachable,
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
