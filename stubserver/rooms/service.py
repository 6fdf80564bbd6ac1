"""The room service: the Twisted shell around the pure room code, implementing
:class:`stubserver.rooms.port.RoomControl`.

What it does (DESIGN.md "Rooms and the control API"; rooms.md for Synapse's behaviour):

* hosts rooms (``create_room``) and acts in rooms we hold: local join, leave, invite,
  send. Every event we create is added to our :class:`~stubserver.rooms.room.Room` first
  (our own auth checks: an event they refuse is 403 ``M_FORBIDDEN``) and then queued for
  every other server in the room (:mod:`stubserver.rooms.outgoing`);
* joins rooms held elsewhere through each ``via`` server in turn (or the servers an
  alias resolves to, or the server that invited the user), leaves rooms held elsewhere
  (also how a pending invite is declined) and invites remote users: the handshakes are
  :mod:`stubserver.rooms.remote_membership`;
* follows up received transactions and invites through its :attr:`RoomService.inbound`
  hooks (:class:`~stubserver.rooms.followup.InboundFollowUp`, given to the federation
  endpoints, :func:`stubserver.rooms.routes.room_routes`);
* merges the forward extremities of rooms with more than 10 with dummy events, as
  Synapse does (:class:`~stubserver.rooms.dummy_events.DummyEvents`, started by the
  wiring);
* answers the control API's reads and long-polls (``room_info``, ``events``, ``edus``)
  through :class:`~stubserver.rooms.views.RoomViews`;
* for negative tests, refuses to serve chosen events, plants PDUs our canonical JSON
  refuses in ``get_missing_events`` answers (``stubserver.rooms.served``) and sends an
  event of ours again (``resend``: a new transaction with the same PDU).

The clock, RNG, signer, store, signed-request client and key lookup are injected.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Final

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from stubserver.rooms.builder import EventBuildError, EventSigner
from stubserver.rooms.create import (
    PRESETS,
    create_room,
)
from stubserver.rooms.devices import TooManyDevices
from stubserver.rooms.dummy_events import DummyEvents
from stubserver.rooms.errors import (
    AliasTaken,
    InvalidParameter,
    NotAllowed,
    RoomRequestRefused,
    UnbuildableEvent,
    UnknownRoom,
    VersionNotSupported,
)
from stubserver.rooms.event import Event
from stubserver.rooms.followup import InboundFollowUp
from stubserver.rooms.format import InvalidPdu, is_user_id
from stubserver.rooms.gap_fill import GapFiller
from stubserver.rooms.identifiers import LOCALPART, invalid, local_room_id, local_user_id
from stubserver.rooms.join_extras import build_extra
from stubserver.rooms.membership import build_membership
from stubserver.rooms.outgoing import OutgoingEvents
from stubserver.rooms.pdu_keys import FetchVerifyKey
from stubserver.rooms.planted import PlantRefused, plant_event
from stubserver.rooms.remote import RemoteCaller
from stubserver.rooms.remote_membership import RemoteMembership
from stubserver.rooms.room import Room, RoomError
from stubserver.rooms.sender import SignedRequester, TransactionSender
from stubserver.rooms.served import TooManyOverrides
from stubserver.rooms.store import RoomStore
from stubserver.rooms.tamper import TAMPER_KINDS
from stubserver.rooms.versions import (
    DEFAULT_ROOM_VERSION,
    SUPPORTED_ROOM_VERSIONS,
    RoomVersion,
    UnsupportedRoomVersion,
    room_version,
)
from stubserver.rooms.views import RoomViews
from stubserver.signing.canonical_json import JsonDict

MEMBER: Final = "m.room.member"
#: Longest device ID ``put_device`` takes.
MAX_DEVICE_ID_CHARS: Final = 255

log = Logger()


class RoomService:
    """Implements :class:`~stubserver.rooms.port.RoomControl` (module docstring).

    ``client.request(method, destination, path_and_query, content)`` is a signed request
    (:class:`stubserver.client.signed_request.FederationClient` fits); ``fetch_verify_key``
    as for :func:`~stubserver.rooms.routes.room_routes`; ``rng`` gives transaction-ID
    prefixes and room IDs; ``default_room_version`` and ``supported_versions`` are what
    ``create_room`` uses and ``make_join`` offers.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        signer: EventSigner,
        store: RoomStore,
        client: SignedRequester,
        fetch_verify_key: FetchVerifyKey,
        rng: random.Random,
        default_room_version: str = DEFAULT_ROOM_VERSION,
        supported_versions: Sequence[str] = SUPPORTED_ROOM_VERSIONS,
    ) -> None:
        self._clock = clock
        self._signer = signer
        self.store = store
        self._client = client
        self._fetch_verify_key = fetch_verify_key
        self._rng = rng
        self._versions = tuple(v for v in supported_versions if v in SUPPORTED_ROOM_VERSIONS)
        if default_room_version not in self._versions:
            raise ValueError(
                f"default room version {default_room_version!r} is not one of {self._versions}"
            )
        self._default_version = default_room_version
        self.sender = TransactionSender(clock, signer.server_name, client, rng)
        self._outgoing = OutgoingEvents(signer, self.sender, self._now)
        self._remote = RemoteCaller(client)
        self._gaps = GapFiller(
            self._remote,
            fetch_verify_key,
            self._now,
            clock=clock,
            server_name=signer.server_name,
        )
        self._membership = RemoteMembership(
            self._remote, signer, fetch_verify_key, self._versions, self._now
        )
        self.views = RoomViews(clock, store, self._room)
        #: Caps our rooms' forward extremities (``dummy_events.start()`` runs it).
        self.dummy_events = DummyEvents(store, signer, self._now, clock)
        #: What the federation endpoints tell (``room_routes(..., hooks=service.inbound)``).
        self.inbound = InboundFollowUp(store, self.sender, self._gaps, self.views)

    # --- wiring -----------------------------------------------------------------------

    @property
    def server_name(self) -> str:
        return self._signer.server_name

    @property
    def unresolved(self) -> Mapping[str, str]:
        """Received events we could not complete: event ID → why (bounded by the gap
        filler)."""
        return self._gaps.unresolved

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _hold(self, room: Room) -> None:
        self.store.add_room(room)  # StoreFull: 503 (rooms.http_errors)
        self.views.watch(room)
        self.views.wake(room.room_id)

    # --- identifiers ------------------------------------------------------------------

    def _user_id(self, user: str) -> str:
        return local_user_id(user, self.server_name)

    def _local_room_id(self, room: str) -> str:
        """A room ID for ``room`` (ID or alias) from our own data, without asking anyone."""
        return local_room_id(
            room, self.server_name, self.store.alias_room_id, self.store.room_with_canonical_alias
        )

    def _room(self, room: str) -> Room:
        found = self.store.get_room(self._local_room_id(room))
        if found is None:
            raise UnknownRoom(f"Unknown room {room[:300]!r}")
        return found

    # --- RoomControl ------------------------------------------------------------------

    def status(self) -> JsonDict:
        return {
            "server_name": self.server_name,
            "room_versions": list(self._versions),
            "rooms": self.store.room_ids(),
        }

    def create_room(
        self,
        creator: str,
        *,
        room_version: str | None = None,
        preset: str | None = None,
        alias: str | None = None,
        name: str | None = None,
    ) -> Deferred[JsonDict]:
        return Deferred.fromCoroutine(self._create_room(creator, room_version, preset, alias, name))

    async def _create_room(
        self,
        creator: str,
        version_id: str | None,
        preset: str | None,
        alias: str | None,
        name: str | None,
    ) -> JsonDict:
        user_id = self._user_id(creator)
        version = self._version(version_id or self._default_version)
        chosen = preset or "public_chat"
        if chosen not in PRESETS:
            raise invalid(f"unknown preset {chosen!r}; expected one of {list(PRESETS)}")
        full_alias = None
        if alias is not None:
            if not LOCALPART.match(alias):
                raise invalid(f"{alias[:300]!r} is not a valid alias localpart")
            if self.store.alias_room_id(alias) is not None:
                raise AliasTaken(f"#{alias}:{self.server_name} is taken")
            full_alias = f"#{alias}:{self.server_name}"
        created = create_room(
            version,
            self._signer,
            creator=user_id,
            now=self._now(),
            rng=self._rng,
            preset=chosen,  # type: ignore[arg-type]
            name=name,
            alias=full_alias,
        )
        self._hold(created.room)
        if alias is not None:
            self.store.add_alias(alias, created.room.room_id)
        return {
            "room_id": created.room.room_id,
            "room_version": version.identifier,
            "event_ids": [e.event.event_id for e in created.events],
        }

    def _version(self, identifier: str) -> RoomVersion:
        if identifier not in self._versions:
            raise VersionNotSupported(
                f"room version {identifier!r} is not one of {list(self._versions)}"
            )
        try:
            return room_version(identifier)
        except UnsupportedRoomVersion as e:
            raise VersionNotSupported(str(e)) from None

    def join(self, room: str, user: str, via: Sequence[str]) -> Deferred[JsonDict]:
        return Deferred.fromCoroutine(self._join(room, user, via))

    async def _join(self, room: str, user: str, via: Sequence[str]) -> JsonDict:
        user_id = self._user_id(user)
        servers = [s for s in via if s != self.server_name]
        if room.startswith("#") and room.rpartition(":")[2] != self.server_name:
            room_id, alias_servers = await self._remote.query_alias(room)
            servers = list(dict.fromkeys([*servers, *alias_servers]))
        else:
            room_id = self._local_room_id(room)
        held = self.store.get_room(room_id)
        if held is not None and held.is_server_in_room(self.server_name):
            built = build_membership(
                held, self._signer, sender=user_id, membership="join", now=self._now()
            )
            event_id = self._outgoing.add_and_send(held, built)
            return {
                "room_id": room_id,
                "room_version": held.room_version.identifier,
                "event_id": event_id,
            }
        invite = self.store.invite_for(room_id, user_id)
        if invite is not None:
            servers.insert(0, invite.origin)
        servers = [s for s in dict.fromkeys(servers) if s != self.server_name]
        if not servers:
            raise UnknownRoom(f"No known servers to join {room[:300]!r} through: give via")
        return await self._remote_join(room_id, user_id, servers)

    async def _remote_join(self, room_id: str, user_id: str, servers: Sequence[str]) -> JsonDict:
        joined = await self._membership.join(room_id, user_id, servers)
        self._hold(joined.room)
        self.store.forget_invite(room_id, user_id)
        # The resident server sends our join on; tell the other servers ourselves too.
        others = [s for s in self._outgoing.others(joined.room) if s != joined.server]
        self._outgoing.broadcast(others, joined.record.event_id, joined.record.event.pdu)
        return {
            "room_id": room_id,
            "room_version": joined.version.identifier,
            "event_id": joined.record.event_id,
        }

    def leave(self, room: str, user: str) -> Deferred[JsonDict]:
        return Deferred.fromCoroutine(self._leave(room, user))

    async def _leave(self, room: str, user: str) -> JsonDict:
        user_id = self._user_id(user)
        room_id = self._local_room_id(room)
        held = self.store.get_room(room_id)
        invite = self.store.invite_for(room_id, user_id)
        if held is not None and self._hosted_here(held):
            built = build_membership(
                held, self._signer, sender=user_id, membership="leave", now=self._now()
            )
            return {"event_id": self._outgoing.add_and_send(held, built)}
        servers: list[str] = []
        if held is not None:
            servers = self._outgoing.others(held)
        if invite is not None:
            servers.insert(0, invite.origin)
        servers = list(dict.fromkeys(servers))
        if not servers:
            raise UnknownRoom(f"Unknown room {room[:300]!r}")
        built = await self._membership.leave(room_id, user_id, servers)
        self.store.forget_invite(room_id, user_id)
        if held is not None:
            try:
                held.add_event(built.event, self._now(), origin=self.server_name)
            except RoomError as e:
                log.info(
                    "Our leave {event_id} is not in our copy of the room: {error}",
                    event_id=built.event.event_id,
                    error=e,
                )
        return {"event_id": built.event.event_id}

    def _hosted_here(self, room: Room) -> bool:
        """We can act alone: the room was created by one of our users (we host it), or
        another of our users is still joined."""
        create = room.get_event(self._create_id(room))
        return create is not None and create.sender.partition(":")[2] == self.server_name

    @staticmethod
    def _create_id(room: Room) -> str:
        create = room.current_state_id(("m.room.create", ""))
        return create or ""

    def invite(self, room: str, sender: str, user_id: str) -> Deferred[JsonDict]:
        return Deferred.fromCoroutine(self._invite(room, sender, user_id))

    async def _invite(self, room: str, sender: str, user_id: str) -> JsonDict:
        sender_id = self._user_id(sender)
        if not is_user_id(user_id):
            raise invalid(f"{user_id[:300]!r} is not a user ID")
        held = self._room(room)
        built = build_membership(
            held,
            self._signer,
            sender=sender_id,
            membership="invite",
            target=user_id,
            now=self._now(),
        )
        target_server = user_id.partition(":")[2]
        if target_server == self.server_name:
            return {"event_id": self._outgoing.add_and_send(held, built)}
        # Check it against our rules before asking anyone.
        reason = held.check_against_current_state(built.event)
        if reason is not None:
            raise NotAllowed(f"invite refused by the room's rules: {reason}")
        state = [
            held.current_state_id(k)
            for k in (("m.room.create", ""), ("m.room.join_rules", ""), (MEMBER, sender_id))
        ]
        room_state = [dict(e.pdu) for e in (held.get_event(i) for i in state if i) if e]
        returned = await self._membership.invite(target_server, held, built, room_state)
        return {"event_id": self._outgoing.add_and_send(held, returned)}

    def send(
        self,
        room: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prev_events: Sequence[str] | None = None,
        auth_events: Sequence[str] | None = None,
        origin_server_ts: int | None = None,
        tamper: str | None = None,
        destinations: Sequence[str] | None = None,
    ) -> Deferred[JsonDict]:
        """Build, sign and send an event (see :class:`RoomControl`).

        Without overrides the event must pass our own checks (else 403) and is added to
        our room. With ``prev_events``/``auth_events``/``origin_server_ts`` it is added
        whatever its outcome (rejected, soft-failed) and sent anyway. With ``tamper``
        (``"signature"``: our signature replaced by a wrong one; ``"content"``: content
        changed after hashing) it is sent broken and **not** added to our room; the
        returned ``event_id`` is what a receiver computes for the broken PDU. With
        ``destinations`` it is sent only to those servers (``[]``: to nobody, so that a
        later event makes them fetch it with ``get_missing_events``).
        """
        return Deferred.fromCoroutine(
            self._send(
                room,
                sender,
                event_type,
                content,
                state_key=state_key,
                prev_events=prev_events,
                auth_events=auth_events,
                origin_server_ts=origin_server_ts,
                tamper=tamper,
                destinations=destinations,
            )
        )

    async def _send(
        self,
        room: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None,
        prev_events: Sequence[str] | None,
        auth_events: Sequence[str] | None,
        origin_server_ts: int | None,
        tamper: str | None,
        destinations: Sequence[str] | None,
    ) -> JsonDict:
        sender_id = self._user_id(sender)
        if tamper is not None and tamper not in TAMPER_KINDS:
            raise invalid(f"tamper must be 'signature' or 'content', not {tamper!r}")
        held = self._room(room)
        return self._outgoing.send(
            held,
            sender_id,
            event_type,
            content,
            state_key=state_key,
            prev_events=prev_events,
            auth_events=auth_events,
            origin_server_ts=origin_server_ts,
            tamper=tamper,
            destinations=destinations,
            planted=self._stand_ins(held),
        )

    def _stand_ins(self, held: Room) -> dict[str, Event]:
        """The stand-ins of the PDUs planted in ``held``, by event ID."""
        planted = self.store.serving.planted(held.room_id)
        return {event_id: p.stand_in for event_id, p in planted.items()}

    # --- what a test peer serves and sends otherwise ---------------------------------

    def set_served(self, room: str, event_ids: Sequence[str], served: bool) -> Deferred[JsonDict]:
        try:
            held = self._room(room)
            unknown = [e for e in event_ids if held.record(e) is None]
            if unknown:
                raise UnknownRoom(f"no event {unknown[0][:300]!r} in {held.room_id}")
            if served:
                self.store.serving.serve(held.room_id, event_ids)
            else:
                self.store.serving.refuse(held.room_id, event_ids)
        except (RoomRequestRefused, TooManyOverrides) as e:
            return fail(e)
        return succeed({"refused": sorted(self.store.serving.refused(held.room_id))})

    def plant(
        self, room: str, sender: str, event_type: str, content_json: str
    ) -> Deferred[JsonDict]:
        try:
            held = self._room(room)
            sender_id = self._user_id(sender)
            try:
                planted = plant_event(
                    held,
                    self._signer,
                    sender=sender_id,
                    event_type=event_type,
                    content_text=content_json,
                    now=self._now(),
                )
            except (PlantRefused, EventBuildError, InvalidPdu) as e:
                raise UnbuildableEvent(f"cannot plant the event: {e}") from None
            self.store.serving.plant(held.room_id, planted)
        except (RoomRequestRefused, TooManyOverrides) as e:
            return fail(e)
        return succeed({"event_id": planted.event_id})

    def resend(
        self, room: str, event_id: str, destinations: Sequence[str] | None = None
    ) -> Deferred[JsonDict]:
        try:
            held = self._room(room)
        except RoomRequestRefused as e:
            return fail(e)
        record = held.record(event_id)
        if record is None or record.origin != self.server_name:
            return fail(UnknownRoom(f"no event of ours {event_id[:300]!r} in {held.room_id}"))
        targets = self._outgoing.others(held) if destinations is None else destinations
        others = sorted(set(targets) - {self.server_name})
        self._outgoing.broadcast(others, event_id, record.event.pdu)
        return succeed({"event_id": event_id})

    def send_join_extra_state(
        self,
        room: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str,
        tamper: str | None = None,
    ) -> Deferred[JsonDict]:
        """A state event carried by the room's later send_join answers only (see
        :class:`RoomControl`): 400 for an unknown ``tamper``, an event we cannot build or
        past :data:`~stubserver.rooms.join_extras.MAX_EXTRAS_PER_ROOM`."""
        try:
            sender_id, held = self._user_id(sender), self._room(room)
            extras = self.store.join_extras
            extra = build_extra(
                held,
                self._signer,
                extras.of(held.room_id),
                sender=sender_id,
                event_type=event_type,
                content=content,
                state_key=state_key,
                tamper=tamper,
                now=self._now(),
            )
            extras.add(held.room_id, extra)
        except RoomRequestRefused as e:
            return fail(e)
        except ValueError as e:  # EventBuildError, InvalidPdu, TooManyExtras, the tamper
            return fail(invalid(f"cannot add the extra state event: {e}"))
        return succeed({"event_id": extra.event_id})

    def send_edu(self, room: str, edu_type: str, content: Mapping[str, Any]) -> Deferred[JsonDict]:
        try:
            held = self._room(room)
        except RoomRequestRefused as e:
            return fail(e)
        for destination in self._outgoing.others(held):
            self.sender.send_edu(destination, edu_type, dict(content))
        return succeed({})

    def put_device(
        self,
        user: str,
        device_id: str,
        *,
        keys: Mapping[str, Any] | None = None,
        display_name: str | None = None,
    ) -> Deferred[JsonDict]:
        try:
            user_id = self._user_id(user)
            if not device_id or len(device_id) > MAX_DEVICE_ID_CHARS:
                raise InvalidParameter(f"a device ID is 1 to {MAX_DEVICE_ID_CHARS} characters")
            content = self.store.devices.update(user_id, device_id, keys, display_name)
        except (RoomRequestRefused, TooManyDevices) as e:
            return fail(e)
        servers = {
            server
            for room in self.store
            if room.members.get(user_id) == "join"
            for server in self._outgoing.others(room)
        }
        for destination in sorted(servers):
            self.sender.send_edu(destination, "m.device_list_update", dict(content))
        return succeed({"stream_id": content["stream_id"]})

    def room_info(self, room: str) -> JsonDict:
        return self.views.room_info(room)

    def events(self, room: str, start: int, wait_ms: int) -> Deferred[JsonDict]:
        return self.views.events(room, start, wait_ms)

    def edus(self, start: int, wait_ms: int) -> Deferred[JsonDict]:
        return self.views.edus(start, wait_ms)

    # --- federation_request ---------------------------------------------------------

    def federation_request(
        self, destination: str, method: str, path: str, body: Any | None
    ) -> Deferred[JsonDict]:
        return Deferred.fromCoroutine(self._federation_request(destination, method, path, body))

    async def _federation_request(
        self, destination: str, method: str, path: str, body: Any | None
    ) -> JsonDict:
        status, answer = await self._remote.raw(method, destination, path, body)
        return {"status": status, "body": answer}
