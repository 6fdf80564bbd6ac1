"""The rooms one server holds, its room aliases, the invites its users received, and the
memory of answered transactions: what the federation room endpoints
(``stubserver.rooms.routes``) and the control API share.

In memory only; every collection is bounded by a named constant.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from stubserver.rooms.devices import DeviceLists
from stubserver.rooms.event import Event
from stubserver.rooms.join_extras import JoinExtras
from stubserver.rooms.room import Room
from stubserver.rooms.served import ServingOverrides
from stubserver.rooms.transaction import TransactionMemory
from stubserver.rooms.versions import RoomVersion

#: Most rooms one store holds.
MAX_ROOMS: Final = 10_000
#: Most aliases one store holds.
MAX_ALIASES: Final = 10_000
#: Most invites remembered (the oldest is forgotten first).
MAX_INVITES: Final = 10_000
#: Most bytes of invites remembered together (their events and kept state as compact
#: JSON; issue 22, row 9): the oldest are forgotten first.
MAX_INVITE_BYTES: Final = 64 * 1024 * 1024


class StoreFull(Exception):
    """A store limit (:data:`MAX_ROOMS`, :data:`MAX_ALIASES`) is reached."""


@dataclass(frozen=True)
class ReceivedInvite:
    """An invite of one of our users to a room held elsewhere, as accepted on
    ``/v2/invite``: ``event`` is the invite with our signature added (its PDU is what we
    answered), ``origin`` the inviting server (a server to join through),
    ``invite_room_state`` the stripped or full state the inviter sent (as much as is kept),
    ``size`` what the invite weighs in bytes (for :data:`MAX_INVITE_BYTES`)."""

    room_id: str
    user_id: str
    room_version: RoomVersion
    event: Event
    origin: str
    invite_room_state: tuple[Mapping[str, Any], ...] = ()
    size: int = 0


@dataclass
class RoomStore:
    """Our rooms by room ID, our aliases (alias localpart -> room ID), received invites by
    ``(room_id, user_id)``, our users' ``devices``, the ``serving`` overrides, the rooms'
    send_join ``join_extras`` and the ``/send`` transaction memory;
    ``max_*`` bound each collection (the module's constants by default)."""

    server_name: str
    memory: TransactionMemory
    max_rooms: int = MAX_ROOMS
    max_aliases: int = MAX_ALIASES
    max_invites: int = MAX_INVITES
    max_invite_bytes: int = MAX_INVITE_BYTES
    _rooms: dict[str, Room] = field(init=False, default_factory=dict)
    _aliases: dict[str, str] = field(init=False, default_factory=dict)
    _invites: dict[tuple[str, str], ReceivedInvite] = field(init=False, default_factory=dict)
    #: The sum of the remembered invites' sizes.
    invite_bytes: int = field(init=False, default=0)
    #: Our users' devices (``/user/devices``, ``/user/keys/query``, device-list EDUs).
    devices: DeviceLists = field(init=False, default_factory=DeviceLists)
    #: Events the driver told us not to serve, and PDUs it planted (negative tests).
    serving: ServingOverrides = field(init=False, default_factory=ServingOverrides)
    #: The extra state events each room's send_join answers carry (the control API's
    #: ``send_join_extra_state``).
    join_extras: JoinExtras = field(init=False, default_factory=JoinExtras)

    # --- rooms -------------------------------------------------------------------------

    def add_room(self, room: Room) -> None:
        """Hold ``room`` (replacing one with the same ID); raise :class:`StoreFull`."""
        if room.room_id not in self._rooms and len(self._rooms) >= self.max_rooms:
            raise StoreFull(f"the store holds {self.max_rooms} rooms already")
        self._rooms[room.room_id] = room

    def get_room(self, room_id: str) -> Room | None:
        """The room with ``room_id``, or None."""
        return self._rooms.get(room_id)

    def room_ids(self) -> list[str]:
        """Every room ID held, in the order they were added."""
        return list(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def find_event(self, event_id: str) -> tuple[Room, Event] | None:
        """The room holding ``event_id`` and the event (the first room that has it)."""
        for room in self._rooms.values():
            event = room.get_event(event_id)
            if event is not None:
                return room, event
        return None

    def room_with_canonical_alias(self, alias: str) -> str | None:
        """The first room we hold whose current ``m.room.canonical_alias`` names ``alias``
        (``alias`` or ``alt_aliases``): another server's alias of a room we joined."""
        for held in self._rooms.values():
            event_id = held.current_state_id(("m.room.canonical_alias", ""))
            event = held.get_event(event_id) if event_id is not None else None
            if event is None:
                continue
            alt = event.content.get("alt_aliases")
            names = [event.content.get("alias"), *(alt if isinstance(alt, list) else [])]
            if alias in names:
                return held.room_id
        return None

    # --- aliases -----------------------------------------------------------------------

    def add_alias(self, localpart: str, room_id: str) -> None:
        """Point ``#localpart:<our server>`` at ``room_id``; raise :class:`StoreFull`."""
        if localpart not in self._aliases and len(self._aliases) >= self.max_aliases:
            raise StoreFull(f"the store holds {self.max_aliases} aliases already")
        self._aliases[localpart] = room_id

    def alias_room_id(self, localpart: str) -> str | None:
        """The room ID ``#localpart:<our server>`` names, or None."""
        return self._aliases.get(localpart)

    @property
    def aliases(self) -> dict[str, str]:
        """Every alias ``{localpart: room_id}`` (a copy)."""
        return dict(self._aliases)

    # --- invites -----------------------------------------------------------------------

    def remember_invite(self, invite: ReceivedInvite) -> None:
        """Remember ``invite`` (a newer one for the same room and user replaces it),
        forgetting the oldest beyond ``max_invites`` or ``max_invite_bytes``."""
        key = (invite.room_id, invite.user_id)
        replaced = self._invites.pop(key, None)
        if replaced is not None:
            self.invite_bytes -= replaced.size
        while self._invites and (
            len(self._invites) >= self.max_invites
            or self.invite_bytes + invite.size > self.max_invite_bytes
        ):
            self.invite_bytes -= self._invites.pop(next(iter(self._invites))).size
        self._invites[key] = invite
        self.invite_bytes += invite.size

    def invite_for(self, room_id: str, user_id: str) -> ReceivedInvite | None:
        """The invite ``user_id`` received to ``room_id``, or None."""
        return self._invites.get((room_id, user_id))

    def invites(self) -> Sequence[ReceivedInvite]:
        """Every remembered invite, oldest first."""
        return list(self._invites.values())

    def forget_invite(self, room_id: str, user_id: str) -> None:
        """Forget the invite (joined, or declined)."""
        forgotten = self._invites.pop((room_id, user_id), None)
        if forgotten is not None:
            self.invite_bytes -= forgotten.size
