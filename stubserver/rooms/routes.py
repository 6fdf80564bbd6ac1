"""The room endpoints other servers call on us, as :class:`~stubserver.server.router.Route`
values: :func:`room_routes`, the tables of the three endpoint groups.

* :class:`~stubserver.rooms.routes_membership.MembershipEndpoints`: make/send join and
  leave, invite;
* :class:`~stubserver.rooms.routes_send.SendEndpoint`: ``/send``;
* :class:`~stubserver.rooms.routes_read.ReadEndpoints`: event, state, state_ids,
  event_auth, backfill, get_missing_events, directory;
* :class:`~stubserver.rooms.routes_devices.DeviceEndpoints`: ``user/devices``,
  ``user/keys/query``.

Spec: Server-Server API "Joining Rooms", "Leaving Rooms", "Inviting to a room",
"Transactions", "Retrieving events", "Backfilling and retrieving missing events",
"Room state", "Querying for information" (directory). Answers and refusals as Synapse
1.163.2 gives them (rooms.md 1.4-1.10, 2.1, 2.2; ``stubserver.rooms.routes_common``).
Received PDUs go through the receive pipeline (``stubserver.rooms.intake``: parse, keys,
signatures, content hash), and bodies are the JSON the X-Matrix filter already parsed
(``stubserver.auth.filter.request_content``): each body is parsed once. Every PDU a room
gains is added to its :class:`~stubserver.rooms.room.Room` (which keeps the ordered list
the control API serves).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from stubserver.rooms.builder import EventSigner
from stubserver.rooms.hooks import CallbackHooks, InboundHooks, InviteHook, TransactionHook
from stubserver.rooms.intake import Intake
from stubserver.rooms.pdu_keys import FetchVerifyKey
from stubserver.rooms.routes_common import RoomEndpointParts
from stubserver.rooms.routes_devices import DeviceEndpoints
from stubserver.rooms.routes_membership import MembershipEndpoints
from stubserver.rooms.routes_read import ReadEndpoints
from stubserver.rooms.routes_send import SendEndpoint
from stubserver.rooms.store import RoomStore
from stubserver.server.router import Route


def room_routes(
    store: RoomStore,
    signer: EventSigner,
    fetch_verify_key: FetchVerifyKey,
    clock: IReactorTime,
    *,
    invites_accept: bool,
    hooks: InboundHooks | None = None,
    on_transaction: TransactionHook | None = None,
    on_invite: InviteHook | None = None,
) -> list[Route]:
    """The federation room endpoints, served for ``store``'s rooms and signed by ``signer``.

    ``fetch_verify_key(server, key_id, minimum_valid_until_ts)`` finds remote keys;
    ``invites_accept`` False refuses every ``/v2/invite`` with 403 ``M_FORBIDDEN``;
    ``hooks`` (:class:`~stubserver.rooms.hooks.InboundHooks`) are told about each processed
    ``/send`` and each accepted invite; without them, ``on_transaction(origin, outcome)``
    and ``on_invite(invite)`` are, when given.
    """
    parts = RoomEndpointParts(store, signer, Intake(fetch_verify_key, clock), clock)
    told = hooks if hooks is not None else CallbackHooks(on_transaction, on_invite)
    return [
        *MembershipEndpoints(parts, told, invites_accept=invites_accept).routes(),
        *SendEndpoint(parts, told).routes(),
        *ReadEndpoints(parts).routes(),
        *DeviceEndpoints(parts).routes(),
    ]
