"""``PUT /_matrix/federation/v1/send/{txnId}``: :class:`SendEndpoint` (spec: Server-Server
API "Transactions"; rooms.md 1.2).

The answer is 200 with per-PDU results whatever the PDUs hold (a non-2xx makes the sender
back off for ten minutes or more), 400 ``{}`` past 50 PDUs or 100 EDUs, 429 while another
transaction from the same origin is being processed; a transaction ID seen before gets
its stored answer. PDUs go through the receive pipeline (``stubserver.rooms.intake``);
the hooks hear of every processed transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from stubserver.auth.filter import request_content, require_origin
from stubserver.rooms.hooks import InboundHooks
from stubserver.rooms.routes_common import V1, RoomEndpointParts
from stubserver.rooms.transaction import TransactionRefused, transaction_lists
from stubserver.server.router import JsonResponse, MatrixError, Route, body_length
from stubserver.slices import slice_seconds_for

log = Logger()


class SendEndpoint:
    """``/send`` over ``parts``' rooms, telling ``hooks``."""

    def __init__(self, parts: RoomEndpointParts, hooks: InboundHooks) -> None:
        self._parts = parts
        self._hooks = hooks
        #: The origins with a transaction being processed (one at a time per origin).
        self.in_flight: set[str] = set()

    def routes(self) -> list[Route]:
        """The route table."""
        return [Route("PUT", f"{V1}/send/{{txnId}}", self.send_transaction)]

    def send_transaction(
        self, request: IRequest, params: Mapping[str, str]
    ) -> JsonResponse | Deferred[JsonResponse]:
        """The answer: the stored one for a replay, else once the PDUs are processed."""
        origin = require_origin(request)
        txn_id = params["txnId"]
        store = self._parts.store
        stored = store.memory.answer(origin, txn_id)
        if stored is not None:
            return JsonResponse(200, stored)
        if origin in self.in_flight:
            raise MatrixError(429, "M_UNKNOWN", "Too many concurrent transactions")
        body = request_content(request)
        try:
            pdus, edus = transaction_lists(body)
        except TransactionRefused as refused:
            return JsonResponse(refused.status, refused.body)
        self.in_flight.add(origin)
        slice_seconds = slice_seconds_for(body_length(request))
        return Deferred.fromCoroutine(self._finish(origin, txn_id, pdus, edus, slice_seconds))

    async def _finish(
        self,
        origin: str,
        txn_id: str,
        pdus: Sequence[Any],
        edus: Sequence[Any],
        slice_seconds: float,
    ) -> JsonResponse:
        # The answer comes once every PDU is processed (spec "Transactions"); the intake
        # hands the reactor back between PDUs meanwhile, and ``in_flight`` keeps the
        # origin's next transaction out until then (one at a time per origin, in order).
        store = self._parts.store
        try:
            outcome = await self._parts.intake.receive(
                origin, pdus, edus, store.get_room, self._parts.now(), slice_seconds=slice_seconds
            )
            store.memory.remember(origin, txn_id, outcome.response)
        finally:
            self.in_flight.discard(origin)
        try:
            self._hooks.on_transaction(origin, outcome)
        except Exception:
            log.failure(
                "Transaction hook failed on {txn_id} from {origin}", txn_id=txn_id, origin=origin
            )
        return JsonResponse(200, outcome.response)
