"""Membership and messages, per room version: joins both ways, invites both ways, leave,
messages both ways with the event IDs both sides compute, backfill, get_missing_events
and a gap deeper than it fills.

Spec: Server-Server API v1.19, "Joining Rooms", "Inviting to a room", "Leaving Rooms
(Rejecting Invites)", "Transactions", "Backfilling and retrieving missing events".
"""

from __future__ import annotations

import secrets
from typing import Any

from stubserver.conformance.context import (
    PEER_USER,
    Context,
    NotYet,
    SyncStream,
    VersionTest,
    client_call,
    expect,
    expect_accepted,
    invited,
    membership_is,
    per_version,
    q,
    wait_until,
)
from stubserver.conformance.gaps import allowed_ways, gap_what, judge_gap_fill
from stubserver.conformance.runner import CheckFailed, ConformanceTest

JOINING = "Joining Rooms"
INVITING = "Inviting to a room"
LEAVING = "Leaving Rooms (Rejecting Invites)"
TRANSACTIONS = "Transactions"
BACKFILL = "Backfilling and retrieving missing events"
#: Events withheld in a row for the deep gap: more than the 10 get_missing_events returns
#: by default.
DEEP_GAP_EVENTS = 12
#: Time its requests for a gap it has filled have to reach our log, in seconds.
GAP_REQUESTS_SECONDS = 5.0


def we_join(ctx: Context, version: str) -> None:
    """We join its public room (make_join, send_join); it lists us joined, and the
    state event IDs its client sees are the ones we computed."""
    room_id = ctx.join_homeserver_room(version)
    expect("the room version we joined", version, ctx.peer.room_state(room_id)["room_version"])
    ours = {e.event_id for e in ctx.peer.events(room_id) if e.state_key is not None}
    theirs = {e["event_id"] for e in ctx.user.state(room_id)}
    if not theirs <= ours:
        raise CheckFailed("its state event IDs among ours", "all", sorted(theirs - ours))


def it_joins_by_alias(ctx: Context, version: str) -> None:
    """Its user joins the room we host by its alias (directory query, make_join,
    send_join); we accept the join."""
    alias_local = f"conformance-{secrets.token_hex(4)}"
    room = ctx.peer.create_room(
        PEER_USER, room_version=version, alias=alias_local, preset="public_chat"
    )
    joined = client_call(
        ctx.user, "POST", f"/join/{q(f'#{alias_local}:{ctx.peer.server_name}')}", {}
    )
    expect("the room ID the alias resolved to", room.room_id, joined.get("room_id"))
    event = ctx.peer.wait_for_event(room.room_id, type="m.room.member", state_key=ctx.user.user_id)
    expect("its join's membership", "join", event.content.get("membership"))
    expect_accepted("our verdict on its join", event)


def it_invites_us(ctx: Context, version: str) -> None:
    """Its user invites ours (v2 invite, which we countersign); we join through it."""
    room_id = ctx.user.create_room(
        preset="private_chat", room_version=version, invite=[ctx.peer_user_id()]
    )
    ctx.peer.wait_for_request(
        "/_matrix/federation/v2/invite/", match=lambda r: room_id in _unquoted(r)
    )
    ctx.peer_joins(room_id)


def we_invite_it(ctx: Context, version: str) -> None:
    """We invite its user to a private room we host; its client sees the invite, joins,
    and we accept the join."""
    stream = SyncStream(ctx.user)
    room = ctx.peer.create_room(PEER_USER, room_version=version, preset="private_chat")
    ctx.peer.invite(room.room_id, ctx.user.user_id, PEER_USER)
    stream.wait("the invite in its client's /sync", lambda a: invited(a, room.room_id))
    ctx.user.join(room.room_id, via=[ctx.peer.server_name])
    event = ctx.peer.wait_for_event(
        room.room_id,
        type="m.room.member",
        state_key=ctx.user.user_id,
        match=lambda e: e.content.get("membership") == "join",
    )
    expect_accepted("our verdict on its join", event)


def we_leave(ctx: Context, version: str) -> None:
    """We leave its room (make_leave, send_leave); its member list shows us left."""
    room_id = ctx.join_homeserver_room(version)
    ctx.peer.leave(room_id, PEER_USER)
    wait_until(
        "our user in its member list",
        membership_is(ctx.user, room_id, ctx.peer_user_id(), "leave"),
        expected="membership 'leave'",
    )


def its_message_reaches_us(ctx: Context, version: str) -> None:
    """A message its user sends reaches us, accepted, under the event ID it gave."""
    room_id = ctx.join_homeserver_room(version)
    event_id = ctx.user.send_message(room_id, "hello from the homeserver")
    event = ctx.peer.wait_for_event(room_id, event_id=event_id)
    expect_accepted("our verdict on its message", event)
    expect("its message's body", "hello from the homeserver", event.content.get("body"))


def it_sends_into_our_room(ctx: Context, version: str) -> None:
    """Its user joins a room we host by its alias and sends a message there: the message
    reaches us in a transaction (``PUT /send``), accepted (Complement's
    TestOutboundFederationSend)."""
    alias_local = f"outbound-{secrets.token_hex(4)}"
    room = ctx.peer.create_room(
        PEER_USER, room_version=version, alias=alias_local, preset="public_chat"
    )
    ctx.user.join(f"#{alias_local}:{ctx.peer.server_name}")
    text = f"into your room {secrets.token_hex(6)}"
    event_id = ctx.user.send_message(room.room_id, text)
    event = ctx.peer.wait_for_event(room.room_id, event_id=event_id)
    expect_accepted("our verdict on its message in our room", event)

    def carries_it(entry: dict[str, Any]) -> bool:
        content = entry.get("content")
        pdus = content.get("pdus") if isinstance(content, dict) else None
        return any(
            isinstance(p, dict) and (p.get("content") or {}).get("body") == text for p in pdus or []
        )

    ctx.peer.wait_for_request("/_matrix/federation/v1/send/", method="PUT", match=carries_it)


def our_message_reaches_it(ctx: Context, version: str) -> None:
    """A message we send is readable by its client under the event ID we computed."""
    room_id = ctx.join_homeserver_room(version)
    event_id = ctx.peer.send_message(room_id, "hello from stubserver", sender=PEER_USER)
    seen = ctx.wait_visible(room_id, event_id, "our message")
    expect("our message's body", "hello from stubserver", seen["content"].get("body"))
    expect("our message's sender", ctx.peer_user_id(), seen.get("sender"))


def it_backfills(ctx: Context, version: str) -> None:
    """Its user joins our room that has history; scrolling back, it backfills from us."""
    alias_local = f"history-{secrets.token_hex(4)}"
    room = ctx.peer.create_room(
        PEER_USER, room_version=version, alias=alias_local, preset="public_chat"
    )
    history = [
        ctx.peer.send_message(room.room_id, f"before you came, {i}", sender=PEER_USER)
        for i in range(3)
    ]
    ctx.user.join(f"#{alias_local}:{ctx.peer.server_name}")

    def all_history() -> bool | NotYet:
        chunk = ctx.user.messages(room.room_id, limit=50)["chunk"]
        got = len(set(history) & {e["event_id"] for e in chunk})
        return True if got == len(history) else NotYet(f"{got} of them")

    wait_until(
        "our history in its client's /messages",
        all_history,
        expected=f"all {len(history)} events",
    )
    ctx.peer.wait_for_request(
        "/_matrix/federation/v1/backfill/", match=lambda r: room.room_id in _unquoted(r)
    )


def _gap_filled(ctx: Context, room_id: str, missing: list[str], *, state_may_fill: bool) -> str:
    """How it filled the gap of ``missing`` (``gaps.judge_gap_fill`` on our request log),
    given a few seconds for its last requests to be logged; the way, as the pass's note."""

    def probe() -> str | NotYet:
        try:
            return judge_gap_fill(
                ctx.peer.requests(), room_id, missing, state_may_fill=state_may_fill
            )
        except CheckFailed as e:
            return NotYet(e.got)

    return wait_until(
        gap_what(missing),
        probe,
        timeout=GAP_REQUESTS_SECONDS,
        expected=allowed_ways(state_may_fill),
    )


def it_fetches_a_missing_event(ctx: Context, version: str) -> str:
    """An event we withhold, then one naming it in prev_events: its client sees both, so
    it fetched the withheld one from us, by get_missing_events or by /event (either is
    right: the note says which)."""
    room_id = ctx.join_homeserver_room(version)
    withheld = ctx.send_text(room_id, "withheld", destinations=[])
    after = ctx.peer.send_message(room_id, "after the gap", sender=PEER_USER)
    ctx.wait_visible(room_id, after, "the event after the gap")
    ctx.wait_visible(room_id, withheld, "the withheld event")
    return _gap_filled(ctx, room_id, [withheld], state_may_fill=False)


def it_fills_a_deep_gap(ctx: Context, version: str) -> str:
    """More events withheld in a row than get_missing_events returns by default: its
    client sees the event after them, and it filled the gap by a way the spec allows:
    get_missing_events covering it all, state_ids (and event), or /event one by one (the
    note says which)."""
    room_id = ctx.join_homeserver_room(version)
    missing = [
        ctx.send_text(room_id, f"withheld {i}", destinations=[]) for i in range(DEEP_GAP_EVENTS)
    ]
    after = ctx.peer.send_message(room_id, "after the deep gap", sender=PEER_USER)
    ctx.wait_visible(room_id, after, "the event after the deep gap")
    return _gap_filled(ctx, room_id, missing, state_may_fill=True)


def _unquoted(entry: dict[str, object]) -> str:
    from urllib.parse import unquote  # noqa: PLC0415

    return unquote(str(entry.get("uri", "")))


AREA: list[tuple[str, str, VersionTest]] = [
    ("rooms.we_join_its_room", JOINING, we_join),
    ("rooms.it_joins_our_room_by_alias", JOINING, it_joins_by_alias),
    ("rooms.it_invites_us", INVITING, it_invites_us),
    ("rooms.we_invite_it", INVITING, we_invite_it),
    ("rooms.we_leave", LEAVING, we_leave),
    ("messages.its_message_reaches_us", TRANSACTIONS, its_message_reaches_us),
    ("messages.our_message_reaches_it", TRANSACTIONS, our_message_reaches_it),
    ("messages.it_sends_into_our_room", TRANSACTIONS, it_sends_into_our_room),
    ("messages.it_backfills_our_history", BACKFILL, it_backfills),
    ("messages.it_fetches_a_missing_event", BACKFILL, it_fetches_a_missing_event),
    ("messages.it_fills_a_deep_gap", BACKFILL, it_fills_a_deep_gap),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
