"""Auth events selection: which state events an event must list in ``auth_events``
(spec: Server-Server API, "Auth events selection"; room version 12 "Auth events
selection"; rooms.md 3.3).

The selection is exact: Synapse rejects an event whose ``auth_events`` hold anything
outside it ("has unexpected auth_event"), so the builder lists these and nothing else, and
the auth rules can use :func:`auth_event_types` to check a received event's list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stubserver.rooms.versions import RoomVersion

StateKey = tuple[str, str]

CREATE = "m.room.create"
POWER_LEVELS = "m.room.power_levels"
MEMBER = "m.room.member"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"

#: Memberships whose member event must cite the join rules.
_MEMBERSHIPS_CITING_JOIN_RULES = frozenset({"join", "invite", "knock"})


def auth_event_types(
    event_type: str,
    state_key: str | None,
    sender: str,
    content: Mapping[str, Any],
    room_version: RoomVersion,
) -> list[StateKey]:
    """The ``(type, state_key)`` pairs whose current state events an event cites, in a
    fixed order without duplicates.

    ``m.room.create`` cites nothing. Every other event cites the create event (v10 and
    v11 only: in v12 the room ID implies it and it MUST NOT be listed), the power levels
    and the sender's membership; a member event also its target's membership, the join
    rules for ``join``/``invite``/``knock``, the third-party invite its ``signed.token``
    names for an ``invite``, and, for a ``join`` authorised by another user
    (``join_authorised_via_users_server``, rooms v8+ so all of ours), that user's
    membership.
    """
    if event_type == CREATE:
        return []
    wanted: list[StateKey] = []
    if not room_version.room_id_is_create_hash:
        wanted.append((CREATE, ""))
    wanted.append((POWER_LEVELS, ""))
    wanted.append((MEMBER, sender))
    if event_type == MEMBER and state_key is not None:
        wanted.append((MEMBER, state_key))
        membership = content.get("membership")
        if membership in _MEMBERSHIPS_CITING_JOIN_RULES:
            wanted.append((JOIN_RULES, ""))
        if membership == "invite":
            token = _third_party_invite_token(content)
            if token is not None:
                wanted.append((THIRD_PARTY_INVITE, token))
        authoriser = content.get("join_authorised_via_users_server")
        if membership == "join" and isinstance(authoriser, str):
            wanted.append((MEMBER, authoriser))
    # Sender and target (or authoriser) may be the same user: list each pair once.
    return list(dict.fromkeys(wanted))


def _third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    invite = content.get("third_party_invite")
    if not isinstance(invite, Mapping):
        return None
    signed = invite.get("signed")
    if not isinstance(signed, Mapping):
        return None
    token = signed.get("token")
    return token if isinstance(token, str) else None


def select_auth_events(
    state: Mapping[StateKey, str],
    *,
    event_type: str,
    state_key: str | None,
    sender: str,
    content: Mapping[str, Any],
    room_version: RoomVersion,
) -> list[str]:
    """The event IDs for ``auth_events``: :func:`auth_event_types` looked up in
    ``state`` (``{(type, state_key): event_id}``, the state the event is built on),
    skipping pairs the state lacks, in the same order, each ID once."""
    wanted = auth_event_types(event_type, state_key, sender, content, room_version)
    found = [state[pair] for pair in wanted if pair in state]
    return list(dict.fromkeys(found))
