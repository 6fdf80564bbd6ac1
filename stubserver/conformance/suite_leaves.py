"""Leaving its rooms by the handshake, per room version (Complement area B): a leave we
build by hand from its ``make_leave`` template is accepted by ``send_leave`` v2, and the
six events Complement's ``TestCannotSendNonLeaveViaSendLeaveV2`` sends in its place are
refused.

Spec: Server-Server API v1.19, "Leaving Rooms (Rejecting Invites)": ``PUT
/_matrix/federation/v2/send_leave`` "MUST apply certain validation before accepting the
event ... The event type is not ``m.room.member``. The ``membership`` field inside the
event content is not ``leave``. ... The ``state_key`` is not equal to the ``sender``."
"""

from __future__ import annotations

from collections.abc import Callable

from stubserver.conformance import handshakes
from stubserver.conformance.context import (
    AreaEntry,
    Context,
    per_version,
)
from stubserver.conformance.runner import ConformanceTest

SEND_LEAVE = (
    "Leaving Rooms (Rejecting Invites): PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}"
)
BASELINE = "leaves.hand_built_leave_accepted"


def leave_room(ctx: Context, version: str) -> str:
    """Its public room of ``version`` that this area's tests share (each with users of
    its own)."""
    return ctx.shared(
        ("leaves", version),
        lambda: ctx.user.create_room(preset="public_chat", room_version=version),
    )


def _joined_user(ctx: Context, room_id: str) -> Callable[[], str]:
    """A maker of users of ours joined to ``room_id`` (through its make_join/send_join)
    whom its member list shows joined."""

    def fresh() -> str:
        return handshakes.joined_user(ctx, room_id, "leaver")

    return fresh


def hand_built(endpoint: str) -> Callable[[Context, str], str]:
    """The baseline over ``send_leave`` of version ``endpoint``."""

    def test(ctx: Context, version: str) -> str:
        room_id = leave_room(ctx, version)
        user_id = _joined_user(ctx, room_id)()
        handshakes.by_hand(ctx, "leave", room_id, version, user_id, endpoint=endpoint)
        return "left"

    test.__doc__ = (
        "A user of ours in its room leaves by a leave we build from its ``make_leave`` "
        "template (``sender`` and ``state_key`` our user, ``membership`` ``leave``) and "
        f"sign: ``send_leave`` {endpoint} answers 200"
        + (" as ``[200, {}]``" if endpoint == "v1" else "")
        + " and its client lists our user left."
    )
    return test


hand_built_leave_accepted = hand_built("v2")


def refused(
    corruption: handshakes.Corruption, endpoint: str = "v2"
) -> Callable[[Context, str], str]:
    """The test that ``send_leave`` of version ``endpoint`` refuses ``corruption``."""

    def test(ctx: Context, version: str) -> str:
        room_id = leave_room(ctx, version)
        return handshakes.refused_send(
            ctx,
            "leave",
            room_id,
            version,
            corruption,
            fresh_user=_joined_user(ctx, room_id),
            before="join",
            endpoint=endpoint,
        )

    test.__doc__ = (
        f"``send_leave`` {endpoint} with {corruption.what} built from its ``make_leave`` template "
        "for a joined user of ours is refused (400 or 403); after a later right leave of "
        "another user is accepted, our first user is still joined."
    )
    return test


AREA: list[AreaEntry] = [
    (BASELINE, SEND_LEAVE, hand_built_leave_accepted),
    *(
        (f"leaves.send_leave_{c.name}_refused", SEND_LEAVE, refused(c), (BASELINE,))
        for c in handshakes.corruptions("leave")
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
