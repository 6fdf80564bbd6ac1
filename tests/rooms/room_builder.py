"""Build rooms of :class:`Event` records by hand for the auth and state resolution tests.

Event IDs are made up (``$<n>-<label>``): hashing, signing and format checks live in
other modules and are not exercised here. Auth events are chosen with the module under
test's own :func:`auth_types_for_event` from the state the event is built on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from stubserver.rooms.auth_rules import AuthError, auth_types_for_event, check_auth
from stubserver.rooms.event import Event
from stubserver.rooms.versions import room_version

ALICE = "@alice:a.example"
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
DAVE = "@dave:d.example"
V10_V11_ROOM_ID = "!room:a.example"

StateKey = tuple[str, str]


def make_event(
    version: str,
    event_id: str,
    type: str,
    sender: str,
    content: Mapping[str, Any],
    *,
    room_id: str,
    state_key: str | None = None,
    prev: Sequence[str] = (),
    auth: Sequence[str] = (),
    ts: int = 0,
    depth: int = 1,
    extra: Mapping[str, Any] | None = None,
) -> Event:
    """One Event from plain values; a v12 create event gets no ``room_id`` in its PDU."""
    pdu: dict[str, Any] = {
        "type": type,
        "sender": sender,
        "content": dict(content),
        "prev_events": list(prev),
        "auth_events": list(auth),
        "origin_server_ts": ts,
        "depth": depth,
        "signatures": {sender.partition(":")[2]: {"ed25519:k": "sig"}},
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    v12_create = version == "12" and type == "m.room.create"
    if not v12_create:
        pdu["room_id"] = room_id
    pdu.update(extra or {})
    return Event(
        event_id=event_id,
        room_version=room_version(version),
        pdu=pdu,
        room_id="!" + event_id[1:] if v12_create else room_id,
    )


class RoomBuilder:
    """A room under construction: every event, and the current state it grows."""

    def __init__(
        self, version: str, creator: str = ALICE, create_content: Mapping[str, Any] | None = None
    ) -> None:
        self.version_id = version
        self.version = room_version(version)
        self.events: dict[str, Event] = {}
        self.state: dict[StateKey, str] = {}
        self._counter = 0
        self.last: str | None = None
        content: dict[str, Any] = {"room_version": version}
        if version == "10":
            content["creator"] = creator
        content.update(create_content or {})
        create_id = "$create"
        self.room_id = "!create" if version == "12" else V10_V11_ROOM_ID
        create = make_event(
            version,
            create_id,
            "m.room.create",
            creator,
            content,
            room_id=self.room_id,
            state_key="",
            ts=self._next_ts(),
        )
        self._store(create, self.state)

    def _next_ts(self) -> int:
        self._counter += 1
        return 1000 + self._counter

    def _store(self, event: Event, state: dict[StateKey, str] | None) -> None:
        self.events[event.event_id] = event
        self.last = event.event_id
        if state is not None and event.state_key is not None:
            state[event.state_tuple()] = event.event_id

    def get(self, event_id: str) -> Event | None:
        """The ``get_event`` state resolution asks for."""
        return self.events.get(event_id)

    def build(
        self,
        type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        state: Mapping[StateKey, str] | None = None,
        prev: Sequence[str] | None = None,
        event_id: str | None = None,
        ts: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Event:
        """An event on ``state`` (default: the current state), stored but not applied."""
        base = self.state if state is None else state
        keys = auth_types_for_event(self.version, type, state_key, sender, content)
        auth = sorted(base[k] for k in keys if k in base)
        self._counter += 1
        event = make_event(
            self.version_id,
            event_id or f"${self._counter}-{type.rsplit('.', 1)[-1]}",
            type,
            sender,
            content,
            room_id=self.room_id,
            state_key=state_key,
            prev=[self.last] if prev is None and self.last else (prev or []),
            auth=auth,
            ts=self._next_ts() if ts is None else ts,
            depth=self._counter,
            extra=extra,
        )
        self._store(event, None)
        return event

    def send(
        self,
        type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        state: dict[StateKey, str] | None = None,
        **kwargs: Any,
    ) -> Event:
        """Build an event and apply it to ``state`` (default: the current state)."""
        base = self.state if state is None else state
        event = self.build(type, sender, content, state_key=state_key, state=base, **kwargs)
        if event.state_key is not None:
            base[event.state_tuple()] = event.event_id
        return event

    def member(
        self,
        user: str,
        membership: str,
        sender: str | None = None,
        *,
        state: dict[StateKey, str] | None = None,
        **kwargs: Any,
    ) -> Event:
        """Send an m.room.member event for ``user``."""
        content = {"membership": membership, **kwargs.pop("content", {})}
        return self.send(
            "m.room.member", sender or user, content, state_key=user, state=state, **kwargs
        )

    def auth_state(self, state: Mapping[StateKey, str] | None = None) -> dict[StateKey, Event]:
        """``state`` (default: current) as the ``(type, state_key) -> Event`` map."""
        base = self.state if state is None else state
        return {key: self.events[event_id] for key, event_id in base.items()}


def standard_room(
    version: str,
    join_rule: str = "public",
    users: Mapping[str, int] | None = None,
    create_content: Mapping[str, Any] | None = None,
) -> RoomBuilder:
    """Create, Alice's join, power levels (Alice 100 outside v12, where creators are
    infinite and unlisted; ``users`` added) and join rules."""
    room = RoomBuilder(version, create_content=create_content)
    room.member(ALICE, "join")
    levels: dict[str, int] = {} if version == "12" else {ALICE: 100}
    levels.update(users or {})
    room.send("m.room.power_levels", ALICE, {"users": levels}, state_key="")
    room.send("m.room.join_rules", ALICE, {"join_rule": join_rule}, state_key="")
    return room


def allowed(room: RoomBuilder, event: Event) -> None:
    """Assert ``event`` passes the auth rules against the room's current state."""
    check_auth(event, room.auth_state())


def rejected(room: RoomBuilder, event: Event, rule: str) -> None:
    """Assert ``event`` fails the auth rules with a reason containing ``rule``."""
    with pytest.raises(AuthError, match=re.escape(rule)):
        check_auth(event, room.auth_state())
