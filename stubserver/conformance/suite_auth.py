"""Event authorization as its consequences show over federation: a rejected event and a
soft-failed one told apart by what the spec says follows from each (what its next events
reference, what it serves, whether an event that depends on it is accepted), an event
whose auth event was rejected, the state resolution of a real fork, and redactions both
ways. Per room version.

Spec: Server-Server API v1.19, "Checks performed on receipt of a PDU", "Rejection",
"Soft failure", "Room State Resolution"; Room Versions, "Authorization rules" ("If there
are entries which were themselves rejected under the checks performed on receipt of a
PDU, reject"), "State resolution" (v2; v2.1 for room version 12), "Redactions";
Client-Server API v1.19, "Redactions".
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from stubserver.conformance.context import (
    PEER_USER,
    PEER_USER_2,
    Context,
    NotYet,
    SyncStream,
    VersionTest,
    client_call,
    expect,
    expect_accepted,
    per_version,
    q,
    visible_event,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest, Skipped
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.versions import room_version
from stubserver.testing import HomeserverError

V1 = "/_matrix/federation/v1"
REJECTION = "Rejection"
SOFT_FAILURE = "Soft failure"
AUTH_RULES = "Authorization rules"
STATE_RES = "Room State Resolution"
#: Redactions travel as PDUs; what they do is the room version's ("Redactions") and the
#: Client-Server API's, pages the links do not reach: the section linked is "PDUs".
REDACTIONS = "PDUs"
CREATE = ("m.room.create", "")
POWER_LEVELS = ("m.room.power_levels", "")
TOPIC = ("m.room.topic", "")
MEMBER = "m.room.member"
REDACTION = "m.room.redaction"

#: ``{(type, state_key): (event_id, pdu)}``: a room's current state.
StateMap = dict[tuple[str, str], tuple[str, dict[str, Any]]]


def peer_state(ctx: Context, room_id: str) -> StateMap:
    """The room's current state as the peer holds it."""
    info = ctx.peer.room_state(room_id)
    version = room_version(str(info["room_version"]))
    return {
        (str(p["type"]), str(p["state_key"])): (compute_event_id(p, version), p)
        for p in info["state"]
    }


def auth_ids(state: StateMap, version: str, *keys: tuple[str, str]) -> list[str]:
    """The IDs of ``keys`` in ``state`` as auth events: the create event first, except in
    v12 where the room ID implies it ("Room version 12": it is never listed)."""
    wanted = keys if room_version(version).room_id_is_create_hash else (CREATE, *keys)
    return [state[k][0] for k in wanted]


def its_next_event(ctx: Context, room_id: str, text: str) -> dict[str, Any]:
    """Its user sends a message; the PDU as it reached us."""
    event_id = ctx.user.send_message(room_id, text)
    return dict(ctx.peer.wait_for_event(room_id, event_id=event_id).pdu)


def served_status(ctx: Context, event_id: str) -> int:
    """The status of its ``/event`` of ``event_id`` to us."""
    return ctx.peer.federation_request(ctx.server_name, "GET", f"{V1}/event/{q(event_id)}").status


def send_escalation(
    ctx: Context, room_id: str, state: StateMap, prev_events: list[str], **options: Any
) -> str:
    """Our level-0 user sends power levels that raise it to 100 (not its to send) on
    ``prev_events``; ``options`` as ``Peer.send``'s. Its event ID."""
    content = dict(state[POWER_LEVELS][1]["content"])
    content["users"] = {**(content.get("users") or {}), ctx.peer_user_id(): 100}
    return ctx.peer.send(
        room_id,
        "m.room.power_levels",
        content,
        sender=PEER_USER,
        state_key="",
        prev_events=prev_events,
        **options,
    )


def send_authorised_by(
    ctx: Context,
    room_id: str,
    version: str,
    state: StateMap,
    levels: str,
    *,
    prev_events: list[str],
) -> str:
    """Our message on ``prev_events`` whose auth events name the power levels ``levels``
    (with the create event and our member event of ``state``). Its event ID."""
    return ctx.peer.send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": f"authorised by {levels}"},
        sender=PEER_USER,
        prev_events=prev_events,
        auth_events=[*auth_ids(state, version, (MEMBER, ctx.peer_user_id())), levels],
    )


def _expect_not_cited(ctx: Context, room_id: str, ids: list[str], what: str) -> None:
    """Its next event names none of ``ids`` in prev_events."""
    following = its_next_event(ctx, room_id, f"after the {what}")
    cited = sorted(set(ids) & set(following.get("prev_events") or []))
    expect(f"the {what} its next event names in prev_events", [], cited)


def rejected_event(ctx: Context, version: str) -> str:
    """An ``m.room.power_levels`` our level-0 user has no power for (it raises our user
    to 100) is rejected, and what the spec says follows from a rejection follows: it
    "should neither be relayed to clients nor be included as a prev event in any new
    events generated by the server"; the state is calculated "not updating with the
    rejected event"; and an event "which were themselves rejected" names in its
    auth_events is rejected (the auth rules of every room version). So, once a marker of
    ours sent after them is readable: its client reads neither the power levels nor our
    message whose auth_events name them (that message passes if the power levels were
    accepted, or only soft-failed); the power levels its client reads are the old ones;
    its next event names neither in prev_events. The note gives the status of its
    ``/event`` of the rejected event (the spec says nothing of serving it)."""
    room_id = ctx.join_homeserver_room(version)
    state = peer_state(ctx, room_id)
    extremities = ctx.peer.room_state(room_id)["forward_extremities"]
    rejected = send_escalation(ctx, room_id, state, extremities)
    dependent = send_authorised_by(ctx, room_id, version, state, rejected, prev_events=[rejected])
    marker = ctx.send_text(room_id, "marker after the rejected one", prev_events=extremities)
    ctx.wait_visible(room_id, marker, "our marker sent after the rejected event")
    expect(
        "the unauthorized event as its client sees it",
        None,
        visible_event(ctx.user, room_id, rejected),
    )
    expect(
        "our message whose auth_events name the rejected event, as its client sees it",
        None,
        visible_event(ctx.user, room_id, dependent),
    )
    levels = [
        e.get("event_id") for e in ctx.user.state(room_id) if e.get("type") == POWER_LEVELS[0]
    ]
    expect("the power levels event its client reads", [state[POWER_LEVELS][0]], levels)
    _expect_not_cited(ctx, room_id, [rejected, dependent], "rejected events")
    return f"its /event of the rejected event: {served_status(ctx, rejected)}"


def soft_failed_event(ctx: Context, version: str) -> str:
    """Its user bans our second user; that user's message built on the pre-ban state
    (prev and auth events from before the ban) passes auth at its place in the graph but
    not against the current state, so it is "soft failed", and what the spec says
    follows from that follows: it is not "relayed to the client nor ... referenced by
    new events created by the homeserver"; "Soft failed events are otherwise handled as
    usual": "A soft failed event should be returned in response to federation requests
    where appropriate (e.g. in /event/<event_id>)", and an event of ours that names it
    in prev_events is handled as normal. So, once a marker of ours sent after it is
    readable: its client does not read it; its next event does not name it in
    prev_events; its ``/event`` serves it (a rejected event need not be); our later
    message naming it in prev_events is readable."""
    room_id = ctx.join_homeserver_room(version, users=(PEER_USER, PEER_USER_2))
    before = ctx.peer.send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "before"}, sender=PEER_USER_2
    )
    ctx.wait_visible(room_id, before, "our second user's message before the ban")
    auth_events = ctx.peer.wait_for_event(room_id, event_id=before).pdu["auth_events"]
    banned = ctx.peer_user_id(PEER_USER_2)
    client_call(ctx.user, "POST", f"/rooms/{q(room_id)}/ban", {"user_id": banned})
    ctx.peer.wait_for_event(
        room_id,
        type="m.room.member",
        state_key=banned,
        match=lambda e: e.content.get("membership") == "ban",
    )
    late = ctx.peer.send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": "banned"},
        sender=PEER_USER_2,
        prev_events=[before],
        auth_events=auth_events,
    )
    marker = ctx.send_text(room_id, "after the soft-failed one")
    ctx.wait_visible(room_id, marker, "our marker sent after the soft-failed event")
    expect(
        "the soft-failed event as its client sees it", None, visible_event(ctx.user, room_id, late)
    )
    _expect_not_cited(ctx, room_id, [late], "soft-failed event")
    answer = ctx.peer.federation_request(ctx.server_name, "GET", f"{V1}/event/{q(late)}")
    pdus = answer.body.get("pdus") if isinstance(answer.body, dict) else None
    served = [compute_event_id(p, room_version(version)) for p in pdus or []]
    expect(
        f"its /event of the soft-failed event (status {answer.status})",
        [late],
        served,
    )
    head = ctx.peer.room_state(room_id)["forward_extremities"]
    referring = ctx.send_text(room_id, "names the soft-failed one", prev_events=[late, *head])
    ctx.wait_visible(room_id, referring, "our message naming the soft-failed event in prev_events")
    return "served by /event; a later event naming it accepted"


def fetches(requests: list[dict[str, Any]], ids: list[str]) -> list[tuple[str, int]]:
    """Its requests (our request log's entries) that name one of ``ids`` in their path:
    (``METHOD /endpoint``, our answer's status), in order (pure)."""
    found = []
    for entry in requests:
        uri = unquote(str(entry.get("uri", ""))).split("?")[0]
        if any(i in uri for i in ids):
            endpoint = (uri.split("/") + [""] * 5)[4]
            found.append((f"{entry.get('method')} /{endpoint}", int(entry.get("status") or 0)))
    return found


def _fetched_note(found: list[tuple[str, int]]) -> str:
    return "it asked: " + (", ".join(f"{r} {s}" for r, s in found) or "nothing about them")


def accepted_auth_event_fetched(ctx: Context, version: str) -> str:
    """Our message whose auth_events name our member event it has never seen (a
    display name change, valid, sent to nobody) is accepted: it fetches the auth event
    ("Retrieving event authorization information") and its client reads the message.
    The positive baseline of ``rejection.rejected_auth_event_fetched``."""
    room_id = ctx.join_homeserver_room(version)
    state = peer_state(ctx, room_id)
    us = ctx.peer_user_id()
    extremities = ctx.peer.room_state(room_id)["forward_extremities"]
    start = len(ctx.peer.requests())
    member = dict(state[(MEMBER, us)][1]["content"])
    withheld = ctx.peer.send(
        room_id,
        MEMBER,
        {**member, "displayname": "renamed unseen"},
        sender=PEER_USER,
        state_key=us,
        destinations=[],
    )
    message = ctx.peer.send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": "authorised by a member event you must fetch"},
        sender=PEER_USER,
        prev_events=extremities,
        auth_events=[*auth_ids(state, version, POWER_LEVELS), withheld],
    )
    ctx.wait_visible(room_id, message, "our message whose auth event it must fetch")
    return _fetched_note(fetches(ctx.peer.requests(start), [withheld, message]))


def rejected_auth_event_fetched(ctx: Context, version: str) -> str:
    """Our message whose auth_events name power levels it has never seen and that it must
    reject when it fetches them (our level-0 user raising itself to 100; sent to nobody)
    is rejected: "If there are entries which were themselves rejected under the checks
    performed on receipt of a PDU, reject" holds for an auth event known only as an
    outlier too (Complement's TestInboundFederationRejectsEventsWithRejectedAuthEvents).
    Once a marker of ours sent after it is readable, its client does not read the message
    and its next event does not name it in prev_events; and it fetched the auth event
    from us (a request naming the message or the auth event that we answered 200: a
    message dropped because its auth event stayed unknown was not judged). The note says
    how it fetched it (``/event_auth`` or ``/event``)."""
    room_id = ctx.join_homeserver_room(version)
    state = peer_state(ctx, room_id)
    extremities = ctx.peer.room_state(room_id)["forward_extremities"]
    start = len(ctx.peer.requests())
    withheld = send_escalation(ctx, room_id, state, extremities, destinations=[])
    dependent = send_authorised_by(ctx, room_id, version, state, withheld, prev_events=extremities)
    marker = ctx.send_text(room_id, "marker after the fetched one", prev_events=extremities)
    ctx.wait_visible(room_id, marker, "our marker sent after the message")
    expect(
        "our message whose auth event it fetched and must reject, as its client sees it",
        None,
        visible_event(ctx.user, room_id, dependent),
    )
    _expect_not_cited(ctx, room_id, [dependent, withheld], "message with a rejected auth event")
    found = fetches(ctx.peer.requests(start), [withheld, dependent])
    if not any(status == 200 for _, status in found):
        raise CheckFailed(
            "its requests for the auth event it lacked (else the message was dropped unjudged,"
            " not rejected)",
            "one we answered 200",
            found or "none",
        )
    return _fetched_note(found)


@dataclass(frozen=True)
class DeputyRoom:
    """Our room where our second user has power 50 (the topic needs 50) and the topic
    is set; its user not yet joined."""

    room_id: str
    second: str
    levels: dict[str, Any]
    old_topic: str


def deputy_room(ctx: Context, version: str) -> DeputyRoom:
    """Our public room of ``version``, our second user joined with power 50, the topic set."""
    room_id = ctx.peer.create_room(PEER_USER, room_version=version, preset="public_chat").room_id
    ctx.peer.join(room_id, PEER_USER_2)
    second = ctx.peer_user_id(PEER_USER_2)
    levels = dict(peer_state(ctx, room_id)[POWER_LEVELS][1]["content"])
    levels["users"] = {**(levels.get("users") or {}), second: 50}
    levels["events"] = {**(levels.get("events") or {}), "m.room.topic": 50}
    ctx.peer.send(room_id, "m.room.power_levels", levels, sender=PEER_USER, state_key="")
    old_topic = ctx.peer.send(
        room_id, "m.room.topic", {"topic": "the old topic"}, sender=PEER_USER, state_key=""
    )
    return DeputyRoom(room_id, second, levels, old_topic)


def fork_resolved(ctx: Context, version: str) -> str:
    """A real fork, resolved as the room version's state resolution says (v2; v2.1 in
    room version 12). In our room, where our second user has power 50: on one branch our
    first user (100) lowers our second user to 0; on the other, our second user sets the
    topic twice (allowed where it stands). A merge event names both branches' ends. The
    state at the merge, by the spec's algorithm (computed by our own state resolution),
    keeps the old topic: the power levels change is a power event, ordered first, and the
    topics then fail the iterative auth checks against it. Deepest-branch-wins or
    power-blind resolution would give the second branch's topic. Its client's room state
    and its ``/state_ids`` at the merge must equal ours. The branches reach it only
    through the merge (it fetches them: ``get_missing_events`` or ``/state_ids``)."""
    room = deputy_room(ctx, version)
    room_id, second, levels, old_topic = room.room_id, room.second, room.levels, room.old_topic
    ctx.user.join(room_id, via=[ctx.peer.server_name])
    base = ctx.peer.room_state(room_id)["forward_extremities"]
    wait_until(
        "the room's topic at its client before the fork",
        lambda: _state_ids_of(ctx, room_id).get(TOPIC) == old_topic or None,
        expected=old_topic,
    )
    state = peer_state(ctx, room_id)
    lowered = {**levels, "users": {**levels["users"], second: 0}}
    demotion = ctx.peer.send(
        room_id,
        "m.room.power_levels",
        lowered,
        sender=PEER_USER,
        state_key="",
        prev_events=base,
        destinations=[],
    )
    branch_auth = auth_ids(state, version, POWER_LEVELS, (MEMBER, second))
    topic = base
    for text in ("second branch, first topic", "second branch, last topic"):
        topic = [
            ctx.peer.send(
                room_id,
                "m.room.topic",
                {"topic": text},
                sender=PEER_USER_2,
                state_key="",
                prev_events=topic,
                auth_events=branch_auth,
                destinations=[],
            )
        ]
    merge = ctx.send_text(room_id, "the merge", prev_events=[demotion, *topic])
    expected = {k: v[0] for k, v in peer_state(ctx, room_id).items()}
    if expected.get(TOPIC) != old_topic or expected.get(POWER_LEVELS) != demotion:
        raise CheckFailed("our own state resolution at the merge", "the old topic", expected)
    expect_state_at_merge(ctx, room_id, merge, expected)
    return "the old topic kept, the demotion applied"


def expect_state_at_merge(
    ctx: Context,
    room_id: str,
    merge: str,
    expected: dict[tuple[str, str], str],
    *,
    what: str = "the merge",
) -> None:
    """Once ``merge`` is readable, its client's room state comes to ``expected`` (the
    state our state resolution gives at the merge) and its ``/state_ids`` at the merge
    lists exactly those events; the failures name ``what`` (the rule at stake)."""
    ctx.wait_visible(room_id, merge, "our merge event")
    wait_until(
        f"its client's room state after {what}",
        lambda: (
            True
            if (now := _state_ids_of(ctx, room_id)) == expected
            else NotYet(state_differences(expected, now))
        ),
        expected="the state our state resolution gives",
    )
    body = ctx.peer.federation_request(
        ctx.server_name, "GET", f"{V1}/state_ids/{q(room_id)}?event_id={q(merge)}"
    )
    expect(f"its /state_ids status at {what}", 200, body.status, answer=body.body)
    ids = body.body.get("pdu_ids") if isinstance(body.body, dict) else None
    expect(f"its /state_ids at {what}", sorted(expected.values()), sorted(ids or []))


def soft_failed_state_resolved(ctx: Context, version: str) -> str:
    """A soft-failed state event still takes part in state resolution ("Soft failed
    events participate in state resolution as normal if further events are received
    which reference it ... it is possible for such events to appear in the current state
    of the room. In that case the client should be told"), where a rejected one never
    would ("not updating with the rejected event"). In our room, where our second user
    has power 50, it leaves; then it sets the topic on the state before its leave (dated
    just before the leave): the topic passes auth where it stands, fails against the
    current state (the sender is gone): soft-failed. Our merge event names the leave and
    the topic; by the spec's state resolution (our own computes it) the leave, no power
    event, and the topic are ordered by the mainline and their timestamps, the topic
    first, so both stand: the topic is the soft-failed one. Its client's room state and
    ``/state_ids`` at the merge must be that."""
    room = deputy_room(ctx, version)
    room_id, second = room.room_id, room.second
    ctx.user.join(room_id, via=[ctx.peer.server_name])
    joined = ctx.peer.wait_for_event(
        room_id, type=MEMBER, state_key=ctx.user.user_id, match=lambda e: e.outcome == "accepted"
    )
    state = peer_state(ctx, room_id)
    leave = ctx.peer.leave(room_id, PEER_USER_2)
    leave_ts = int(ctx.peer.wait_for_event(room_id, event_id=leave).pdu["origin_server_ts"])
    soft = ctx.peer.send(
        room_id,
        "m.room.topic",
        {"topic": "set on the way out"},
        sender=PEER_USER_2,
        state_key="",
        prev_events=[joined.event_id],
        auth_events=auth_ids(state, version, POWER_LEVELS, (MEMBER, second)),
        origin_server_ts=leave_ts - 1,
    )
    marker = ctx.send_text(room_id, "marker after the soft-failed topic", prev_events=[leave])
    ctx.wait_visible(room_id, marker, "our marker after the soft-failed topic")
    topic = _state_ids_of(ctx, room_id).get(TOPIC)
    if topic == soft:
        raise CheckFailed(
            "the room's topic before any event names the soft-failed one", "the old topic", soft
        )
    merge = ctx.send_text(room_id, "the merge", prev_events=[marker, soft])
    expected = {k: v[0] for k, v in peer_state(ctx, room_id).items()}
    if expected.get(TOPIC) != soft:
        raise CheckFailed("our own state resolution at the merge", f"the topic {soft}", expected)
    expect_state_at_merge(ctx, room_id, merge, expected)
    return "the soft-failed topic resolved into the state"


def _state_ids_of(ctx: Context, room_id: str) -> dict[tuple[str, str], str]:
    return {
        (str(e["type"]), str(e["state_key"])): str(e["event_id"]) for e in ctx.user.state(room_id)
    }


def state_differences(
    expected: dict[tuple[str, str], str], got: dict[tuple[str, str], str]
) -> dict[str, Any]:
    keys = sorted(set(expected) | set(got))
    return {
        f"{t}/{k}": {"expected": expected.get((t, k)), "got": got.get((t, k))}
        for t, k in keys
        if expected.get((t, k)) != got.get((t, k))
    }


def our_redaction_applied(ctx: Context, version: str) -> None:
    """Our redaction of our own message (the target named where the room version puts
    it: ``redacts`` at the top level in v10, in content from v11) is applied: its client
    reads the message redacted by the room version's algorithm (an ``m.room.message``
    keeps no content) with ``unsigned.redacted_because`` naming our redaction
    (Client-Server API "Redactions")."""
    room_id = ctx.join_homeserver_room(version)
    message = ctx.send_text(room_id, f"to be redacted {secrets.token_hex(4)}")
    ctx.wait_visible(room_id, message, "our message")
    redaction = ctx.peer.send(room_id, REDACTION, {"redacts": message}, sender=PEER_USER)
    ctx.wait_visible(room_id, redaction, "our redaction")
    seen = wait_until(
        f"our redacted message ({message}) through its client",
        lambda: (
            e
            if (e := visible_event(ctx.user, room_id, message) or {}).get("content") == {}
            else NotYet(e.get("content"))
        ),
        expected="content {}",
    )
    because = (seen.get("unsigned") or {}).get("redacted_because") or {}
    expect(
        "the redacted message's unsigned.redacted_because event_id",
        redaction,
        because.get("event_id"),
    )


def redaction_names(pdu: dict[str, Any], version: str) -> Any:
    if room_version(version).redacts_in_content:
        return (pdu.get("content") or {}).get("redacts")
    return pdu.get("redacts")


def its_redaction_reaches_us(ctx: Context, version: str) -> None:
    """Its user's redaction of our message reaches us, accepted, naming the message where
    the room version puts the target (v10: top-level ``redacts``; v11+: ``content``)."""
    room_id = ctx.join_homeserver_room(version)
    message = ctx.send_text(room_id, "redact me")
    ctx.wait_visible(room_id, message, "our message")
    redaction = ctx.user.redact(room_id, message)
    received = ctx.peer.wait_for_event(room_id, event_id=redaction)
    expect_accepted(f"our verdict on its redaction {redaction}", received)
    expect("the event its redaction names", message, redaction_names(dict(received.pdu), version))


def redaction_of_unknown_event_sent(ctx: Context, version: str) -> None:
    """Its user redacts an event of ours it never received (sent to nobody): the
    redaction still reaches us, naming it (Complement's
    TestFederationRedactSendsWithoutEvent: a homeserver need not hold an event to send
    its redaction).

    Skipped when its client refuses that redaction (400 or 404): the spec does not oblige
    a homeserver to redact an event it does not hold (Client-Server API ``PUT
    /rooms/{roomId}/redact``: who may redact depends on the event's sender, "may send
    redactions for their own events ... may redact events sent by other users", which
    such a server cannot know), so there is nothing for federation to carry."""
    room_id = ctx.join_homeserver_room(version)
    unseen = ctx.send_text(room_id, "never sent to you", destinations=[])
    try:
        redaction = ctx.user.redact(room_id, unseen)
    except HomeserverError as e:
        if e.status not in (400, 404):
            raise
        raise Skipped(
            f"its client refuses to redact an event its server does not hold ({e}); "
            "the spec does not oblige it to (PUT /redact: who may redact depends on the "
            "event's sender)"
        ) from None
    received = ctx.peer.wait_for_event(room_id, event_id=redaction)
    expect("the event its redaction names", unseen, redaction_names(dict(received.pdu), version))


def sync_after_redaction_of_unknown_event(ctx: Context, version: str) -> str:
    """Our redaction of an event it has never seen does not break its client's
    ``/sync``: once a marker of ours sent after it reaches the client through ``/sync``,
    a sync from that token succeeds (Complement's TestSync, "sync should succeed even if
    the sync token points to a redaction of an unknown event"). The note says whether
    the redaction itself showed in the timeline.

    No mutant of Synapse reaches this test: the bug it guards against (a ``/sync`` that
    fails at such a token) lived in sync code Synapse has since rewritten, and bringing
    it back would take more than a few lines of ours replacing one function."""
    room_id = ctx.join_homeserver_room(version)
    stream = SyncStream(ctx.user)
    unknown = f"$unknown{secrets.token_hex(16)}"
    redaction = ctx.peer.send(room_id, REDACTION, {"redacts": unknown}, sender=PEER_USER)
    marker = ctx.send_text(room_id, "marker after the redaction")
    seen: set[str] = set()

    def arrived(answer: dict[str, Any]) -> bool:
        seen.update(e.get("event_id", "") for e in ctx.room_events(answer, room_id))
        return marker in seen

    stream.wait(f"our marker ({marker}) in its client's /sync", arrived)
    answer = ctx.user.sync(since=stream.since, timeout_ms=0)
    if not isinstance(answer, dict) or "next_batch" not in answer:
        raise CheckFailed("its /sync from the token after the redaction", "an answer", answer)
    return "the redaction showed" if redaction in seen else "the redaction did not show"


AREA: list[tuple[str, str, VersionTest]] = [
    ("rejection.accepted_auth_event_fetched", AUTH_RULES, accepted_auth_event_fetched),
    ("softfail.state_event_resolved_into_state", SOFT_FAILURE, soft_failed_state_resolved),
    ("stateres.fork_resolved", STATE_RES, fork_resolved),
    ("redaction.ours_applied", REDACTIONS, our_redaction_applied),
    ("redaction.its_redaction_reaches_us", REDACTIONS, its_redaction_reaches_us),
    ("redaction.of_unknown_event_sent", REDACTIONS, redaction_of_unknown_event_sent),
    (
        "redaction.sync_after_redaction_of_unknown_event",
        REDACTIONS,
        sync_after_redaction_of_unknown_event,
    ),
]


#: Negative tests and the positive baselines (of the same room version) they need.
NEGATIVE: list[tuple[str, str, VersionTest, tuple[str, ...]]] = [
    (
        "rejection.rejected_auth_event_fetched",
        AUTH_RULES,
        rejected_auth_event_fetched,
        ("rejection.accepted_auth_event_fetched",),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version: the baselines, then the negatives."""
    return per_version(AREA, versions) + per_version(NEGATIVE, versions)


__all__ = ["REJECTION", "SOFT_FAILURE", "rejected_event", "soft_failed_event", "tests"]
