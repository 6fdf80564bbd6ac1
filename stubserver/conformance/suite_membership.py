"""Joins and invites the homeserver must refuse, per room version: ``make_join`` without
the room's version among ``ver``, ``send_join`` with an event that is not the join it
asked for, an invite in a room version it does not support. Each over its positive
baseline: a join we build by hand from its ``make_join`` template, sent the same way,
accepted (and a v2 invite it countersigns: ``rooms.we_invite_it``).

Spec: Server-Server API v1.19, "Joining Rooms" (``GET /make_join``: "400 ... the room
the server is attempting to join has a version that is not listed in the ver
parameters", ``room_version`` "Required if the errcode is M_INCOMPATIBLE_ROOM_VERSION";
``PUT /v2/send_join``), "Inviting to a room" (``PUT /v2/invite``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from stubserver.conformance.context import (
    PEER_USER,
    AreaEntry,
    Context,
    SyncStream,
    client_call,
    expect,
    invited,
    membership_is,
    per_version,
    q,
    wait_until,
)
from stubserver.conformance.handshakes import signed
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.conformance.serving import auth_chain, expect_ids, served_pdus
from stubserver.conformance.suite_serving import federation_keys
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.versions import room_version
from stubserver.testing import FederationAnswer

MAKE_JOIN = "Joining Rooms: GET /_matrix/federation/v1/make_join/{roomId}/{userId}"
SEND_JOIN = "Joining Rooms: PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}"
INVITE = "Inviting to a room: PUT /_matrix/federation/v2/invite/{roomId}/{eventId}"
BASELINE = "joins.hand_built_join_accepted"
#: A room version no server supports.
UNKNOWN_VERSION = "org.stubserver.no-such-version"
#: What a refused send_join may answer: the spec's 400 (invalid) and 403 (not permitted).
REFUSALS = (400, 403)


def _local(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def joins_room(ctx: Context, version: str, which: str = "first") -> str:
    """Its public room of ``version`` that this area's join tests share (``which`` tells
    two apart, for the test that needs a second room), made once per run: a room creation
    fewer per test for the homeserver. Each test joins, refuses and bans users of ours
    of its own (fresh localparts) and judges only their memberships and the answers to
    its own requests; none changes the room's join rules or power levels, so no verdict
    depends on another test."""
    return ctx.shared(
        ("joins", version, which),
        lambda: ctx.user.create_room(preset="public_chat", room_version=version),
    )


def make_join(
    ctx: Context, room_id: str, user_id: str, versions: list[str] | None
) -> FederationAnswer:
    """``GET /make_join`` with ``ver`` for each of ``versions`` (None: no ``ver``)."""
    query = "" if versions is None else "?" + "&".join(f"ver={q(v)}" for v in versions)
    path = f"/_matrix/federation/v1/make_join/{q(room_id)}/{q(user_id)}{query}"
    return ctx.peer.federation_request(ctx.server_name, "GET", path)


def join_template(ctx: Context, room_id: str, user_id: str, version: str) -> dict[str, Any]:
    """Its ``make_join`` template for ``user_id`` (a 200 naming ``version`` required)."""
    answer = make_join(ctx, room_id, user_id, [version])
    expect("its make_join status", 200, answer.status, answer=answer.body)
    body = answer.body if isinstance(answer.body, dict) else {}
    expect("the room_version of its make_join", version, body.get("room_version"))
    event = body.get("event")
    if not isinstance(event, dict):
        raise CheckFailed("its make_join event template", "an object", body)
    return event


def send_join(ctx: Context, room_id: str, event_id: str, pdu: dict[str, Any]) -> FederationAnswer:
    """``PUT /v2/send_join``."""
    path = f"/_matrix/federation/v2/send_join/{q(room_id)}/{q(event_id)}"
    return ctx.peer.federation_request(ctx.server_name, "PUT", path, pdu)


def join_by_hand(ctx: Context, room_id: str, version: str, localpart: str) -> dict[str, Any]:
    """A join of ``localpart`` (ours) built from its template and signed by us: accepted
    (200), and listed joined by its client. The send_join answer."""
    user_id = ctx.peer_user_id(localpart)
    event_id, pdu = signed(ctx, join_template(ctx, room_id, user_id, version), version)
    answer = send_join(ctx, room_id, event_id, pdu)
    expect("its send_join status", 200, answer.status, answer=answer.body)
    wait_until(
        f"{user_id} in its member list",
        membership_is(ctx.user, room_id, user_id, "join"),
        expected="membership 'join'",
    )
    return answer.body if isinstance(answer.body, dict) else {}


def hand_built_join_accepted(ctx: Context, version: str) -> None:
    """A join we build from its ``make_join`` template (with ``ver`` the room's version)
    is accepted by ``send_join`` v2: 200 with ``state`` holding the room's create event
    of that version and an ``auth_chain`` that is the auth events of that state,
    recursively (each PDU well-formed and signed), and its client lists us joined."""
    room_id = joins_room(ctx, version)
    check_join_answer(ctx, version, join_by_hand(ctx, room_id, version, _local("by-hand")))


def check_join_answer(ctx: Context, version: str, body: dict[str, Any]) -> None:
    """A ``send_join`` answer's object has ``state`` holding the room's create event of
    ``version`` and an ``auth_chain`` that is the auth events of that state, recursively,
    each PDU well-formed and signed."""
    rv = room_version(version)
    keys = federation_keys(ctx)
    state = served_pdus("its send_join state", body.get("state"), rv, keys)
    chain = served_pdus("its send_join auth_chain", body.get("auth_chain"), rv, keys)
    creates = [p for p in state.values() if p.get("type") == "m.room.create"]
    versions = [p.get("content", {}).get("room_version") for p in creates]
    expect("the room_version of the create event in its send_join state", [version], versions)
    expected = auth_chain({**chain, **state}, state, rv)
    expect_ids("its send_join auth_chain", expected, list(chain), also_allowed=state)


def _refused_make_join(ctx: Context, version: str, versions: list[str] | None) -> None:
    room_id = joins_room(ctx, version)
    answer = make_join(ctx, room_id, ctx.peer_user_id(_local("old")), versions)
    body = answer.body if isinstance(answer.body, dict) else {}
    what = f"its make_join with ver={versions}"
    expect(f"{what}: status", 400, answer.status, answer=answer.body)
    expect(f"{what}: errcode", "M_INCOMPATIBLE_ROOM_VERSION", body.get("errcode"), answer=body)
    expect(f"{what}: room_version", version, body.get("room_version"), answer=body)


def make_join_other_versions_refused(ctx: Context, version: str) -> None:
    """``make_join`` whose ``ver`` lists only versions other than the room's ("1", "2")
    is refused 400 ``M_INCOMPATIBLE_ROOM_VERSION`` with the room's ``room_version``."""
    _refused_make_join(ctx, version, ["1", "2"])


def make_join_without_ver_refused(ctx: Context, version: str) -> None:
    """``make_join`` without ``ver`` means ``[1]`` ("Defaults to [1]"): refused 400
    ``M_INCOMPATIBLE_ROOM_VERSION`` with the room's ``room_version``."""
    _refused_make_join(ctx, version, None)


#: A change to a signed-to-be join from its template: the room, the template, what the
#: path's event ID is given (None: the event's), and the users that must not be joined.
Corrupt = Callable[[Context, dict[str, Any]], None]


def _leave(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu["content"] = {**pdu["content"], "membership": "leave"}


def _message(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu["type"] = "m.room.message"
    pdu.pop("state_key", None)
    pdu["content"] = {"msgtype": "m.text", "body": "not a join"}


def _other_state_key(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu["state_key"] = ctx.peer_user_id(_local("someone-else"))


def _other_sender(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu["sender"] = ctx.peer_user_id(_local("someone-else"))


def _knock(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu["content"] = {**pdu["content"], "membership": "knock"}


def _invite(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu["content"] = {**pdu["content"], "membership": "invite"}


def _non_state(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu.pop("state_key", None)


def _refused_send_join(
    ctx: Context,
    version: str,
    corrupt: Corrupt | None = None,
    *,
    unsigned: bool = False,
    path_event_id: str | None = None,
    other_room: bool = False,
) -> str:
    """Send its ``make_join`` template, changed by ``corrupt`` (then signed unless
    ``unsigned``), to ``send_join`` (under ``path_event_id`` or in another room when
    asked): refused 400 or 403. Then, as the marker, a join of another user of ours
    built rightly is accepted; after it, the first user is not joined. The note: the
    status seen."""
    room_id = joins_room(ctx, version)
    target = joins_room(ctx, version, "second") if other_room else room_id
    user_id = ctx.peer_user_id(_local("refused"))
    template = join_template(ctx, room_id, user_id, version)
    if corrupt is not None:
        corrupt(ctx, template)
    event_id, pdu = signed(ctx, template, version)
    if unsigned:
        pdu["signatures"] = {}
    answer = send_join(ctx, target, path_event_id or event_id, pdu)
    if answer.status not in REFUSALS:
        raise CheckFailed(
            "its send_join answer",
            " or ".join(map(str, REFUSALS)),
            answer.status,
            answer.body,
        )
    join_by_hand(ctx, room_id, version, _local("marker"))
    for room in {room_id, target}:
        members = ctx.user.members(room)
        for user in {user_id, str(template.get("state_key")), str(template.get("sender"))}:
            if members.get(user) == "join":
                raise CheckFailed(
                    f"{user} in its member list after the refusal", "not joined", "join"
                )
    errcode = answer.body.get("errcode") if isinstance(answer.body, dict) else None
    return f"{answer.status} {errcode}"


def send_join_leave_refused(ctx: Context, version: str) -> str:
    """``send_join`` with a leave (membership ``leave``) is refused (400 or 403: the
    event must be the join ``make_join`` templated, "Joining Rooms")."""
    return _refused_send_join(ctx, version, _leave)


def send_join_message_refused(ctx: Context, version: str) -> str:
    """``send_join`` with a message event instead of a membership event is refused."""
    return _refused_send_join(ctx, version, _message)


def send_join_other_state_key_refused(ctx: Context, version: str) -> str:
    """``send_join`` with a join whose ``state_key`` is another user than its ``sender``
    is refused (a join is a user's own: the template's ``state_key`` and ``sender`` are
    "The user ID of the joining member")."""
    return _refused_send_join(ctx, version, _other_state_key)


def send_join_other_sender_refused(ctx: Context, version: str) -> str:
    """``send_join`` with a join whose ``sender`` is another user than its
    ``state_key`` is refused."""
    return _refused_send_join(ctx, version, _other_sender)


def send_join_other_room_refused(ctx: Context, version: str) -> str:
    """``send_join`` to one room with the join templated for another is refused (the
    path's ``roomId`` is "The room ID that is about to be joined")."""
    return _refused_send_join(ctx, version, other_room=True)


def send_join_under_another_event_id(ctx: Context, version: str) -> str:
    """``send_join`` of our join under a path event ID that is not the event's: the
    spec does not say it must be refused, but an event's ID is its reference hash
    ("Event IDs" of the room version; the joining server "replaces the event_id with
    its own" only in versions 1 and 2), so it is either refused (400 or 403) or our
    join is taken under its true ID: its client's state lists our join under that ID,
    never the path's (the note says which)."""
    room_id = joins_room(ctx, version)
    user_id = ctx.peer_user_id(_local("other-id"))
    event_id, pdu = signed(ctx, join_template(ctx, room_id, user_id, version), version)
    wrong = "$" + compute_event_id({**pdu, "origin_server_ts": 1}, room_version(version))[1:]
    answer = send_join(ctx, room_id, wrong, pdu)
    if answer.status in REFUSALS:
        join_by_hand(ctx, room_id, version, _local("marker"))
        expect(
            f"{user_id}'s membership after the refusal",
            None,
            ctx.user.members(room_id).get(user_id),
        )
        return f"refused {answer.status}"
    expect("its send_join status", 200, answer.status, answer=answer.body)
    wait_until(
        f"{user_id} in its member list",
        membership_is(ctx.user, room_id, user_id, "join"),
        expected="membership 'join'",
    )
    listed = [
        e["event_id"]
        for e in ctx.user.state(room_id)
        if e.get("type") == "m.room.member" and e.get("state_key") == user_id
    ]
    expect(f"the event ID its client gives our join (sent under {wrong})", [event_id], listed)
    return "accepted under its true event ID"


def send_join_knock_refused(ctx: Context, version: str) -> str:
    """``send_join`` with a knock (membership ``knock``) is refused (400 or 403: "The
    ``membership`` field inside the event content is not ``join``" is among the
    validation ``send_join`` "MUST apply")."""
    return _refused_send_join(ctx, version, _knock)


def send_join_invite_refused(ctx: Context, version: str) -> str:
    """``send_join`` with an invite (membership ``invite``, our user inviting itself) is
    refused (400 or 403)."""
    return _refused_send_join(ctx, version, _invite)


def send_join_non_state_membership_refused(ctx: Context, version: str) -> str:
    """``send_join`` with an ``m.room.member`` event that has no ``state_key`` (not a
    state event, so no membership) is refused (400 or 403)."""
    return _refused_send_join(ctx, version, _non_state)


def send_join_banned_user_refused(ctx: Context, version: str) -> str:
    """A ``make_join`` template for one user of ours turned into a join of another one
    its user has banned is refused 403 ``M_FORBIDDEN`` ("The room that the joining server
    is attempting to join does not permit the user to join"; a banned user may not join,
    "Authorization rules"); after a later join of another user of ours is accepted, the
    banned user's membership is still ``ban`` (Complement's ``TestBannedUserCannotSendJoin``)."""
    room_id = joins_room(ctx, version)
    banned = ctx.peer_user_id(_local("banned"))
    client_call(ctx.user, "POST", f"/rooms/{q(room_id)}/ban", {"user_id": banned})
    template = join_template(ctx, room_id, ctx.peer_user_id(_local("allowed")), version)
    template.update(sender=banned, state_key=banned)
    event_id, pdu = signed(ctx, template, version)
    answer = send_join(ctx, room_id, event_id, pdu)
    body = answer.body if isinstance(answer.body, dict) else {}
    what = "its send_join of a banned user's join"
    expect(f"{what}: status", 403, answer.status, answer=answer.body)
    expect(f"{what}: errcode", "M_FORBIDDEN", body.get("errcode"), answer=answer.body)
    join_by_hand(ctx, room_id, version, _local("marker"))
    expect(
        f"{banned}'s membership after the refusal (and a later join accepted)",
        "ban",
        ctx.user.members(room_id).get(banned),
    )
    return "403 M_FORBIDDEN"


def send_join_unsigned_refused(ctx: Context, version: str) -> str:
    """``send_join`` with our join but without our signature is refused ("The signatures
    expected on an event are: The sender's server", "Validating hashes and signatures
    on received events")."""
    return _refused_send_join(ctx, version, unsigned=True)


def invite_event(
    ctx: Context, version: str, content: dict[str, Any] | None = None
) -> tuple[str, str, dict[str, Any], list[dict[str, Any]]]:
    """A room of ours of ``version`` and our invite of its user into it (with
    ``content``, default ``{"membership": "invite"}``), signed: room ID, event ID, PDU,
    and the ``invite_room_state`` for it (the create event, the join rules and our
    user's membership, as full PDUs, "formatted according to the room's version")."""
    room = ctx.peer.create_room(PEER_USER, room_version=version, preset="private_chat")
    events = ctx.peer.events(room.room_id)
    by_state = {(e.type, e.state_key): e for e in events if e.state_key is not None}
    auth = [by_state[("m.room.power_levels", "")], by_state[("m.room.member", ctx.peer_user_id())]]
    rv = room_version(version)
    if not rv.room_id_is_create_hash:
        auth.insert(0, by_state[("m.room.create", "")])
    last = events[-1]
    template = {
        "room_id": room.room_id,
        "type": "m.room.member",
        "state_key": ctx.user.user_id,
        "sender": ctx.peer_user_id(),
        "content": content or {"membership": "invite"},
        "auth_events": [e.event_id for e in auth],
        "prev_events": [last.event_id],
        "depth": int(last.pdu.get("depth", 0)) + 1,
    }
    event_id, pdu = signed(ctx, template, version)
    kinds = [
        ("m.room.create", ""),
        ("m.room.join_rules", ""),
        ("m.room.member", ctx.peer_user_id()),
    ]
    return room.room_id, event_id, pdu, [by_state[k].pdu for k in kinds]


def invite_in_unknown_version_refused(ctx: Context, version: str) -> str:
    """A v2 invite whose ``room_version`` it does not support is refused 400 ("The
    request is invalid or the room ... has a version that is not listed"; the spec's
    example errcode is ``M_INCOMPATIBLE_ROOM_VERSION``, which the note reports along
    with the one seen); as the marker, a real invite to another room reaches its
    client after it, and the refused one never does."""
    stream = SyncStream(ctx.user)
    room_id, event_id, pdu, _ = invite_event(ctx, version)
    body = {"room_version": UNKNOWN_VERSION, "event": pdu, "invite_room_state": []}
    path = f"/_matrix/federation/v2/invite/{q(room_id)}/{q(event_id)}"
    answer = ctx.peer.federation_request(ctx.server_name, "PUT", path, body)
    expect(f"its invite in room version {UNKNOWN_VERSION}", 400, answer.status, answer=answer.body)
    marker = ctx.peer.create_room(PEER_USER, room_version=version, preset="private_chat")
    ctx.peer.invite(marker.room_id, ctx.user.user_id, PEER_USER)
    seen: set[str] = set()

    def probe(answer: dict[str, Any]) -> bool:
        seen.update(r for r in (room_id, marker.room_id) if invited(answer, r))
        return marker.room_id in seen

    stream.wait("the marker invite in its client's /sync", probe)
    if room_id in seen:
        raise CheckFailed("the refused invite in its client's /sync", "never", "listed")
    errcode = answer.body.get("errcode") if isinstance(answer.body, dict) else None
    if errcode is None:
        raise CheckFailed("its refusal's errcode", "an errcode", answer.body)
    return f"400 {errcode}"


AREA: list[AreaEntry] = [
    (BASELINE, SEND_JOIN, hand_built_join_accepted),
    (
        "joins.make_join_other_versions_refused",
        MAKE_JOIN,
        make_join_other_versions_refused,
        (BASELINE,),
    ),
    ("joins.make_join_without_ver_refused", MAKE_JOIN, make_join_without_ver_refused, (BASELINE,)),
    ("joins.send_join_leave_refused", SEND_JOIN, send_join_leave_refused, (BASELINE,)),
    ("joins.send_join_message_refused", SEND_JOIN, send_join_message_refused, (BASELINE,)),
    (
        "joins.send_join_other_state_key_refused",
        SEND_JOIN,
        send_join_other_state_key_refused,
        (BASELINE,),
    ),
    (
        "joins.send_join_other_sender_refused",
        SEND_JOIN,
        send_join_other_sender_refused,
        (BASELINE,),
    ),
    ("joins.send_join_other_room_refused", SEND_JOIN, send_join_other_room_refused, (BASELINE,)),
    (
        "joins.send_join_under_another_event_id",
        SEND_JOIN,
        send_join_under_another_event_id,
        (BASELINE,),
    ),
    ("joins.send_join_unsigned_refused", SEND_JOIN, send_join_unsigned_refused, (BASELINE,)),
    ("joins.send_join_knock_refused", SEND_JOIN, send_join_knock_refused, (BASELINE,)),
    ("joins.send_join_invite_refused", SEND_JOIN, send_join_invite_refused, (BASELINE,)),
    (
        "joins.send_join_non_state_membership_refused",
        SEND_JOIN,
        send_join_non_state_membership_refused,
        (BASELINE,),
    ),
    (
        "joins.send_join_banned_user_refused",
        SEND_JOIN,
        send_join_banned_user_refused,
        (BASELINE,),
    ),
    (
        "invites.unknown_room_version_refused",
        INVITE,
        invite_in_unknown_version_refused,
        ("rooms.we_invite_it",),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
