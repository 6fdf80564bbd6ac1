"""Power levels and memberships as the authorisation rules read them.

Spec: ``m.room.power_levels`` (Client-Server API) for the defaults, and v12 "Authorisation
rules" for room creators' infinite power. Every function reads a ``(type, state_key) ->
Event`` map (the auth state) and returns plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stubserver.rooms.event import Event

CREATE_KEY: tuple[str, str] = ("m.room.create", "")
POWER_LEVELS_KEY: tuple[str, str] = ("m.room.power_levels", "")
MEMBER = "m.room.member"

# v12: "The power level of room creators is infinitely high"; Synapse's stand-in value.
CREATOR_POWER_LEVEL = 2**53
# Spec (m.room.power_levels): with no power levels event the creator has 100.
CREATOR_DEFAULT_POWER_LEVEL = 100
DEFAULT_USERS_DEFAULT = 0
DEFAULT_EVENTS_DEFAULT = 0
DEFAULT_STATE_DEFAULT = 50
DEFAULT_INVITE_LEVEL = 0
DEFAULT_KICK_LEVEL = 50
DEFAULT_BAN_LEVEL = 50
DEFAULT_REDACT_LEVEL = 50

AuthState = Mapping[tuple[str, str], Event]


def is_int(value: object) -> bool:
    """enforce_int_power_levels: a JSON integer (a Python bool is an int; JSON's is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def creators(create: Event) -> frozenset[str]:
    """The room creators: v10 ``content.creator``; v11 the sender; v12 the sender plus
    ``additional_creators``."""
    version = create.room_version
    if not version.implicit_room_creator:
        creator = create.content.get("creator")
        return frozenset([creator]) if isinstance(creator, str) else frozenset()
    result = {create.sender}
    if version.creators_have_infinite_power:
        extra = create.content.get("additional_creators")
        if isinstance(extra, list):
            result.update(u for u in extra if isinstance(u, str))
    return frozenset(result)


def _power_content(auth_state: AuthState) -> Mapping[str, Any] | None:
    event = auth_state.get(POWER_LEVELS_KEY)
    return event.content if event is not None else None


def _level(content: Mapping[str, Any] | None, key: str, default: int) -> int:
    value = content.get(key) if content is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def user_power_level(user_id: str, auth_state: AuthState) -> int:
    """``user_id``'s power level: v12 creators infinite; else ``users``, then
    ``users_default``; with no power levels event, the creator 100 and others 0."""
    create = auth_state.get(CREATE_KEY)
    room_creators = creators(create) if create is not None else frozenset()
    infinite = create is not None and create.room_version.creators_have_infinite_power
    if infinite and user_id in room_creators:
        return CREATOR_POWER_LEVEL
    content = _power_content(auth_state)
    if content is None:
        return CREATOR_DEFAULT_POWER_LEVEL if user_id in room_creators else 0
    users = content.get("users")
    if isinstance(users, dict) and is_int(users.get(user_id)):
        return int(users[user_id])
    return _level(content, "users_default", DEFAULT_USERS_DEFAULT)


def required_power_level(event_type: str, is_state: bool, auth_state: AuthState) -> int:
    """The level needed to send an event of ``event_type``: ``events[type]``, else
    ``state_default`` (50) for state events or ``events_default`` (0) for others."""
    content = _power_content(auth_state)
    events = content.get("events") if content is not None else None
    if isinstance(events, dict) and is_int(events.get(event_type)):
        return int(events[event_type])
    if is_state:
        return _level(content, "state_default", DEFAULT_STATE_DEFAULT)
    return _level(content, "events_default", DEFAULT_EVENTS_DEFAULT)


def named_level(name: str, auth_state: AuthState) -> int:
    """``invite`` (default 0), ``kick``, ``ban`` or ``redact`` (default 50)."""
    defaults = {
        "invite": DEFAULT_INVITE_LEVEL,
        "kick": DEFAULT_KICK_LEVEL,
        "ban": DEFAULT_BAN_LEVEL,
        "redact": DEFAULT_REDACT_LEVEL,
    }
    return _level(_power_content(auth_state), name, defaults[name])


def may_redact_others(redaction: Event, auth_state: AuthState) -> bool:
    """For "Handling redactions" (after auth): whether the redaction's sender has the
    redact level, so may redact other users' events. Otherwise a redaction only takes
    effect on an event from the same sender, checked when the target is known."""
    return user_power_level(redaction.sender, auth_state) >= named_level("redact", auth_state)


def membership_of(user_id: str, auth_state: AuthState) -> str:
    """The user's current membership, ``"leave"`` when there is no member event."""
    event = auth_state.get((MEMBER, user_id))
    membership = event.membership if event is not None else None
    return membership if membership is not None else "leave"
