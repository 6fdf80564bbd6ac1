"""The authorisation rules for room versions 10, 11 and 12, as pure functions.

Spec: ``content/rooms/v10.md``, ``v11.md``, ``v12.md`` "Authorisation rules" (rule numbers
in comments are v12's, with v10/v11's in brackets where they differ), and
``content/server-server-api.md`` "Auth events selection".

* :func:`auth_types_for_event` is the auth events selection: which ``(type, state_key)``
  entries of the room state give the sender permission to send an event.
* :func:`check_auth_events_selection` is the state-independent part of the rules (v12
  rule 3, v10/v11 rule 2) over an event's own ``auth_events``.
* :func:`check_auth` is the state-dependent part, run against either the event's auth
  events or the state before it (both as a ``(type, state_key) -> Event`` map). It raises
  :class:`AuthError` naming the rule that failed.

Power levels and memberships are read by ``stubserver.rooms.power_levels``; third-party
invite signatures are checked by ``stubserver.rooms.third_party_invite``.

What is left to the caller, by design (each is a separate pipeline stage):

* cryptographic signature checks. For ``join_authorised_via_users_server`` (rule 5.2)
  we require a signature *block* from that user's server; verifying it is the signature
  stage's job, which checks every signature on the event.
* whether an auth event was itself rejected (rule 3.3): the caller only passes accepted
  events.
* the "Handling redactions" checks: the redact level is **not** part of the auth rules
  (spec note in each version); :func:`may_redact_others` answers it for the later stage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stubserver.rooms.auth_events import auth_event_types
from stubserver.rooms.event import Event, create_event_id_for_room
from stubserver.rooms.power_levels import (
    AuthState,
    creators,
    is_int,
    membership_of,
    named_level,
    required_power_level,
    user_power_level,
)
from stubserver.rooms.third_party_invite import signed_by_any, third_party_public_keys
from stubserver.rooms.versions import RoomVersion

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
CREATE_KEY: tuple[str, str] = (CREATE, "")
POWER_LEVELS_KEY: tuple[str, str] = (POWER_LEVELS, "")
JOIN_RULES_KEY: tuple[str, str] = (JOIN_RULES, "")

# Without an m.room.join_rules event the room is invite-only (Client-Server API).
DEFAULT_JOIN_RULE = "invite"
# Rule 1.3: `content.room_version` must be a version we recognise (the stable ones).
RECOGNISED_ROOM_VERSIONS = frozenset(str(n) for n in range(1, 13))
# Appendices "User Identifiers": at most 255 bytes including the sigil and domain.
MAX_USER_ID_BYTES = 255

LEVEL_KEYS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")
LEVEL_MAP_KEYS = ("events", "notifications")


class AuthError(Exception):
    """The event fails the authorisation rules; ``reason`` names the failed rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_valid_user_id(value: object) -> bool:
    """True for ``@localpart:domain`` within the length limit (the check applied to
    ``sender``, reused for ``additional_creators`` and power level ``users`` keys)."""
    if not isinstance(value, str) or not value.startswith("@"):
        return False
    localpart, sep, domain = value[1:].partition(":")
    return bool(sep and localpart and domain) and len(value.encode()) <= MAX_USER_ID_BYTES


def domain_of(identifier: str) -> str:
    """The server name after the first ``:`` of a user or (v10/v11) room ID, or ``""``."""
    return identifier.partition(":")[2]


def auth_types_for_event(
    room_version: RoomVersion,
    type: str,
    state_key: str | None,
    sender: str,
    content: Mapping[str, Any],
) -> set[tuple[str, str]]:
    """The ``(type, state_key)`` pairs an event's ``auth_events`` may (and should) cite,
    as a set: ``stubserver.rooms.auth_events.auth_event_types`` (the one implementation of
    the spec's "Auth events selection", rooms.md 3.3) in the argument order the auth
    rules and state resolution use.
    """
    return set(auth_event_types(type, state_key, sender, content, room_version))


def check_auth_events_selection(event: Event, auth_events: Sequence[Event]) -> None:
    """The state-independent checks on an event's own ``auth_events`` (v12 rule 3,
    v10/v11 rule 2): same room, no duplicate ``(type, state_key)``, nothing outside the
    selection, and (v10/v11) a create event among them. In v12 the create event is
    implied by ``room_id`` and is not listed; :func:`check_auth` checks it (rule 2).
    Whether an auth event was itself rejected (rule 3.3) is the caller's to check.
    """
    version = event.room_version
    allowed = auth_types_for_event(
        version, event.type, event.state_key, event.sender, event.content
    )
    seen: set[tuple[str, str]] = set()
    for auth_event in auth_events:
        if auth_event.room_id != event.room_id:
            raise AuthError(f"auth_event {auth_event.event_id} is in another room")
        if auth_event.state_key is None:
            raise AuthError(f"unexpected auth_event {auth_event.event_id}: not a state event")
        key = auth_event.state_tuple()
        if key in seen:
            raise AuthError(f"duplicate auth_events entry for {key}")
        seen.add(key)
        if key not in allowed:
            raise AuthError(f"unexpected auth_event {auth_event.event_id} for {key}")
    if event.type == CREATE:
        return
    if not version.room_id_is_create_hash and CREATE_KEY not in seen:
        raise AuthError("no create event in auth events")


# --- the rules ----------------------------------------------------------------------


def _check_create(event: Event) -> None:
    """Rule 1: the create event."""
    version = event.room_version
    if event.prev_event_ids:
        raise AuthError("create event has prev_events (rule 1.1)")
    if version.room_id_is_create_hash:
        if "room_id" in event.pdu:
            raise AuthError("v12 create event has a room_id (rule 1.2)")
    elif not domain_of(event.room_id) or domain_of(event.room_id) != domain_of(event.sender):
        raise AuthError("create event's room_id domain differs from the sender's (rule 1.2)")
    if event.content.get("room_version", "1") not in RECOGNISED_ROOM_VERSIONS:
        raise AuthError("create event names an unrecognised room_version (rule 1.3)")
    if not version.implicit_room_creator and "creator" not in event.content:
        raise AuthError("create event lacks a 'creator' property (v10 rule 1.4)")
    if version.creators_have_infinite_power and "additional_creators" in event.content:
        extra = event.content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError("additional_creators is not a list of valid user IDs (rule 1.4)")


def _check_room(event: Event, auth_state: AuthState) -> Event:
    """v12 rule 2 / v10-v11 rule 2.4-2.5: the create event is there and the auth state
    is this room's. Returns the create event."""
    create = auth_state.get(CREATE_KEY)
    if create is None:
        raise AuthError("no create event in auth events")
    implied = create_event_id_for_room(event.room_id)
    if event.room_version.room_id_is_create_hash and create.event_id != implied:
        raise AuthError("room_id is not the create event's ID (rule 2)")
    for auth_event in auth_state.values():
        if auth_event.room_id != event.room_id:
            raise AuthError(f"auth event {auth_event.event_id} is in another room (rule 3.5)")
    return create


def check_auth(event: Event, auth_state: AuthState) -> None:
    """Apply the authorisation rules of ``event.room_version`` to ``event`` against
    ``auth_state`` (the event's auth events, or the state before it, keyed by
    ``(type, state_key)``; in v12 it must include the create event implied by room_id).

    Raise :class:`AuthError` with the failed rule; return ``None`` when allowed.
    """
    if event.type == CREATE:
        _check_create(event)
        return
    create = _check_room(event, auth_state)
    federate = create.content.get("m.federate", True)
    if federate is False and domain_of(event.sender) != domain_of(create.sender):
        raise AuthError("room is not federated (m.federate false) (rule 4)")
    if event.type == MEMBER:
        _check_membership(event, create, auth_state)
        return
    if membership_of(event.sender, auth_state) != "join":
        raise AuthError("sender is not joined to the room (rule 6)")
    sender_level = user_power_level(event.sender, auth_state)
    if event.type == THIRD_PARTY_INVITE:
        if sender_level < named_level("invite", auth_state):
            raise AuthError("sender lacks the invite level for a third-party invite (rule 7)")
        return
    if sender_level < required_power_level(event.type, event.is_state, auth_state):
        raise AuthError(f"sender lacks the power level to send {event.type} (rule 8)")
    state_key = event.state_key
    if state_key is not None and state_key.startswith("@") and state_key != event.sender:
        raise AuthError("state_key is another user's ID (rule 9)")
    if event.type == POWER_LEVELS and state_key == "":
        _check_power_levels(event, create, auth_state)


def _check_membership(event: Event, create: Event, auth_state: AuthState) -> None:
    """Rule 5 (v10/v11 rule 4): m.room.member."""
    target = event.state_key
    membership = event.membership
    if target is None or membership is None:
        raise AuthError("member event lacks a state_key or membership (rule 5.1)")
    authoriser = event.content.get("join_authorised_via_users_server")
    if authoriser is not None:
        # Rule 5.2: the cryptographic check is the signature stage's; here, the block.
        signatures = event.pdu.get("signatures")
        server = domain_of(authoriser) if isinstance(authoriser, str) else ""
        if not isinstance(signatures, dict) or not server or server not in signatures:
            raise AuthError(
                "not signed by the join_authorised_via_users_server's server (rule 5.2)"
            )
    checks = {
        "join": _check_join,
        "invite": _check_invite,
        "leave": _check_leave,
        "ban": _check_ban,
        "knock": _check_knock,
    }
    check = checks.get(membership)
    if check is None:
        raise AuthError(f"unknown membership {membership!r} (rule 5.8)")
    check(event, target, create, auth_state)


def _join_rule(auth_state: AuthState) -> str:
    event = auth_state.get(JOIN_RULES_KEY)
    rule = event.content.get("join_rule") if event is not None else None
    return rule if isinstance(rule, str) else DEFAULT_JOIN_RULE


def _check_join(event: Event, target: str, create: Event, auth_state: AuthState) -> None:
    """Rule 5.3: joins."""
    prevs = event.prev_event_ids
    # 5.3.1: the room's first join, by the creator (v10: content.creator, v11+: sender),
    # directly after the create event.
    first_joiner = (
        create.sender
        if event.room_version.implicit_room_creator
        else (create.content.get("creator"))
    )
    if prevs == (create.event_id,) and target == first_joiner:
        return
    if event.sender != target:
        raise AuthError("join sender differs from state_key (rule 5.3.2)")
    current = membership_of(target, auth_state)
    if current == "ban":
        raise AuthError("sender is banned (rule 5.3.3)")
    rule = _join_rule(auth_state)
    if rule in ("invite", "knock"):
        if current in ("invite", "join"):
            return
        raise AuthError(f"join rule {rule} and user not invited (rule 5.3.4)")
    if rule in ("restricted", "knock_restricted"):
        if current in ("invite", "join"):
            return
        authoriser = event.content.get("join_authorised_via_users_server")
        if not isinstance(authoriser, str) or membership_of(authoriser, auth_state) != "join":
            raise AuthError(
                "join_authorised_via_users_server is not a joined member (rule 5.3.5.2)"
            )
        if user_power_level(authoriser, auth_state) < named_level("invite", auth_state):
            raise AuthError(
                "join_authorised_via_users_server lacks the invite level (rule 5.3.5.2)"
            )
        return
    if rule == "public":
        return
    raise AuthError(f"join rule {rule!r} does not allow joining (rule 5.3.7)")


def _check_invite(event: Event, target: str, create: Event, auth_state: AuthState) -> None:
    """Rule 5.4: invites, including third-party invites."""
    if "third_party_invite" in event.content:
        _check_third_party_invite(event, target, auth_state)
        return
    if membership_of(event.sender, auth_state) != "join":
        raise AuthError("inviter is not joined (rule 5.4.2)")
    if membership_of(target, auth_state) in ("join", "ban"):
        raise AuthError("invitee is already joined or banned (rule 5.4.3)")
    if user_power_level(event.sender, auth_state) < named_level("invite", auth_state):
        raise AuthError("inviter lacks the invite level (rule 5.4.5)")


def _check_third_party_invite(event: Event, target: str, auth_state: AuthState) -> None:
    """Rule 5.4.1: an invite that redeems an m.room.third_party_invite."""
    if membership_of(target, auth_state) == "ban":
        raise AuthError("third-party invitee is banned (rule 5.4.1.1)")
    third_party = event.content["third_party_invite"]
    signed = third_party.get("signed") if isinstance(third_party, dict) else None
    if not isinstance(signed, dict):
        raise AuthError("third_party_invite has no 'signed' (rule 5.4.1.2)")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite.signed lacks mxid or token (rule 5.4.1.3)")
    if mxid != target:
        raise AuthError("third_party_invite.signed.mxid differs from state_key (rule 5.4.1.4)")
    invite = auth_state.get((THIRD_PARTY_INVITE, token))
    if invite is None:
        raise AuthError("no m.room.third_party_invite for the token (rule 5.4.1.5)")
    if invite.sender != event.sender:
        raise AuthError("sender differs from the third-party invite's sender (rule 5.4.1.6)")
    if not signed_by_any(signed, third_party_public_keys(invite.content)):
        raise AuthError("no signature in 'signed' matches the invite's keys (rule 5.4.1.8)")


def _check_leave(event: Event, target: str, create: Event, auth_state: AuthState) -> None:
    """Rule 5.5: leaving, kicks and unbans."""
    target_membership = membership_of(target, auth_state)
    if event.sender == target:
        if target_membership in ("invite", "join", "knock"):
            return
        raise AuthError(f"cannot leave from membership {target_membership} (rule 5.5.1)")
    if membership_of(event.sender, auth_state) != "join":
        raise AuthError("kicker is not joined (rule 5.5.2)")
    sender_level = user_power_level(event.sender, auth_state)
    if target_membership == "ban" and sender_level < named_level("ban", auth_state):
        raise AuthError("unbanning needs the ban level (rule 5.5.3)")
    if sender_level < named_level("kick", auth_state):
        raise AuthError("sender lacks the kick level (rule 5.5.4)")
    if user_power_level(target, auth_state) >= sender_level:
        raise AuthError("target's power level is not below the sender's (rule 5.5.4)")


def _check_ban(event: Event, target: str, create: Event, auth_state: AuthState) -> None:
    """Rule 5.6: bans."""
    if membership_of(event.sender, auth_state) != "join":
        raise AuthError("banner is not joined (rule 5.6.1)")
    sender_level = user_power_level(event.sender, auth_state)
    if sender_level < named_level("ban", auth_state):
        raise AuthError("sender lacks the ban level (rule 5.6.2)")
    if user_power_level(target, auth_state) >= sender_level:
        raise AuthError("target's power level is not below the sender's (rule 5.6.2)")


def _check_knock(event: Event, target: str, create: Event, auth_state: AuthState) -> None:
    """Rule 5.7: knocks."""
    if _join_rule(auth_state) not in ("knock", "knock_restricted"):
        raise AuthError("join rule does not allow knocking (rule 5.7.1)")
    if event.sender != target:
        raise AuthError("knock sender differs from state_key (rule 5.7.2)")
    if membership_of(target, auth_state) in ("ban", "invite", "join"):
        raise AuthError("cannot knock when banned, invited or joined (rule 5.7.4)")


def _check_power_levels(event: Event, create: Event, auth_state: AuthState) -> None:
    """Rule 10 (v10/v11 rule 9): changes to m.room.power_levels."""
    new = event.content
    for key in LEVEL_KEYS:
        if key in new and not is_int(new[key]):
            raise AuthError(f"power level {key!r} is not an integer (rule 10.1)")
    for key in LEVEL_MAP_KEYS:
        if key in new and not (
            isinstance(new[key], dict) and all(is_int(v) for v in new[key].values())
        ):
            raise AuthError(f"power levels {key!r} is not an object of integers (rule 10.2)")
    users = new.get("users", {})
    if not isinstance(users, dict) or not all(
        is_valid_user_id(k) and is_int(v) for k, v in users.items()
    ):
        raise AuthError("power levels 'users' is not user IDs to integers (rule 10.3)")
    if event.room_version.creators_have_infinite_power and creators(create) & set(users):
        raise AuthError("power levels 'users' lists a room creator (rule 10.4)")
    current_event = auth_state.get(POWER_LEVELS_KEY)
    if current_event is None:
        return
    old = current_event.content
    sender_level = user_power_level(event.sender, auth_state)
    for key in LEVEL_KEYS:
        _check_level_change(key, old.get(key), new.get(key), sender_level, "rule 10.6")
    for map_key in LEVEL_MAP_KEYS:
        old_map, new_map = _int_map(old.get(map_key)), _int_map(new.get(map_key))
        for key in old_map.keys() | new_map.keys():
            _check_level_change(
                f"{map_key}.{key}",
                old_map.get(key),
                new_map.get(key),
                sender_level,
                "rules 10.7-10.8",
            )
    old_users, new_users = _int_map(old.get("users")), _int_map(users)
    for user in old_users.keys() | new_users.keys():
        before, after = old_users.get(user), new_users.get(user)
        if before == after:
            continue
        if before is not None and user != event.sender and before >= sender_level:
            raise AuthError(
                f"cannot change the level of {user}, at or above the sender's (rule 10.9)"
            )
        if after is not None and after > sender_level:
            raise AuthError(f"cannot raise {user} above the sender's level (rule 10.10)")


def _int_map(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and is_int(v)}


def _check_level_change(
    name: str, before: object, after: object, sender_level: int, rule: str
) -> None:
    if before == after:
        return
    if isinstance(before, int) and before > sender_level:
        raise AuthError(f"cannot change {name}: current value above the sender's ({rule})")
    if isinstance(after, int) and after > sender_level:
        raise AuthError(f"cannot set {name} above the sender's level ({rule})")
