"""Invites beyond the round trip, per room version (Complement area C): the ``is_direct``
flag of an invite reaches the invitee's client, the invitee's server rejects our invite
through ``make_leave``/``send_leave`` to us, and our withdrawal of an invite (the
invitee kicked before it joined) removes the invite from its client.

Spec: Server-Server API v1.19, "Inviting to a room" and "Leaving Rooms (Rejecting
Invites)" ("the server which wishes to leave the room starts with sending a
``/make_leave`` request to a resident server. In the case of rejecting invites, the
resident server may be the server which sent the invite"); Client-Server API
"m.room.member" (``is_direct``: "the invite is for a direct chat"; stripped state of an
invite), "Leaving rooms" (a user "can also be kicked ... if they were invited, their
invite is revoked").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from stubserver.conformance.context import (
    PEER_USER,
    AreaEntry,
    Context,
    SyncStream,
    expect,
    expect_accepted,
    invited,
    per_version,
    q,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.conformance.serving import served_pdus
from stubserver.conformance.suite_membership import invite_event
from stubserver.conformance.suite_pdus import _put_transaction, _txn_id
from stubserver.conformance.suite_serving import federation_keys
from stubserver.rooms.hashes import room_id_from_create_event_id
from stubserver.rooms.versions import room_version

INVITE = "Inviting to a room: PUT /_matrix/federation/v2/invite/{roomId}/{eventId}"
REJECT = "Leaving Rooms (Rejecting Invites)"
BASELINE = "rooms.we_invite_it"


def _invite_state_member(answer: dict[str, Any], room_id: str, user_id: str) -> Any:
    """The content of ``user_id``'s ``m.room.member`` in a /sync answer's invite state
    of ``room_id``, or None."""
    room = ((answer.get("rooms") or {}).get("invite") or {}).get(room_id) or {}
    for event in (room.get("invite_state") or {}).get("events") or []:
        if event.get("type") == "m.room.member" and event.get("state_key") == user_id:
            return event.get("content")
    return None


def is_direct_flag_reaches_its_client(ctx: Context, version: str) -> None:
    """Our v2 invite whose content has ``is_direct: true`` is countersigned (200) and
    shows in its client's ``/sync`` invite state as our user's invite of its user with
    ``is_direct`` true (Complement's ``TestIsDirectFlagFederation``)."""
    stream = SyncStream(ctx.user)
    content = {"membership": "invite", "is_direct": True}
    room_id, event_id, pdu, state = invite_event(ctx, version, content)
    body = {"room_version": version, "event": pdu, "invite_room_state": state}
    path = f"/_matrix/federation/v2/invite/{q(room_id)}/{q(event_id)}"
    answer = ctx.peer.federation_request(ctx.server_name, "PUT", path, body)
    expect("its answer to our invite", 200, answer.status, answer=answer.body)
    seen: list[Any] = []

    def probe(answer: dict[str, Any]) -> bool:
        member = _invite_state_member(answer, room_id, ctx.user.user_id)
        if member is not None:
            seen.append(member)
        return isinstance(member, dict) and member.get("is_direct") is True

    stream.wait(
        f"its user's invite state membership with is_direct true in {room_id}",
        probe,
        seen=lambda _: seen[-1] if seen else None,
    )


def it_rejects_our_invite(ctx: Context, version: str) -> str:
    """Its user declines our invite: its server asks us (the inviting, resident server)
    for ``make_leave`` and sends the leave with ``send_leave``, which we accept; the note
    says which ``send_leave`` version it used."""
    stream = SyncStream(ctx.user)
    room = ctx.peer.create_room(PEER_USER, room_version=version, preset="private_chat")
    ctx.peer.invite(room.room_id, ctx.user.user_id, PEER_USER)
    stream.wait("our invite in its client's /sync", lambda a: invited(a, room.room_id))
    ctx.user.leave(room.room_id)
    event = ctx.peer.wait_for_event(
        room.room_id,
        type="m.room.member",
        state_key=ctx.user.user_id,
        match=lambda e: e.content.get("membership") == "leave",
    )
    expect_accepted("our verdict on its leave (its rejection of our invite)", event)
    request = ctx.peer.wait_for_request(
        "/_matrix/federation/",
        method="PUT",
        match=lambda r: (
            "/send_leave/" in (u := unquote(str(r.get("uri", "")))) and room.room_id in u
        ),
    )
    return str(request.get("uri", "")).split("/send_leave/")[0].rsplit("/", 1)[-1] + " send_leave"


def _left(answer: dict[str, Any], room_id: str) -> bool:
    """True when a /sync answer lists ``room_id`` among the rooms left."""
    return room_id in ((answer.get("rooms") or {}).get("leave") or {})


#: How long the note waits for its client to move a withdrawn invite to the rooms left.
WITHDRAWAL_NOTE_SECONDS = 10.0


def we_rescind_our_invite(ctx: Context, version: str) -> str:
    """We withdraw our invite of its user (our user kicks the invitee) and send the kick
    to its server in a transaction of ours: it answers 200 with a ``pdus`` object (the
    answer to ``PUT /send`` is "The result of processing the transaction. The server is to
    use this response even in the event of one or more PDUs failing to be processed").

    What its server then does with the kick is not the spec's to say: its server is not
    in the room ("Remote invites/knocks from other homeservers do not involve the server
    in the graph", "Leaving Rooms (Rejecting Invites)"), and the spec neither tells the
    inviting server to send it the withdrawal nor tells it to act on one. So its client
    either moves the room from ``invite`` to ``leave`` in ``/sync`` (Synapse 1.163.2) or
    keeps listing the invite (Dendrite v0.13.8): both pass, the note says which, with the
    result it gave for the PDU. A server that refuses the transaction fails."""
    stream = SyncStream(ctx.user)
    room = ctx.peer.create_room(PEER_USER, room_version=version, preset="private_chat")
    ctx.peer.invite(room.room_id, ctx.user.user_id, PEER_USER)
    stream.wait("our invite in its client's /sync", lambda a: invited(a, room.room_id))
    kick = ctx.peer.send(
        room.room_id,
        "m.room.member",
        {"membership": "leave"},
        sender=PEER_USER,
        state_key=ctx.user.user_id,
        destinations=[],
    )
    pdu = {e.event_id: e.pdu for e in ctx.peer.events(room.room_id)}[kick]
    answer = _put_transaction(ctx, _txn_id(), [pdu], [])
    what = "its answer to the transaction of our withdrawal"
    expect(f"{what}: status", 200, answer.status, answer=answer.body)
    results = answer.body.get("pdus") if isinstance(answer.body, dict) else None
    if not isinstance(results, dict):
        raise CheckFailed(f"{what}: pdus", "an object", results, answer.body)
    result = results.get(kick)
    try:
        stream.wait(
            "the withdrawn invite among the rooms left",
            lambda a: _left(a, room.room_id),
            timeout=WITHDRAWAL_NOTE_SECONDS,
        )
    except CheckFailed:
        return (
            f"its client still lists the invite after {WITHDRAWAL_NOTE_SECONDS:g} s "
            f"(its result for the kick: {result})"
        )
    return f"its client moved the room from invite to leave (its result for the kick: {result})"


def its_invite_room_state_holds_the_create_event(ctx: Context, version: str) -> None:
    """Its user invites ours: the ``/v2/invite`` request's ``invite_room_state`` "MUST
    contain the ``m.room.create`` event for the room", formatted "according to the room
    version specification" (a full PDU, signed by its server; in v12 the one whose event
    ID makes the room ID) (Server-Server API v1.16+, "Inviting to a room"; Complement's
    ``TestMSC4311FullCreateEventOnStrippedState``, role-swapped)."""
    room_id = ctx.user.create_room(
        preset="private_chat", room_version=version, invite=[ctx.peer_user_id()]
    )
    request = ctx.peer.wait_for_request(
        "/_matrix/federation/v2/invite/",
        match=lambda r: room_id in unquote(str(r.get("uri", ""))),
    )
    raw = request.get("content")
    content: dict[str, Any] = raw if isinstance(raw, dict) else {}
    state = content.get("invite_room_state")
    creates = [e for e in state or [] if isinstance(e, dict) and e.get("type") == "m.room.create"]
    if len(creates) != 1:
        raise CheckFailed("the m.room.create events in its invite_room_state", "exactly one", state)
    rv = room_version(version)
    served = served_pdus(
        "the m.room.create in its invite_room_state", creates, rv, federation_keys(ctx)
    )
    event_id = next(iter(served))
    got = (
        room_id_from_create_event_id(event_id)
        if rv.room_id_is_create_hash
        else creates[0].get("room_id")
    )
    expect("the room of the m.room.create in its invite_room_state", room_id, got)
    expect(
        "the room_version of the m.room.create in its invite_room_state",
        version,
        (creates[0].get("content") or {}).get("room_version"),
    )


AREA: list[AreaEntry] = [
    (
        "invites.is_direct_flag_reaches_its_client",
        INVITE,
        is_direct_flag_reaches_its_client,
        (BASELINE,),
    ),
    ("invites.it_rejects_our_invite", REJECT, it_rejects_our_invite, (BASELINE,)),
    (
        "invites.its_invite_room_state_holds_the_create_event",
        INVITE,
        its_invite_room_state_holds_the_create_event,
        ("rooms.it_invites_us",),
    ),
    ("invites.we_rescind_our_invite", INVITE, we_rescind_our_invite, (BASELINE,)),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
