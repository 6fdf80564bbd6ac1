"""Typing notifications and receipts, both ways, per room version.

Spec: Server-Server API v1.19, "Typing Notifications", "Receipts".
"""

from __future__ import annotations

from collections.abc import Callable

from stubserver.conformance.context import (
    PEER_USER,
    Context,
    SyncStream,
    ephemeral,
    per_version,
)
from stubserver.conformance.runner import ConformanceTest

TYPING = "Typing Notifications"
RECEIPTS = "Receipts"


def _room_it_sends_to_us(ctx: Context, version: str) -> str:
    """A room of ``version`` we joined, once a message of its user has reached us
    (:meth:`Context.wait_counted_in_room`). The room ID."""
    room_id = ctx.join_homeserver_room(version)
    ctx.wait_counted_in_room(room_id)
    return room_id


def its_typing_reaches_us(ctx: Context, version: str) -> None:
    """Its user typing in a room we share reaches us as an m.typing EDU ("When a server's
    users send typing notifications, those notifications need to be sent to other servers
    in the room"), once its message has shown that it counts us among them."""
    room_id = _room_it_sends_to_us(ctx, version)
    ctx.user.typing(room_id, True)
    ctx.peer.wait_for_edu(
        "m.typing",
        origin=ctx.server_name,
        match=lambda e: (
            e.content.get("room_id") == room_id
            and e.content.get("user_id") == ctx.user.user_id
            and e.content.get("typing") is True
        ),
    )


def our_typing_reaches_it(ctx: Context, version: str) -> None:
    """Our m.typing EDU shows our user typing in its client's /sync."""
    room_id = ctx.join_homeserver_room(version)
    stream = SyncStream(ctx.user)
    user_id = ctx.peer_user_id()
    ctx.peer.send_edu(room_id, "m.typing", {"room_id": room_id, "user_id": user_id, "typing": True})
    stream.wait(
        "our user typing in its client's /sync",
        lambda a: user_id in (ephemeral(a, room_id).get("m.typing", {}).get("user_ids") or []),
        seen=lambda a: ephemeral(a, room_id).get("m.typing"),
    )


def its_receipt_reaches_us(ctx: Context, version: str) -> None:
    """Its user's read receipt reaches us as an m.receipt EDU naming the event, once its
    message has shown that it counts us among the servers in the room."""
    room_id = _room_it_sends_to_us(ctx, version)
    message = ctx.send_text(room_id, "read me")
    ctx.wait_visible(room_id, message, "our message")
    ctx.user.receipt(room_id, message)
    ctx.peer.wait_for_edu(
        "m.receipt",
        origin=ctx.server_name,
        match=lambda e: (
            message
            in (
                ((e.content.get(room_id) or {}).get("m.read") or {}).get(ctx.user.user_id) or {}
            ).get("event_ids", [])
        ),
    )


def our_receipt_reaches_it(ctx: Context, version: str) -> None:
    """Our m.receipt EDU shows in its client's /sync for the event it names."""
    room_id = ctx.join_homeserver_room(version)
    message = ctx.user.send_message(room_id, "read by stubserver")
    ctx.peer.wait_for_event(room_id, event_id=message)
    stream = SyncStream(ctx.user)
    user_id = ctx.peer_user_id(PEER_USER)
    ctx.peer.send_edu(
        room_id,
        "m.receipt",
        {room_id: {"m.read": {user_id: {"data": {"ts": 1}, "event_ids": [message]}}}},
    )
    stream.wait(
        "our receipt in its client's /sync",
        lambda a: (
            user_id
            in (ephemeral(a, room_id).get("m.receipt", {}).get(message, {}).get("m.read") or {})
        ),
        seen=lambda a: ephemeral(a, room_id).get("m.receipt"),
    )


AREA: list[tuple[str, str, Callable[[Context, str], None]]] = [
    ("edus.its_typing_reaches_us", TYPING, its_typing_reaches_us),
    ("edus.our_typing_reaches_it", TYPING, our_typing_reaches_it),
    ("edus.its_receipt_reaches_us", RECEIPTS, its_receipt_reaches_us),
    ("edus.our_receipt_reaches_it", RECEIPTS, our_receipt_reaches_it),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
