"""Its user joins a room of ours whose ``send_join`` answer carries state it cannot
verify, per room version (Complement area A, ``TestJoinFederatedRoomWithUnverifiableEvents``):
the join goes on and the bad event stays out of the room's state.

The peer adds one extra state event to the room's ``send_join`` answers (the control
API's ``send_join_extra_state``, never added to the room itself): the join of a user of
ours who never joined. Without signatures, with a signature that does not verify, or
signed under a key ID we never publish (so its key cannot be obtained), that event
"Passes signature checks, otherwise it is dropped"; the join must still succeed and, after
a later message of ours has reached its client (the marker), its member list must not
show that user. The fourth case is a state event that verifies (the same user's leave)
whose auth events hold an event that does not (the user's badly signed join, in
``auth_chain``): the join is dropped, so the leave fails "authorisation rules based on
the event's auth events, otherwise it is rejected" (a leave needs a prior membership,
"Authorization rules"), and the user is still not listed. Each over its baseline: the
same extra events rightly signed are taken into the state its client reads.

Spec: Server-Server API v1.19, "Checks performed on receipt of a PDU" ("Whenever a
server receives an event from a remote server, the receiving server must ensure that
the event: ... 2. Passes signature checks, otherwise it is dropped. ... 4. Passes
authorisation rules based on the event's auth events, otherwise it is rejected.");
"Joining Rooms" (``send_join``'s ``state``: "The resolved current room state prior to
the join event").
"""

from __future__ import annotations

from collections.abc import Callable

from stubserver.conformance import handshakes
from stubserver.conformance.context import (
    PEER_USER,
    AreaEntry,
    Context,
    expect,
    membership_is,
    per_version,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.testing import HomeserverError

CHECKS = "Checks performed on receipt of a PDU"
MEMBER = "m.room.member"
JOIN_BASELINE = "unverifiable.verified_extra_state_kept"
CHAIN_BASELINE = "unverifiable.verified_auth_event_kept"
#: What each kind of broken signature is, for the messages.
BROKEN = {
    "unsigned": "without signatures",
    "signature": "with a signature that does not verify",
    "unknown_key": "signed under a key ID we never publish (its key cannot be obtained)",
}


def _room_with_extras(
    ctx: Context, version: str, extras: list[tuple[str, str | None]]
) -> tuple[str, str, list[str]]:
    """A public room of ours of ``version`` whose send_join answers carry, for a fresh
    user of ours, each of ``extras`` (membership, tamper) in order: room ID, the user,
    and the extras' event IDs."""
    room = ctx.peer.create_room(PEER_USER, room_version=version, preset="public_chat")
    localpart = handshakes.local("unverifiable")
    user_id = ctx.peer_user_id(localpart)
    ids = [
        ctx.peer.send_join_extra_state(
            room.room_id,
            MEMBER,
            {"membership": membership},
            state_key=user_id,
            sender=localpart,
            tamper=tamper,
        )
        for membership, tamper in extras
    ]
    return room.room_id, user_id, ids


def _joins(ctx: Context, room_id: str, what: str) -> None:
    """Its user joins our room through us; the join must succeed (its client lists its
    user joined)."""
    try:
        ctx.user.join(room_id, via=[ctx.peer.server_name])
    except HomeserverError as e:
        raise CheckFailed(
            f"its user's join of our room whose send_join state carries {what}",
            "joined (a bad event is dropped, the join goes on)",
            f"{e.status} {str(e.body)[:300]}",
        ) from None
    wait_until(
        "its user in its own member list of our room",
        membership_is(ctx.user, room_id, ctx.user.user_id, "join"),
        expected="membership 'join'",
    )


def _kept(ctx: Context, room_id: str, user_id: str, membership: str, event_id: str) -> str:
    """Its client lists ``user_id`` with ``membership`` under ``event_id`` in the room's
    state."""
    wait_until(
        f"{user_id} (our extra state event {event_id}, rightly signed) in its member list",
        membership_is(ctx.user, room_id, user_id, membership),
        expected=f"membership {membership!r}",
    )
    listed = [
        e.get("event_id")
        for e in ctx.user.state(room_id)
        if e.get("type") == MEMBER and e.get("state_key") == user_id
    ]
    expect(f"the event its client's state gives {user_id}", [event_id], listed)
    return f"{user_id} {membership}"


def _absent(ctx: Context, room_id: str, user_id: str, bad: list[str], what: str) -> None:
    """After our marker message has reached its client, ``user_id`` has no membership
    and none of ``bad`` is in its client's state of the room."""
    marker = ctx.send_text(room_id, "marker after its join")
    ctx.wait_visible(room_id, marker, "our marker message after its join")
    expect(
        f"{user_id}'s membership in its member list, whose only event is {what} (our marker seen)",
        None,
        ctx.user.members(room_id).get(user_id),
    )
    taken = [e.get("event_id") for e in ctx.user.state(room_id) if e.get("event_id") in bad]
    expect(f"{what} in its client's state of the room (our marker seen)", [], taken)


def verified_extra_state_kept(ctx: Context, version: str) -> str:
    """Baseline: its user joins our room whose ``send_join`` state carries one more
    state event, rightly signed (the join of a user of ours): the join succeeds and its
    client lists that user joined, under that event (``state``: "The resolved current
    room state prior to the join event")."""
    room_id, user_id, [event_id] = _room_with_extras(ctx, version, [("join", None)])
    _joins(ctx, room_id, "one more state event, rightly signed")
    return _kept(ctx, room_id, user_id, "join", event_id)


def verified_auth_event_kept(ctx: Context, version: str) -> str:
    """Baseline: its user joins our room whose ``send_join`` state carries a leave of a
    user of ours whose auth events hold that user's join (in ``auth_chain``), both
    rightly signed: the join succeeds and its client lists that user left, under the
    leave."""
    room_id, user_id, [_, leave] = _room_with_extras(
        ctx, version, [("join", None), ("leave", None)]
    )
    _joins(ctx, room_id, "a leave whose auth event is a join, both rightly signed")
    return _kept(ctx, room_id, user_id, "leave", leave)


def _dropped(tamper: str) -> Callable[[Context, str], str]:
    what = f"a join of a user of ours {BROKEN[tamper]}"

    def test(ctx: Context, version: str) -> str:
        room_id, user_id, ids = _room_with_extras(ctx, version, [("join", tamper)])
        _joins(ctx, room_id, what)
        _absent(ctx, room_id, user_id, ids, what)
        return "joined; the event dropped"

    test.__doc__ = (
        f"Its user joins our room whose ``send_join`` state carries {what}: the join "
        "succeeds, and after our marker message has reached its client, that user is not "
        'in its member list nor the event in its state ("Passes signature checks, '
        'otherwise it is dropped", "Checks performed on receipt of a PDU").'
    )
    return test


def state_with_unverifiable_auth_event_not_taken(ctx: Context, version: str) -> str:
    """Its user joins our room whose ``send_join`` state carries a rightly signed leave
    of a user of ours whose auth events hold that user's join with a signature that does
    not verify (in ``auth_chain``): the join succeeds, and after our marker message has
    reached its client that user is not in its member list, neither event in its state
    (the join "Passes signature checks, otherwise it is dropped"; the leave then fails
    "authorisation rules based on the event's auth events, otherwise it is rejected")."""
    what = "a leave whose auth event is a join that does not verify"
    room_id, user_id, ids = _room_with_extras(
        ctx, version, [("join", "signature"), ("leave", None)]
    )
    _joins(ctx, room_id, what)
    _absent(ctx, room_id, user_id, ids, what)
    return "joined; neither event taken"


AREA: list[AreaEntry] = [
    (JOIN_BASELINE, CHECKS, verified_extra_state_kept),
    *(
        (f"unverifiable.{name}_extra_state_dropped", CHECKS, _dropped(tamper), (JOIN_BASELINE,))
        for name, tamper in (
            ("unsigned", "unsigned"),
            ("badly_signed", "signature"),
            ("unobtainable_key", "unknown_key"),
        )
    ),
    (CHAIN_BASELINE, CHECKS, verified_auth_event_kept),
    (
        "unverifiable.state_with_unverifiable_auth_event_not_taken",
        CHECKS,
        state_with_unverifiable_auth_event_not_taken,
        (CHAIN_BASELINE,),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
