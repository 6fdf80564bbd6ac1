"""The responder side of partial-state joins, per room version (Complement area O,
``TestSendJoinPartialStateResponse``): ``send_join`` with ``omit_members=true``.

Spec: Server-Server API v1.19, ``PUT /v2/send_join`` (``omit_members``: "indicates that
that calling server can accept a reduced response, in which membership events are
omitted from ``state`` and redundant events are omitted from ``auth_chain``"; ``state``:
"events of type ``m.room.member`` may be omitted ... If this is done, ``members_omitted``
must be set to ``true``"; ``servers_in_room``: "Required if ``members_omitted`` is true.
A list of the servers active in the room (ie, those with joined members) before the
join"; ``auth_chain``: "All events in the auth chain for the new join event, as well as
those in the auth chains for any events returned in ``state`` ... any events that are
returned in ``state`` may be omitted from ``auth_chain``").
"""

from __future__ import annotations

from collections.abc import Mapping

from stubserver.conformance import handshakes
from stubserver.conformance.context import AreaEntry, Context, per_version
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.conformance.serving import Pdus, auth_chain, served_pdus
from stubserver.conformance.suite_serving import federation_keys
from stubserver.rooms.versions import RoomVersion, room_version

SEND_JOIN = "Joining Rooms: PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}"
MEMBER = "m.room.member"


def send_join_omit_members(ctx: Context, version: str) -> str:
    """In its room (no name, no alias) with its user and one of ours joined, a join of
    another user of ours sent with ``omit_members=true`` is accepted (200). When the
    answer says ``members_omitted: true``: ``servers_in_room`` lists its server and ours;
    ``state`` holds every state event but memberships of the room as its client reads it,
    and only memberships of the room; ``state`` and ``auth_chain`` together hold the
    auth chain of every event in ``state`` (the join's auth events are among them). A
    server that keeps the members (``members_omitted`` false or absent) passes: the spec
    lets it (the note says which, and whether the heroes' memberships, which it "should
    include", are in)."""
    room_id = ctx.join_homeserver_room(version)
    user_id = ctx.peer_user_id(handshakes.local("partial"))
    _, body = handshakes.by_hand(ctx, "join", room_id, version, user_id, query="?omit_members=true")
    if body.get("members_omitted") is not True:
        return f"members_omitted {body.get('members_omitted')!r}: the full state (allowed)"
    rv = room_version(version)
    keys = federation_keys(ctx)
    state = served_pdus("its send_join state", body.get("state"), rv, keys)
    chain = served_pdus("its send_join auth_chain", body.get("auth_chain"), rv, keys)
    client: dict[tuple[str, str], str] = {
        (e["type"], e["state_key"]): e["event_id"]
        for e in ctx.user.state(room_id)
        if not (e.get("type") == MEMBER and e.get("state_key") == user_id)
    }
    return judge_omitted(
        state,
        chain,
        body.get("servers_in_room"),
        client,
        servers={ctx.server_name, ctx.peer.server_name},
        heroes={ctx.user.user_id, ctx.peer_user_id()},
        version=rv,
    )


def judge_omitted(
    state: Pdus,
    chain: Pdus,
    servers_in_room: object,
    client: Mapping[tuple[str, str], str],
    *,
    servers: set[str],
    heroes: set[str],
    version: RoomVersion,
) -> str:
    """The verdict on a ``members_omitted: true`` answer (pure): ``servers_in_room`` a
    list holding ``servers``; ``state`` (checked PDUs by ID) holds every non-member entry
    of ``client`` (the room's state as its client reads it, ``(type, state_key)`` to
    event ID, without the joiner) under the same ID, and no membership that is not in
    ``client``; ``state`` and ``chain`` together hold the auth chain of ``state``.
    CheckFailed naming the first broken rule; the note (memberships kept, ``heroes``'
    memberships in or not)."""
    if not isinstance(servers_in_room, list) or not servers <= set(servers_in_room):
        raise CheckFailed(
            "servers_in_room of its send_join answer (members_omitted true)",
            f"a list with {' and '.join(sorted(servers))}",
            servers_in_room,
        )
    served = {(p.get("type"), p.get("state_key")): i for i, p in state.items()}
    missing = sorted(
        f"{t}/{k}" for (t, k), i in client.items() if t != MEMBER and served.get((t, k)) != i
    )
    if missing:
        raise CheckFailed(
            "the non-member state in its omit_members send_join answer",
            "all of it",
            f"missing {missing}",
        )
    strangers = sorted(
        str(k) for (t, k), i in served.items() if t == MEMBER and client.get((t, str(k))) != i
    )
    if strangers:
        raise CheckFailed(
            "the memberships in its omit_members state",
            "memberships of the room",
            f"also {strangers}",
        )
    try:
        auth_chain({**chain, **state}, list(state), version)
    except CheckFailed as e:
        raise CheckFailed(
            "its omit_members state and auth_chain",
            "the auth chain of every event in state",
            f"{e.expected.removesuffix(' known to us')} missing",
        ) from None
    kept = {str(k) for (t, k) in served if t == MEMBER}
    heroes_kept = "in" if heroes <= kept else "not all in"
    return f"members_omitted true; {len(kept)} memberships kept; heroes {heroes_kept}"


AREA: list[AreaEntry] = [
    (
        "partial_state.send_join_omit_members",
        SEND_JOIN,
        send_join_omit_members,
        ("joins.hand_built_join_accepted",),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
