"""Membership handshakes with other servers, for rooms we do not hold alone:

* join: ``make_join`` (repeated ``ver``) and ``send_join`` v2 through each server in
  turn, verifying every PDU of the answer (:func:`~stubserver.rooms.remote.room_from_join_answer`)
  before building the room from it;
* leave: ``make_leave`` and ``send_leave`` v2 through each server in turn (also how a
  pending invite is declined);
* invite: ``/v2/invite`` with full-PDU ``invite_room_state``, checking the event that
  comes back is ours, unchanged, with our signature.

The room service (:mod:`stubserver.rooms.service`) decides whom to ask and keeps the
result; the errors raised are the ones its control API answers with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stubserver.rooms.builder import BuiltEvent, EventBuildError, EventSigner
from stubserver.rooms.errors import BadRemoteAnswer, RemoteRefused, RemoteUnreachable
from stubserver.rooms.format import InvalidPdu, event_from_pdu
from stubserver.rooms.membership import fill_template
from stubserver.rooms.pdu_keys import FetchVerifyKey
from stubserver.rooms.remote import RemoteCaller, room_from_join_answer
from stubserver.rooms.room import EventRecord, Room
from stubserver.rooms.signing import EventSignatureError, verify_signed_event
from stubserver.rooms.versions import RoomVersion


@dataclass(frozen=True)
class RemoteJoin:
    """A join completed through ``server``: the room built from its answer, with our join."""

    server: str
    room: Room
    record: EventRecord
    version: RoomVersion


class RemoteMembership:
    """Join, leave and invite through other servers, as ``signer``'s server.

    ``versions`` are the room versions ``make_join`` offers; ``now`` the clock in
    milliseconds.
    """

    def __init__(
        self,
        remote: RemoteCaller,
        signer: EventSigner,
        fetch_verify_key: FetchVerifyKey,
        versions: Sequence[str],
        now: Callable[[], int],
    ) -> None:
        self._remote = remote
        self._signer = signer
        self._fetch_verify_key = fetch_verify_key
        self._versions = versions
        self._now = now

    async def join(self, room_id: str, user_id: str, servers: Sequence[str]) -> RemoteJoin:
        """Join ``room_id`` as ``user_id`` through the first of ``servers`` that lets us;
        the last failure when none does."""
        last: Exception | None = None
        for server in servers:
            try:
                template, version = await self._remote.make_membership(
                    server, room_id, user_id, "join", self._versions
                )
            except (RemoteRefused, RemoteUnreachable) as e:
                last = e
                continue
            try:
                built = fill_template(
                    template,
                    version,
                    self._signer,
                    user_id=user_id,
                    membership="join",
                    now=self._now(),
                )
            except (EventBuildError, InvalidPdu) as e:
                last = BadRemoteAnswer(f"bad make_join template from {server}: {e}")
                continue
            if built.event.room_id != room_id:
                last = BadRemoteAnswer(f"{server}'s template is for another room")
                continue
            # A send_join refused, failed or answered unusably is tried on the next server,
            # as Synapse does (it walks its destination list for send_join as for make_join).
            try:
                answer = await self._remote.send_membership(server, room_id, built, "join")
            except (RemoteRefused, RemoteUnreachable) as e:
                last = e
                continue
            try:
                joined, record = await room_from_join_answer(
                    answer,
                    built,
                    version=version,
                    room_id=room_id,
                    fetch_verify_key=self._fetch_verify_key,
                    now=self._now(),
                    origin=self._signer.server_name,
                )
            except ValueError as e:
                last = BadRemoteAnswer(f"the send_join answer from {server} is unusable: {e}")
                continue
            return RemoteJoin(server=server, room=joined, record=record, version=version)
        assert last is not None
        raise last

    async def leave(self, room_id: str, user_id: str, servers: Sequence[str]) -> BuiltEvent:
        """Leave ``room_id`` (or decline its invite) as ``user_id`` through the first of
        ``servers`` that lets us: our leave event, sent."""
        last: Exception | None = None
        for server in servers:
            try:
                template, version = await self._remote.make_membership(
                    server, room_id, user_id, "leave", self._versions
                )
                built = fill_template(
                    template,
                    version,
                    self._signer,
                    user_id=user_id,
                    membership="leave",
                    now=self._now(),
                )
            except (RemoteRefused, RemoteUnreachable) as e:
                last = e
                continue
            except (EventBuildError, InvalidPdu) as e:
                last = BadRemoteAnswer(f"bad make_leave template from {server}: {e}")
                continue
            await self._remote.send_membership(server, room_id, built, "leave")
            return built
        assert last is not None
        raise last

    async def invite(
        self,
        target_server: str,
        room: Room,
        built: BuiltEvent,
        room_state: Sequence[Mapping[str, Any]],
    ) -> BuiltEvent:
        """Send our invite ``built`` to ``target_server``: the event it returns, checked to
        be ours, unchanged and still bearing our valid signature (502 otherwise)."""
        answer = await self._remote.invite(target_server, room.room_id, built, room_state)
        returned = answer.get("event") if isinstance(answer, dict) else None
        try:
            event = event_from_pdu(returned, room.room_version)
        except InvalidPdu as e:
            raise BadRemoteAnswer(
                f"{target_server} answered the invite with a bad event: {e}"
            ) from None
        if event.event_id != built.event.event_id:
            raise BadRemoteAnswer(f"{target_server} changed the invite event")
        try:
            verify_signed_event(
                event,
                self._signer.server_name,
                self._signer.key_id,
                self._signer.signing_key.verify_key,
            )
        except EventSignatureError as e:
            raise BadRemoteAnswer(f"our signature on the returned invite fails: {e}") from None
        assert isinstance(returned, dict)
        return BuiltEvent(pdu=returned, event=event)
