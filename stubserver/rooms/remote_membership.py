"""Membership handshakes with other servers, for rooms we do not hold alone:

* join: ``make_join`` (repeated ``ver``) and ``send_join`` v2 through each server in
  turn, verifying every PDU of the answer (:func:`~stubserver.rooms.remote.room_from_join_answer`)
  before building the room from it;
* leave: ``make_leave`` and ``send_leave`` v2 through each server in turn (also how a
  pending invite is declined);
* invite: ``/v2/invite`` with full-PDU ``invite_room_state``, checking the event that
  comes back is ours, unchanged but for its signatures, with our signature and a valid
  one of the invitee's server ("the invited homeserver ... signs the event and returns
  it", Server-Server API "Inviting to a room").

The room service (:mod:`stubserver.rooms.service`) decides whom to ask and keeps the
result; the errors raised are the ones its control API answers with.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stubserver.rooms.builder import BuiltEvent, EventBuildError, EventSigner
from stubserver.rooms.errors import BadRemoteAnswer, RemoteRefused, RemoteUnreachable
from stubserver.rooms.event import Event
from stubserver.rooms.format import InvalidPdu, event_from_pdu
from stubserver.rooms.membership import fill_template
from stubserver.rooms.pdu_keys import MAX_KEY_IDS_PER_SIGNER, FetchVerifyKey
from stubserver.rooms.remote import RemoteCaller, room_from_join_answer
from stubserver.rooms.room import EventRecord, Room
from stubserver.rooms.signing import EventSignatureError, verify_signed_event
from stubserver.rooms.versions import RoomVersion

#: What may differ between the invite we send and the one the invitee's server returns.
INVITE_ADDITIONS = frozenset({"signatures", "unsigned"})


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
        be ours, unchanged but for its signatures (and ``unsigned``), still bearing our
        valid signature and bearing one of ``target_server``'s (502 otherwise)."""
        answer = await self._remote.invite(target_server, room.room_id, built, room_state)
        returned = answer.get("event") if isinstance(answer, dict) else None
        try:
            event = event_from_pdu(returned, room.room_version)
        except InvalidPdu as e:
            raise BadRemoteAnswer(
                f"{target_server} answered the invite with a bad event: {e}"
            ) from None
        assert isinstance(returned, dict)
        if event.event_id != built.event.event_id or _unsigned_part(returned) != _unsigned_part(
            built.pdu
        ):
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
        await self._check_countersigned(target_server, event)
        return BuiltEvent(pdu=returned, event=event)

    async def _check_countersigned(self, server: str, event: Event) -> None:
        """BadRemoteAnswer unless one of ``server``'s signatures on ``event`` verifies with
        its key valid at the event's ``origin_server_ts``."""
        signatures = event.pdu.get("signatures")
        block = signatures.get(server) if isinstance(signatures, Mapping) else None
        key_ids = sorted(k for k in block or () if isinstance(k, str) and k.startswith("ed25519:"))
        if not key_ids:
            raise BadRemoteAnswer(f"{server} returned the invite without its signature")
        failures: list[str] = []
        for key_id in key_ids[:MAX_KEY_IDS_PER_SIGNER]:
            key = await self._fetch_verify_key(server, key_id, event.origin_server_ts)
            if key is None:
                failures.append(f"no key {key_id} of {server}")
                continue
            try:
                verify_signed_event(event, server, key_id, key)
            except EventSignatureError as e:
                failures.append(str(e))
                continue
            return
        raise BadRemoteAnswer(
            f"{server}'s signature on the returned invite fails: {'; '.join(failures)}"
        )


def _unsigned_part(pdu: Mapping[str, Any]) -> dict[str, Any]:
    """A PDU without what its invitee's server adds (:data:`INVITE_ADDITIONS`)."""
    return {k: v for k, v in pdu.items() if k not in INVITE_ADDITIONS}
