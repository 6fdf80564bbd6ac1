"""Restricted joins into its rooms, per room version and per join rule with an ``allow``
list (``restricted``, ``knock_restricted``; Complement area E, role-swapped: we are the
joining server, it is the resident and authorising one): a user of ours in the allowed
room joins, and its server names one of its users in ``join_authorised_via_users_server``
and signs the join; a user of ours not in the allowed room is refused.

Spec: Server-Server API v1.19, "Restricted rooms" ("A resident server processing a
request to join a restricted room must ensure that the joining server satisfies at least
one of the conditions ... If the joining server fails all conditions then a 403
``M_FORBIDDEN`` error is used"), ``PUT /v2/send_join`` (``event``: "Required if the room
is restricted and the joining user is authorised by one of the conditions"); Client-Server
API "Restricted rooms"; room versions 8+ auth rules for ``join_authorised_via_users_server``
("the user ... must have a power level greater than or equal to the invite level", and
the event "must be signed by the server of that user").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stubserver.conformance import handshakes
from stubserver.conformance.context import (
    AreaEntry,
    Context,
    expect,
    membership_is,
    per_version,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.conformance.suite_serving import federation_keys
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.signing import EventSignatureError, verify_event_signature
from stubserver.rooms.versions import room_version

RESTRICTED = "Restricted rooms"
#: The join rules with an ``allow`` list, and the id prefix of each one's tests.
RULES = {"restricted": "restricted", "knock_restricted": "restricted.knock_restricted"}
AUTHORISED = "join_authorised_via_users_server"


def restricted_room(ctx: Context, version: str, rule: str) -> tuple[str, str]:
    """Its room of ``version`` with join rule ``rule`` allowing the members of another
    (public) room of its: (the allowed room, the restricted room); one pair per version
    and rule, which the tests share (each with users of its own)."""
    return ctx.shared(("restricted", version, rule), lambda: _new_restricted(ctx, version, rule))


def _new_restricted(ctx: Context, version: str, rule: str) -> tuple[str, str]:
    allowed = ctx.user.create_room(preset="public_chat", room_version=version)
    content = {"join_rule": rule, "allow": [{"type": "m.room_membership", "room_id": allowed}]}
    initial = [{"type": "m.room.join_rules", "state_key": "", "content": content}]
    room_id = ctx.user.create_room(
        preset="private_chat", room_version=version, extra={"initial_state": initial}
    )
    return allowed, room_id


def _invite_level(ctx: Context, room_id: str, user_id: str) -> tuple[int, int]:
    """``user_id``'s power level in the room and the room's invite level."""
    levels: dict[str, Any] = {}
    for event in ctx.user.state(room_id):
        if event.get("type") == "m.room.power_levels" and event.get("state_key") == "":
            levels = event.get("content") or {}
    users = levels.get("users") or {}
    return int(users.get(user_id, levels.get("users_default", 0))), int(levels.get("invite", 0))


def authorised_join(ctx: Context, room_id: str, allowed: str, version: str) -> str:
    """A user of ours in ``allowed`` joins ``room_id`` by hand; the checks of
    :func:`_join_authorised` on its template and answer. The authorising user."""
    user_id = handshakes.joined_user(ctx, allowed, "allowed")
    template = handshakes.template(ctx, "join", room_id, user_id, version)
    via = (template.get("content") or {}).get(AUTHORISED)
    if not isinstance(via, str) or via.partition(":")[2] != ctx.server_name:
        raise CheckFailed(
            f"its make_join template's content.{AUTHORISED}", f"a user of {ctx.server_name}", via
        )
    level, invite = _invite_level(ctx, room_id, via)
    if level < invite:
        raise CheckFailed(
            f"the power level of {via}, named in {AUTHORISED}",
            f">= the invite level {invite}",
            level,
        )
    event_id, pdu = handshakes.signed(ctx, template, version)
    answer = handshakes.send(ctx, "join", room_id, event_id, pdu)
    expect("its send_join status", 200, answer.status, answer=answer.body)
    body = answer.body if isinstance(answer.body, dict) else {}
    event = body.get("event")
    if not isinstance(event, dict):
        raise CheckFailed(
            "its send_join answer's event (required for a restricted join)",
            "the signed join",
            body.get("event"),
        )
    rv = room_version(version)
    expect(
        "the event ID of the join in its send_join answer", event_id, compute_event_id(event, rv)
    )
    expect(
        f"the {AUTHORISED} of the join it returned",
        via,
        (event.get("content") or {}).get(AUTHORISED),
    )
    keys = federation_keys(ctx).get(ctx.server_name) or {}
    block = (event.get("signatures") or {}).get(ctx.server_name) or {}
    problems = []
    for key_id in block:
        if key_id not in keys:
            problems.append(f"{key_id}: not among its published keys")
            continue
        try:
            verify_event_signature(event, rv, ctx.server_name, key_id, keys[key_id])
        except EventSignatureError as e:
            problems.append(str(e))
            continue
        break
    else:
        raise CheckFailed(
            "its signature on the join it returned", "valid", "; ".join(problems) or "none"
        )
    wait_until(
        f"{user_id} in its member list of the restricted room",
        membership_is(ctx.user, room_id, user_id, "join"),
        expected="membership 'join'",
    )
    return via


def _join_authorised(rule: str) -> Callable[[Context, str], str]:
    def test(ctx: Context, version: str) -> str:
        allowed, room_id = restricted_room(ctx, version, rule)
        return f"authorised by {authorised_join(ctx, room_id, allowed, version)}"

    test.__doc__ = (
        f"In its room with join rule ``{rule}`` allowing the members of another room of its, "
        f"a user of ours in that room joins: its ``make_join`` template's content names in "
        f"``{AUTHORISED}`` a user of its server whose power level is at least the invite "
        "level, and ``send_join`` answers 200 with ``event``: our join with that field, "
        "signed by its server; its client lists our user joined."
    )
    return test


def _outsider_refused(rule: str) -> Callable[[Context, str], str]:
    def test(ctx: Context, version: str) -> str:
        allowed, room_id = restricted_room(ctx, version, rule)
        outsider = ctx.peer_user_id(handshakes.local("outsider"))
        made = handshakes.make(ctx, "join", room_id, outsider, version)
        answer, path = made, "make_join"
        body = made.body if isinstance(made.body, dict) else {}
        if made.status == 200 and isinstance(body.get("event"), dict):
            event_id, pdu = handshakes.signed(ctx, body["event"], version)
            answer, path = handshakes.send(ctx, "join", room_id, event_id, pdu), "send_join"
        refusal = answer.body if isinstance(answer.body, dict) else {}
        what = f"its {path} for a user of ours in none of the allowed rooms"
        expect(f"{what}: status", 403, answer.status, answer=answer.body)
        expect(f"{what}: errcode", "M_FORBIDDEN", refusal.get("errcode"), answer=answer.body)
        authorised_join(ctx, room_id, allowed, version)
        expect(
            f"{outsider}'s membership after the refusal (and a later join accepted)",
            None,
            ctx.user.members(room_id).get(outsider),
        )
        return f"refused at {path}"

    test.__doc__ = (
        f"In its room with join rule ``{rule}``, a user of ours in none of the allowed rooms "
        'is refused 403 ``M_FORBIDDEN`` ("If the joining server fails all conditions"), at '
        "``make_join`` or, when that gives a template, at ``send_join`` (the note says "
        "which); after a later authorised join of another user is accepted, it has no "
        "membership."
    )
    return test


def _entries(rule: str, prefix: str) -> list[AreaEntry]:
    baseline = f"{prefix}.join_authorised_by_its_user"
    return [
        (baseline, RESTRICTED, _join_authorised(rule)),
        (f"{prefix}.outsider_refused", RESTRICTED, _outsider_refused(rule), (baseline,)),
    ]


AREA: list[AreaEntry] = [e for rule, prefix in RULES.items() for e in _entries(rule, prefix)]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version."""
    return per_version(AREA, versions)
