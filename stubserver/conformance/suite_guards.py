"""What it must not take from us: EDUs that speak for users we do not host or who are
not in the room, and PDUs and EDUs from a server the room's ACL denies. Per room version.

Each refusal is judged after a marker that we send later and that it took (our user's
typing, a message of ours), never right after an answer: a server that processes the
refused thing late fails too.

Spec: Server-Server API v1.19, "Typing Notifications", "Receipts", "Server Access
Control Lists (ACLs)"; Client-Server API v1.19, "Server Access Control Lists (ACLs) for
rooms" (m.room.server_acl).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from stubserver.conformance.context import (
    PEER_USER,
    PEER_USER_2,
    AreaEntry,
    Context,
    SyncStream,
    ephemeral,
    expect,
    per_version,
    visible_event,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.conformance.suite_pdus import _put_transaction, _withheld_pdus

TYPING = "Typing Notifications"
RECEIPTS = "Receipts"
ACLS = "Server Access Control Lists (ACLs)"
ACL_EVENT = "m.room.server_acl"


def _typing(room_id: str, user_id: str) -> dict[str, Any]:
    content = {"room_id": room_id, "user_id": user_id, "typing": True}
    return {"edu_type": "m.typing", "content": content}


def _receipt(room_id: str, user_id: str, event_id: str) -> dict[str, Any]:
    read = {user_id: {"data": {"ts": 1}, "event_ids": [event_id]}}
    return {"edu_type": "m.receipt", "content": {room_id: {"m.read": read}}}


def _send_edus(ctx: Context, what: str, edus: list[dict[str, Any]]) -> None:
    """One transaction of ``edus``; the answer comes once it has taken them in."""
    answer = _put_transaction(ctx, secrets.token_hex(8), [], edus)
    expect(f"the status of the transaction with {what} ({answer.body})", 200, answer.status)


class EphemeralLog:
    """Every typing list and receipt its client's /sync showed in a room, until a wait
    for the marker ends."""

    def __init__(self, stream: SyncStream, room_id: str) -> None:
        self.stream = stream
        self.room_id = room_id
        self.typing: list[str] = []
        self.receipts: list[tuple[str, str]] = []

    def wait_for_typing(self, what: str, user_id: str) -> None:
        """Sync until ``user_id`` types (the marker), logging what came before."""

        def probe(answer: dict[str, Any]) -> bool:
            found = ephemeral(answer, self.room_id)
            typers = (found.get("m.typing") or {}).get("user_ids") or []
            self.typing.extend(typers)
            for event_id, kinds in (found.get("m.receipt") or {}).items():
                for reader in (kinds or {}).get("m.read") or {}:
                    self.receipts.append((reader, event_id))
            return user_id in typers

        self.stream.wait(what, probe, seen=lambda a: ephemeral(a, self.room_id))


def _spoofed_typing(claimed: Callable[[Context], str], fact: str) -> Callable[[Context, str], None]:
    """A test that our m.typing EDU for the user ``claimed`` names is ignored: after our
    own user's typing (sent later) shows in its /sync, that user never showed typing."""

    def test(ctx: Context, version: str) -> None:
        room_id = ctx.join_homeserver_room(version)
        log = EphemeralLog(SyncStream(ctx.user), room_id)
        spoofed = claimed(ctx)
        _send_edus(ctx, f"m.typing for {spoofed}", [_typing(room_id, spoofed)])
        marker = ctx.peer_user_id()
        _send_edus(ctx, "the marker (our user typing)", [_typing(room_id, marker)])
        log.wait_for_typing("our user typing (the marker) in its /sync", marker)
        if spoofed in log.typing:
            raise CheckFailed(
                f"typing of {spoofed} sent by {ctx.peer.server_name}", "ignored", "shown typing"
            )

    test.__doc__ = fact
    return test


def _spoofed_receipt(
    claimed: Callable[[Context], str], fact: str
) -> Callable[[Context, str], None]:
    """A test that our m.receipt EDU for the user ``claimed`` names is ignored: after our
    own user's typing (sent later) shows in its /sync, no receipt of that user showed."""

    def test(ctx: Context, version: str) -> None:
        room_id = ctx.join_homeserver_room(version)
        message = ctx.send_text(room_id, "read me, or not")
        ctx.wait_visible(room_id, message, "our message")
        log = EphemeralLog(SyncStream(ctx.user), room_id)
        spoofed = claimed(ctx)
        _send_edus(ctx, f"a receipt of {spoofed}", [_receipt(room_id, spoofed, message)])
        marker = ctx.peer_user_id()
        _send_edus(ctx, "the marker (our user typing)", [_typing(room_id, marker)])
        log.wait_for_typing("our user typing (the marker) in its /sync", marker)
        if (spoofed, message) in log.receipts:
            raise CheckFailed(
                f"a receipt of {spoofed} sent by {ctx.peer.server_name}", "ignored", "shown"
            )

    test.__doc__ = fact
    return test


def _its_user(ctx: Context) -> str:
    """A user of the homeserver, joined to the room: not ours to speak for."""
    return ctx.user.user_id


def _our_non_member(ctx: Context) -> str:
    """A user of ours who never joined the room."""
    return ctx.peer_user_id(f"conformance-absent-{secrets.token_hex(3)}")


def _deny_us(ctx: Context, room_id: str) -> str:
    content = {"allow": ["*"], "deny": [ctx.peer.server_name], "allow_ip_literals": True}
    return ctx.user.send_state(room_id, ACL_EVENT, content)


def _allow_all(ctx: Context, room_id: str) -> str:
    content = {"allow": ["*"], "deny": [], "allow_ip_literals": True}
    return ctx.user.send_state(room_id, ACL_EVENT, content)


def denied_pdu_refused(ctx: Context, version: str) -> str:
    """With an ACL that denies our server, our PDU in a transaction gets an error in the
    answer's ``pdus`` and is not taken: once the ACL allows us again, our next message
    (whose prev_events skip it) is readable and the refused one still is not ("Server
    Access Control Lists": "When a remote server makes a request, it MUST be verified to
    be allowed by the server ACLs", ``/send`` "on a per-PDU basis")."""
    room_id = ctx.join_homeserver_room(version)
    _deny_us(ctx, room_id)
    [(denied_id, pdu)] = _withheld_pdus(ctx, room_id, 1)
    answer = _put_transaction(ctx, secrets.token_hex(8), [pdu], [])
    expect(f"the transaction's status ({answer.body})", 200, answer.status)
    result = ((answer.body or {}).get("pdus") or {}).get(denied_id)
    if not isinstance(result, dict) or "error" not in result:
        raise CheckFailed("the denied PDU's result in the answer", "an error", result)
    allowed = _allow_all(ctx, room_id)
    ctx.peer.wait_for_event(room_id, event_id=allowed)
    marker = ctx.send_text(room_id, "marker once allowed", prev_events=[allowed])
    ctx.wait_visible(room_id, marker, "our message once the ACL allows us")
    expect(
        "our PDU sent while denied, as its client sees it once the marker is readable",
        None,
        visible_event(ctx.user, room_id, denied_id),
    )
    return f"its answer for the denied PDU: {result}"


def denied_edus_dropped(ctx: Context, version: str) -> None:
    """With an ACL that denies our server, our m.typing and m.receipt EDUs for the room
    are dropped: once the ACL allows us again, our second user's typing (the marker)
    shows, and neither the first user's typing nor its receipt ever did ("Server Access
    Control Lists": a typing notification from a denied server is "ignored ... the EDU
    MUST be dropped upon receipt"; its receipts "should be ignored")."""
    room_id = ctx.join_homeserver_room(version, users=(PEER_USER, PEER_USER_2))
    message = ctx.user.send_message(room_id, "read while denied")
    ctx.peer.wait_for_event(room_id, event_id=message)
    log = EphemeralLog(SyncStream(ctx.user), room_id)
    first, marker = ctx.peer_user_id(PEER_USER), ctx.peer_user_id(PEER_USER_2)
    _deny_us(ctx, room_id)
    edus = [_typing(room_id, first), _receipt(room_id, first, message)]
    _send_edus(ctx, "typing and a receipt while denied", edus)
    _allow_all(ctx, room_id)
    _send_edus(ctx, "the marker (our second user typing)", [_typing(room_id, marker)])
    log.wait_for_typing("our second user typing (the marker) in its /sync", marker)
    if first in log.typing:
        raise CheckFailed("our typing sent while denied", "dropped", "shown typing")
    if (first, message) in log.receipts:
        raise CheckFailed("our receipt sent while denied", "dropped", "shown")


AREA: list[AreaEntry] = [
    (
        "edus.typing_of_its_user_from_us_ignored",
        TYPING,
        _spoofed_typing(
            _its_user,
            "Our m.typing EDU claiming its own user (in the room) is ignored: receiving"
            " servers should verify that the user ... is a user belonging to the sending"
            " server (Typing Notifications).",
        ),
        ("edus.our_typing_reaches_it",),
    ),
    (
        "edus.typing_of_a_non_member_ignored",
        TYPING,
        _spoofed_typing(
            _our_non_member,
            "Our m.typing EDU for a user of ours who is not in the room is ignored:"
            " receiving servers should verify that the user is in the room (Typing"
            " Notifications).",
        ),
        ("edus.our_typing_reaches_it",),
    ),
    (
        "edus.receipt_of_its_user_from_us_ignored",
        RECEIPTS,
        _spoofed_receipt(
            _its_user,
            "Our m.receipt EDU claiming its own user read an event is ignored: a server"
            " speaks for its own users only (as the spec says of typing, the user must"
            " belong to the sending server; Receipts).",
        ),
        ("edus.our_receipt_reaches_it",),
    ),
    ("acl.denied_pdu_refused", ACLS, denied_pdu_refused, ("messages.our_message_reaches_it",)),
    (
        "acl.denied_edus_dropped",
        ACLS,
        denied_edus_dropped,
        ("edus.our_typing_reaches_it", "edus.our_receipt_reaches_it"),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
