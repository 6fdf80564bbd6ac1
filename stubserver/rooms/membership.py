"""Membership events: ours (join, leave, invite on a room we host, or filled in from a
remote ``make_join``/``make_leave`` template) and the templates we answer with.

Spec: Server-Server API "Joining Rooms" and "Leaving Rooms" (``make_join``,
``make_leave``), rooms.md 1.4 and 2.2 for Synapse's exact refusals, and 1.8 for how a
template is filled in (our content merged in, the template's ``origin_server_ts`` and
``depth`` kept, then hashed and signed; a template without ``origin_server_ts``, as
Dendrite sends, gets our clock's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from stubserver.rooms.auth_events import select_auth_events
from stubserver.rooms.builder import BuiltEvent, EventBuildError, EventSigner
from stubserver.rooms.create import build_in_room
from stubserver.rooms.event import Event
from stubserver.rooms.format import MAX_DEPTH, event_from_pdu
from stubserver.rooms.room import Room
from stubserver.rooms.signing import sign_event
from stubserver.rooms.versions import RoomVersion

MEMBER = "m.room.member"
#: The ``ver`` a make_join request without one stands for (rooms.md 1.4).
DEFAULT_MAKE_JOIN_VERSIONS: Final = ("1",)
#: Keys a template keeps: what the builder set, without hashes, signatures, unsigned.
TEMPLATE_KEYS: Final = frozenset(
    {
        "auth_events",
        "content",
        "depth",
        "origin_server_ts",
        "prev_events",
        "room_id",
        "sender",
        "state_key",
        "type",
    }
)
MEMBERSHIPS: Final = frozenset({"join", "leave", "invite"})


@dataclass(frozen=True)
class MembershipRefusal(Exception):
    """A make_join / make_leave refusal, as Synapse answers it: HTTP ``status`` and the
    body ``{"errcode", "error", **extra}``."""

    status: int
    errcode: str
    error: str
    extra: Mapping[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"errcode": self.errcode, "error": self.error, **(self.extra or {})}


def unknown_room() -> MembershipRefusal:
    """The refusal for a room we do not know (404)."""
    return MembershipRefusal(404, "M_NOT_FOUND", "Unknown room")


def build_membership(
    room: Room,
    signer: EventSigner,
    *,
    sender: str,
    membership: str,
    now: int,
    target: str | None = None,
    content: Mapping[str, Any] | None = None,
) -> BuiltEvent:
    """Our ``membership`` event (join, leave or invite of ``target``, default
    ``sender``) on a room we hold, built on its extremities and current state. Not
    added to the room (``stubserver.rooms.create.add_own_event`` does that)."""
    if membership not in MEMBERSHIPS:
        raise EventBuildError(f"membership {membership!r} is not one of {sorted(MEMBERSHIPS)}")
    body = dict(content or {})
    body["membership"] = membership
    return build_in_room(
        room,
        signer,
        sender=sender,
        event_type=MEMBER,
        content=body,
        now=now,
        state_key=target if target is not None else sender,
    )


def fill_template(
    template: Mapping[str, Any],
    room_version: RoomVersion,
    signer: EventSigner,
    *,
    user_id: str,
    membership: str,
    now: int,
    content: Mapping[str, Any] | None = None,
) -> BuiltEvent:
    """Our signed event from a remote ``make_join``/``make_leave`` template: the
    template's fields kept (``origin_server_ts`` and ``depth`` included), ``content``
    merged into its content, ``membership`` forced, hashed and signed.

    A template without ``origin_server_ts`` (Dendrite 0.13 sends none, though the spec's
    make_join schema lists it as required) gets ``now``, our clock in milliseconds: the
    PDU's timestamp is the one "on the originating homeserver when this event was
    created", and we are the event's origin.

    Raise :class:`EventBuildError` when the template is not a membership event for
    ``user_id``, or ``InvalidPdu`` when the result breaks the format rules.
    """
    if not isinstance(template, Mapping):
        raise EventBuildError("the template is not a JSON object")
    if template.get("type") != MEMBER:
        raise EventBuildError(f"the template's type is {template.get('type')!r}")
    if template.get("sender") != user_id or template.get("state_key") != user_id:
        raise EventBuildError(f"the template is not for {user_id}")
    if user_id.partition(":")[2] != signer.server_name:
        raise EventBuildError(f"{user_id} is not on our server {signer.server_name}")
    pdu = {k: v for k, v in template.items() if k in TEMPLATE_KEYS}
    pdu.setdefault("origin_server_ts", now)
    merged = dict(template.get("content") or {})
    merged.update(content or {})
    merged["membership"] = membership
    pdu["content"] = merged
    signed = sign_event(pdu, room_version, signer.server_name, signer.key_id, signer.signing_key)
    return BuiltEvent(pdu=signed, event=event_from_pdu(signed, room_version))


@dataclass(frozen=True)
class Template:
    """A make_join / make_leave answer: ``{"event": event, "room_version": ...}``."""

    event: dict[str, Any]
    room_version: str

    def body(self) -> dict[str, Any]:
        """The JSON answer."""
        return {"event": self.event, "room_version": self.room_version}


def make_membership_template(
    room: Room, *, user_id: str, origin: str, membership: str, now: int
) -> Template:
    """The template for ``user_id``'s ``membership`` event on ``room`` (a
    ``stubserver.rooms.room.Room`` we hold), as Synapse answers: 403 "User not from
    origin" when the user is not on ``origin``; 403 with the auth failure when the
    membership is not allowed under the current state (an invite-only join: "You are
    not invited to this room.")."""
    if user_id.partition(":")[2] != origin:
        raise MembershipRefusal(403, "M_FORBIDDEN", "User not from origin")
    content = {"membership": membership}
    prevs = room.prev_events_for_new_event()
    pdu: dict[str, Any] = {
        "auth_events": select_auth_events(
            room.current_state,
            event_type=MEMBER,
            state_key=user_id,
            sender=user_id,
            content=content,
            room_version=room.room_version,
        ),
        "content": content,
        "depth": min(max(e.depth for e in prevs) + 1, MAX_DEPTH),
        "origin_server_ts": now,
        "prev_events": [e.event_id for e in prevs],
        "room_id": room.room_id,
        "sender": user_id,
        "state_key": user_id,
        "type": MEMBER,
    }
    probe = Event(
        event_id="$template", room_version=room.room_version, pdu=pdu, room_id=room.room_id
    )
    reason = room.check_against_current_state(probe)
    if reason is not None:
        if membership == "join" and "not invited" in reason:
            raise MembershipRefusal(403, "M_FORBIDDEN", "You are not invited to this room.")
        raise MembershipRefusal(403, "M_FORBIDDEN", reason)
    return Template(event=pdu, room_version=room.room_version.identifier)


def make_join_template(
    room: Room | None,
    user_id: str,
    supported_versions: Sequence[str] | None,
    *,
    origin: str,
    now: int,
) -> Template:
    """``make_join``: refuse with 400 ``M_INCOMPATIBLE_ROOM_VERSION`` (with
    ``room_version``) when the room's version is not among ``supported_versions`` (the
    repeated ``ver``; absent means ``["1"]``), then as
    :func:`make_membership_template`. ``room`` None: 404."""
    if room is None:
        raise unknown_room()
    versions = DEFAULT_MAKE_JOIN_VERSIONS if supported_versions is None else supported_versions
    identifier = room.room_version.identifier
    if identifier not in versions:
        raise MembershipRefusal(
            400,
            "M_INCOMPATIBLE_ROOM_VERSION",
            f"Your homeserver does not support the features required to interact with "
            f"this room ({identifier})",
            {"room_version": identifier},
        )
    return make_membership_template(
        room, user_id=user_id, origin=origin, membership="join", now=now
    )
