"""What it does when what it must fetch from us is refused or malformed: an auth event we
will not serve, a prev event we serve only by sending it later, a missing event whose JSON
canonical JSON forbids. Per room version (Complement's TestCorruptedAuthChain,
TestUnrejectRejectedEvents, TestOutboundFederationIgnoresMissingEventWithBadJSONForRoomVersion6).

Spec: Server-Server API v1.19, "Checks performed on receipt of a PDU", "Retrieving
events", "Backfilling and retrieving missing events"; Room Versions 10-12, "Canonical
JSON" and "Authorization rules"; appendix "Canonical JSON".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from stubserver.conformance.context import (
    PEER_USER,
    AreaEntry,
    Context,
    VersionTest,
    client_call,
    expect,
    expect_accepted,
    per_version,
    q,
    visible_event,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest, Skipped
from stubserver.conformance.suite_auth import (
    MEMBER,
    POWER_LEVELS,
    auth_ids,
    peer_state,
    served_status,
)

CHECKS = "Checks performed on receipt of a PDU"
FEDERATION: Final = "/_matrix/federation/v1/"
#: State events its room is created with (Complement pads with 100 membership changes):
#: with this many, a server that counts what it lacks against the state and auth chain
#: at an event (Synapse fetches the whole /state when it lacks a tenth) fetches the few
#: events it lacks one by one with /event, the way Complement's test takes. In the
#: room's initial state (its own events: the test took 2.2 s against Synapse, 0.6 s without
#: padding, 8.7 s with 30 state events of ours sent over federation instead).
PADDING_STATE_EVENTS: Final = 30
PADDING_TYPE: Final = "org.stubserver.conformance.padding"
#: The display names of our member events A to E; B is the one we will not serve.
CHAIN: Final = ("A", "B", "C", "D", "E")
#: What may follow from B's absence: C, D and E (whose auth chain runs through B) must not
#: become state, and B cannot (we never served it).
NOT_STATE: Final = frozenset(CHAIN[1:])
#: A /messages page larger than any test room.
BIG_PAGE: Final = 100


def asked_about(requests: Sequence[Mapping[str, Any]], event_ids: Sequence[str]) -> Counter[str]:
    """How often its requests (our request log's entries) asked about ``event_ids``, by
    endpoint and our status (``"/event 404"``): the path or the query names one, or a
    get_missing_events body names one in ``latest_events`` (pure)."""
    wanted = set(event_ids)
    counts: Counter[str] = Counter()
    for entry in requests:
        parts = urlsplit(str(entry.get("uri", "")))
        path = unquote(parts.path)
        if not path.startswith(FEDERATION):
            continue
        endpoint = path[len(FEDERATION) :].split("/")[0]
        named = any(i in path or i in unquote(parts.query) for i in wanted)
        content = entry.get("content")
        latest = content.get("latest_events") if isinstance(content, dict) else None
        if isinstance(latest, list) and wanted & {str(e) for e in latest}:
            named = True
        if named:
            counts[f"/{endpoint} {entry.get('status')}"] += 1
    return counts


def asked_note(counts: Counter[str]) -> str:
    """``counts`` of :func:`asked_about` as a note, most asked first (pure)."""
    if not counts:
        return "nothing"
    return ", ".join(f"{what} x{n}" for what, n in counts.most_common())


def _member_displayname(ctx: Context, room_id: str, user_id: str) -> str | None:
    """The display name of ``user_id``'s member event in its current state, as its
    client reads it (None: none set)."""
    content = client_call(ctx.user, "GET", f"/rooms/{q(room_id)}/state/{MEMBER}/{q(user_id)}")
    name = content.get("displayname") if isinstance(content, dict) else None
    return name if isinstance(name, str) else None


def unfetchable_auth_event(ctx: Context, version: str) -> str:
    """Our member events A to E (display names changing), each the auth event of the
    next, withheld; then messages on E, the last sent; we refuse to serve B (404 on
    ``/event``, left out of ``/state``, ``/event_auth`` and ``get_missing_events``), in a
    room created with 30 padding state events that make a server fetch what it lacks one
    by one. C, D and E
    cannot be shown to pass the authorization rules "based on the event's auth events"
    without B (otherwise "it is rejected"; Room Versions, "Authorization rules":
    "Considering the event's auth_events"), so none of them may become state: once a
    marker of ours sent after them (on the state before A, its auth events from then) is
    readable, our member event in its current state is not B, C, D or E (the join, or A,
    which needs only what it has). Rejecting them, or not taking them, are both right; the
    note says what it asked about B (Complement's TestCorruptedAuthChain; Dendrite falls
    back to ``/event_auth``, which leaves B out too)."""
    padding = [
        {"type": PADDING_TYPE, "state_key": str(i), "content": {"n": i}}
        for i in range(PADDING_STATE_EVENTS)
    ]
    room_id = ctx.user.create_room(
        preset="public_chat", room_version=version, extra={"initial_state": padding}
    )
    ctx.peer.join(room_id, PEER_USER, via=[ctx.server_name])
    us = ctx.peer_user_id()
    state = peer_state(ctx, room_id)
    marker_auth = auth_ids(state, version, POWER_LEVELS, (MEMBER, us))
    before = ctx.peer.room_state(room_id)["forward_extremities"]
    start = len(ctx.peer.requests())
    chain = {
        name: ctx.peer.send(
            room_id,
            MEMBER,
            {"membership": "join", "displayname": name},
            sender=PEER_USER,
            state_key=us,
            destinations=[],
        )
        for name in CHAIN
    }
    ctx.peer.set_served(room_id, [chain["B"]], served=False)
    for text in ("for /state_ids", "for /get_missing_events"):
        ctx.send_text(room_id, text, destinations=[])
    ctx.send_text(room_id, "for /send")
    marker = ctx.peer.send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": "marker after the chain"},
        sender=PEER_USER,
        prev_events=before,
        auth_events=marker_auth,
    )
    ctx.wait_visible(room_id, marker, "our marker sent after the chain")
    name = _member_displayname(ctx, room_id, us)
    if name in NOT_STATE:
        raise CheckFailed(
            "our member event in its current state (B is never served; C, D and E need B)"
            " display name",
            f"none of {', '.join(sorted(NOT_STATE))} (the join's, or A)",
            f"{name!r} ({chain[name]})",
        )
    asked = asked_about(ctx.peer.requests(start), [chain["B"]])
    return f"our member event's display name there: {name!r}; about B it asked: {asked_note(asked)}"


def refused_prev_event_taken_when_sent(ctx: Context, version: str) -> str:
    """Our message A is withheld and we refuse to serve it; B, built on A, is sent: it
    cannot fetch A. Then A is sent, then B again, each in a new transaction. Both are now
    events whose prev_events and auth events it holds and that pass every check ("Checks
    performed on receipt of a PDU"), so its client reads A and B, B after A in
    ``/messages`` (B's prev event is A). Whether B was taken at its first delivery (its
    state fetched with ``/state_ids``: allowed) or only the second (Synapse "rejects" it
    for a missing prev: its choice, not a term of the spec) is not judged; what it
    asked about A is the note (Complement's TestUnrejectRejectedEvents)."""
    room_id = ctx.join_homeserver_room(version)
    start = len(ctx.peer.requests())
    first = ctx.send_text(room_id, "A (refused)", destinations=[])
    ctx.peer.set_served(room_id, [first], served=False)
    second = ctx.send_text(room_id, "B (on A)")
    ctx.peer.resend(room_id, first)
    ctx.wait_visible(room_id, first, "A, sent after B")
    ctx.peer.resend(room_id, second)
    ctx.wait_visible(room_id, second, "B, sent again after A")
    chunk = ctx.user.messages(room_id, limit=BIG_PAGE)["chunk"]
    order = [e["event_id"] for e in chunk if e.get("event_id") in (first, second)]
    expect("A and B in its client's /messages (newest first)", [second, first], order)
    asked = asked_about(ctx.peer.requests(start), [first, second])
    return f"about A and B it asked: {asked_note(asked)}"


def _bad_json_discarded(content_json: str, what: str) -> VersionTest:
    """The test of a missing event whose content holds ``what`` (``content_json``)."""

    def test(ctx: Context, version: str) -> str:
        room_id = ctx.join_homeserver_room(version)
        before = ctx.peer.room_state(room_id)["forward_extremities"]
        start = len(ctx.peer.requests())
        planted = ctx.peer.plant(room_id, "m.room.message", content_json, sender=PEER_USER)
        built_on = ctx.send_text(room_id, "Message 2 (on the planted event)", prev_events=[planted])
        marker = ctx.send_text(room_id, "marker after the planted event", prev_events=before)
        ctx.wait_visible(room_id, marker, "our marker sent after the planted event")
        asked = asked_about(ctx.peer.requests(start), [built_on])
        if not any(k.startswith("/get_missing_events 200") for k in asked):
            raise Skipped(
                "it never asked get_missing_events for the event built on the planted one,"
                f" so the planted PDU never reached it (it asked: {asked_note(asked)})"
            )
        expect(
            f"the planted event (content with {what}) as its client sees it",
            None,
            visible_event(ctx.user, room_id, planted),
        )
        status = served_status(ctx, planted)
        if status == 200:
            raise CheckFailed(f"its /event of the planted event (with {what})", "a refusal", 200)
        event_id = ctx.user.send_message(room_id, "after the planted event")
        following = ctx.peer.wait_for_event(room_id, event_id=event_id)
        expect_accepted("its next event (the room goes on)", following)
        cited = following.pdu.get("prev_events") or []
        expect(
            f"the planted event (with {what}) in its next event's prev_events",
            False,
            planted in cited,
        )
        taken = visible_event(ctx.user, room_id, built_on) is not None
        return (
            f"asked: {asked_note(asked)}; our event built on it"
            f" {'readable' if taken else 'not taken'} (either is right)"
        )

    test.__doc__ = (
        f"A missing event whose content holds {what}, in our get_missing_events answer"
        " (we build an event on it and send that), is discarded: room versions 6 and later"
        ' "MUST strictly enforce the JSON format specified in the appendices. This'
        ' translates to ... discarding of events over federation", and canonical JSON'
        ' allows only "integers in the range [-(2**53)+1, (2**53)-1], represented without'
        ' exponents or decimal places". Once a marker of ours is readable: its client does'
        " not read it, its /event does not serve it, and the room goes on: its next event"
        " is accepted and does not name it in prev_events. Our event built on it may be"
        " taken (its state fetched with /state_ids) or not (the note says). Skipped when it"
        " never asked get_missing_events (then the PDU never reached it). Complement's"
        " TestOutboundFederationIgnoresMissingEventWithBadJSONForRoomVersion6 (a float, v6:"
        " the same rule holds in every room version since)."
    )
    return test


#: The positive baselines: an auth event it must fetch is taken when valid; a missing
#: chain is fetched and taken.
AUTH_BASELINE: Final = ("rejection.accepted_auth_event_fetched",)
GAP_BASELINE: Final = ("gaps.chain_filled_in_order",)

AREA: list[AreaEntry] = [
    (
        "fetching.unfetchable_auth_event_chain_not_state",
        CHECKS,
        unfetchable_auth_event,
        AUTH_BASELINE,
    ),
    ("fetching.refused_prev_event_taken_when_sent", CHECKS, refused_prev_event_taken_when_sent),
    (
        "fetching.missing_event_with_float_discarded",
        CHECKS,
        _bad_json_discarded('{"bad_val":1.1,"body":"Message 1"}', "a float"),
        GAP_BASELINE,
    ),
    (
        "fetching.missing_event_with_big_integer_discarded",
        CHECKS,
        _bad_json_discarded(
            '{"bad_val":9007199254740992,"body":"Message 1"}', "an integer above 2**53-1"
        ),
        GAP_BASELINE,
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
