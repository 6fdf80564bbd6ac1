"""Knocking on its rooms, per room version and per join rule that permits knocking
(``knock``, and ``knock_restricted`` from v10; Complement area D): a knock we build by
hand from its ``make_knock`` template is accepted by ``send_knock``, whose answer
carries the room's stripped state, and the six events Complement's
``TestCannotSendNonKnockViaSendKnock`` sends in its place are refused.

Spec: Server-Server API v1.19, "Knocking upon a room": ``PUT
/_matrix/federation/v1/send_knock`` "MUST apply certain validation before accepting the
event ... The event type is not ``m.room.member``. The ``membership`` field inside the
event content is not ``knock``. ... The ``state_key`` is not equal to the ``sender``";
its 200 answer's ``knock_room_state`` "MUST contain the ``m.room.create`` event for the
room". Room versions: ``knock`` from v7, ``knock_restricted`` from v10.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stubserver.conformance import handshakes
from stubserver.conformance.context import AreaEntry, Context, expect, per_version
from stubserver.conformance.runner import CheckFailed, ConformanceTest

SEND_KNOCK = "Knocking upon a room: PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}"
#: The join rules that let anyone knock, and the id prefix of each one's tests.
RULES = {"knock": "knocks", "knock_restricted": "knocks_restricted"}


def knock_room(ctx: Context, version: str, rule: str) -> str:
    """A room of its user's, of ``version``, whose join rule is ``rule`` (for
    ``knock_restricted``, an ``allow`` of a room no user of ours is in); one per version
    and rule, which the tests share (each with users of its own)."""
    return ctx.shared(("knocks", version, rule), lambda: _new_knock_room(ctx, version, rule))


def _new_knock_room(ctx: Context, version: str, rule: str) -> str:
    content: dict[str, Any] = {"join_rule": rule}
    if rule == "knock_restricted":
        other = ctx.user.create_room(preset="private_chat", room_version=version)
        content["allow"] = [{"type": "m.room_membership", "room_id": other}]
    initial = [{"type": "m.room.join_rules", "state_key": "", "content": content}]
    return ctx.user.create_room(
        preset="private_chat", room_version=version, extra={"initial_state": initial}
    )


def _fresh(ctx: Context) -> Callable[[], str]:
    return lambda: ctx.peer_user_id(handshakes.local("knocker"))


def _knock_accepted(rule: str) -> Callable[[Context, str], str]:
    def test(ctx: Context, version: str) -> str:
        room_id = knock_room(ctx, version, rule)
        _, body = handshakes.by_hand(ctx, "knock", room_id, version, _fresh(ctx)())
        state = body.get("knock_room_state")
        if not isinstance(state, list):
            raise CheckFailed("its send_knock answer's knock_room_state", "a list", body)
        creates = [
            e.get("content", {}).get("room_version")
            for e in state
            if isinstance(e, dict) and e.get("type") == "m.room.create"
        ]
        expect("the room_version of the m.room.create in its knock_room_state", [version], creates)
        rules = [
            e.get("content", {}).get("join_rule")
            for e in state
            if isinstance(e, dict) and e.get("type") == "m.room.join_rules"
        ]
        return f"knock_room_state: {len(state)} events, join_rules {rules}"

    test.__doc__ = (
        f"In its room with join rule ``{rule}``, a knock we build from its ``make_knock`` "
        "template (``ver`` the room's version) and sign is accepted by ``send_knock``: 200 "
        "with ``knock_room_state`` holding the room's ``m.room.create`` (\"MUST contain "
        'the m.room.create event for the room"), and its client lists our user as '
        "knocking."
    )
    return test


def _refused(rule: str, corruption: handshakes.Corruption) -> Callable[[Context, str], str]:
    def test(ctx: Context, version: str) -> str:
        room_id = knock_room(ctx, version, rule)
        return handshakes.refused_send(
            ctx, "knock", room_id, version, corruption, fresh_user=_fresh(ctx), before=None
        )

    test.__doc__ = (
        f"In its room with join rule ``{rule}``, ``send_knock`` with {corruption.what} "
        "built from its ``make_knock`` template is refused (400 or 403); after a later "
        "right knock of another user is accepted, the first has no membership."
    )
    return test


def _entries(rule: str, prefix: str) -> list[AreaEntry]:
    baseline = f"{prefix}.hand_built_knock_accepted"
    return [
        (baseline, SEND_KNOCK, _knock_accepted(rule)),
        *(
            (f"{prefix}.send_knock_{c.name}_refused", SEND_KNOCK, _refused(rule, c), (baseline,))
            for c in handshakes.corruptions("knock")
        ),
    ]


AREA: list[AreaEntry] = [e for rule, prefix in RULES.items() for e in _entries(rule, prefix)]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
