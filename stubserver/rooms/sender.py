"""Sending our PDUs and EDUs to other servers: a transaction queue per destination.

Spec: Server-Server API "Transactions" (``PUT /_matrix/federation/v1/send/{txnId}``);
rooms.md 1.9 and pitfall 10 for what Synapse expects:

* one transaction in flight per destination (Synapse answers 429 to a second one);
* at most :data:`~stubserver.rooms.transaction.MAX_PDUS_PER_TRANSACTION` PDUs and
  :data:`~stubserver.rooms.transaction.MAX_EDUS_PER_TRANSACTION` EDUs per transaction;
* the body is ``{"origin", "origin_server_ts", "pdus"}`` plus ``"edus"`` only when there
  are some;
* a transaction ID is never reused (Synapse answers a reused one from memory and ignores
  its PDUs): a per-process random prefix and a counter. A retry is a new transaction with
  a new ID (the receiver deduplicates the PDUs by event ID);
* a failure (no answer, or a non-2xx) puts the batch back at the front of the queue and
  retries after a bounded exponential backoff, driven by the clock (``callLater``).

Each queue is bounded: past :data:`MAX_QUEUED_EDUS` the oldest EDUs are dropped first;
past :data:`MAX_QUEUED_PDUS` the oldest PDU is dropped and logged (never silently), and
its delivery is recorded as dropped. :meth:`TransactionSender.deliveries` tells what each
destination answered for each PDU.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from stubserver.rooms.transaction import MAX_EDUS_PER_TRANSACTION, MAX_PDUS_PER_TRANSACTION
from stubserver.server.refusals import refusal_reason
from stubserver.signing.canonical_json import BadJson, parse_json_bytes

#: First retry delay after a failed transaction, in seconds; doubled on each further
#: failure up to :data:`RETRY_MAX_SECONDS`.
RETRY_MIN_SECONDS: Final = 2.0
RETRY_MAX_SECONDS: Final = 300.0
RETRY_MULTIPLIER: Final = 2
#: Most PDUs / EDUs waiting for one destination.
MAX_QUEUED_PDUS: Final = 10_000
MAX_QUEUED_EDUS: Final = 1_000
#: Most delivery records kept per destination (the oldest are forgotten first).
MAX_DELIVERIES_PER_DESTINATION: Final = 10_000
#: Length of the random transaction-ID prefix, in hex characters.
TXN_PREFIX_HEX: Final = 16

log = Logger()


class ResponseLike(Protocol):
    """What a signed request answers: the status and the whole body."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...


class SignedRequester(Protocol):
    """Signed outbound federation requests, as
    :meth:`stubserver.client.signed_request.FederationClient.request`: fails (errback)
    when no complete response arrives."""

    def request(
        self, method: str, destination: str, path_and_query: str, content: Any = None
    ) -> Deferred[Any]: ...


@dataclass(frozen=True)
class Delivery:
    """What ``destination`` answered for one PDU: ``result`` is the per-PDU entry of the
    ``/send`` answer (``{}`` or ``{"error": ...}``), ``None`` when the answer had no entry
    (the receiver dropped it at parse), or ``{"error": "dropped: ..."}`` when we dropped
    it from a full queue."""

    event_id: str
    txn_id: str | None
    result: Mapping[str, Any] | None


@dataclass(frozen=True)
class _Batch:
    """One transaction's contents."""

    txn_id: str
    pdus: list[tuple[str, dict[str, Any]]]
    edus: list[dict[str, Any]]


@dataclass
class _Queue:
    pdus: deque[tuple[str, dict[str, Any]]] = field(default_factory=deque)
    edus: deque[dict[str, Any]] = field(default_factory=deque)
    in_flight: bool = False
    failures: int = 0
    retry: IDelayedCall | None = None
    deliveries: deque[Delivery] = field(
        default_factory=lambda: deque(maxlen=MAX_DELIVERIES_PER_DESTINATION)
    )


def _answer_reason(status: int, body: bytes) -> str:
    """``"HTTP 429 M_LIMIT_EXCEEDED: <error>"``: a refusal as the log line names it."""
    try:
        parsed: Any = parse_json_bytes(body)
    except BadJson:
        parsed = None
    return f"HTTP {refusal_reason(status, parsed)}"


def retry_delay_seconds(failures: int) -> float:
    """The wait before the next attempt after ``failures`` failures in a row (≥ 1)."""
    exponent = min(max(failures - 1, 0), 32)
    return float(min(RETRY_MIN_SECONDS * RETRY_MULTIPLIER**exponent, RETRY_MAX_SECONDS))


class TransactionSender:
    """Per-destination transaction queues from ``origin`` (our server name); the queue
    bounds default to :data:`MAX_QUEUED_PDUS` and :data:`MAX_QUEUED_EDUS`."""

    def __init__(
        self,
        clock: IReactorTime,
        origin: str,
        client: SignedRequester,
        rng: random.Random,
        *,
        max_queued_pdus: int = MAX_QUEUED_PDUS,
        max_queued_edus: int = MAX_QUEUED_EDUS,
    ) -> None:
        self._max_pdus = max_queued_pdus
        self._max_edus = max_queued_edus
        self._clock = clock
        self._origin = origin
        self._client = client
        self._prefix = "".join(rng.choice("0123456789abcdef") for _ in range(TXN_PREFIX_HEX))
        self._counter = 0
        self._queues: dict[str, _Queue] = {}
        #: Every transaction ID used, in order (tests and the demo read it).
        self.transaction_ids: list[str] = []

    # --- queueing -------------------------------------------------------------------

    def send_pdu(self, destination: str, event_id: str, pdu: Mapping[str, Any]) -> None:
        """Queue ``pdu`` (whose ID is ``event_id``) for ``destination``."""
        queue = self._queue(destination)
        queue.pdus.append((event_id, dict(pdu)))
        while len(queue.pdus) > self._max_pdus:
            dropped, _ = queue.pdus.popleft()
            log.warn(
                "Queue for {destination} full: dropping PDU {event_id}",
                destination=destination,
                event_id=dropped,
            )
            queue.deliveries.append(Delivery(dropped, None, {"error": "dropped: queue full"}))
        self._kick(destination)

    def send_edu(self, destination: str, edu_type: str, content: Any) -> None:
        """Queue an EDU for ``destination`` (the oldest EDU goes when the queue is full)."""
        queue = self._queue(destination)
        queue.edus.append({"edu_type": edu_type, "content": content})
        while len(queue.edus) > self._max_edus:
            queue.edus.popleft()
            log.info(
                "Queue for {destination} full: dropped its oldest EDU", destination=destination
            )
        self._kick(destination)

    # --- reading --------------------------------------------------------------------

    def deliveries(self, destination: str) -> list[Delivery]:
        """What ``destination`` answered for each PDU sent to it, oldest first."""
        queue = self._queues.get(destination)
        return [] if queue is None else list(queue.deliveries)

    def queued(self, destination: str) -> tuple[int, int]:
        """``(PDUs, EDUs)`` waiting for ``destination`` (not counting one in flight)."""
        queue = self._queues.get(destination)
        return (0, 0) if queue is None else (len(queue.pdus), len(queue.edus))

    def failures(self, destination: str) -> int:
        """Failed attempts in a row for ``destination``."""
        queue = self._queues.get(destination)
        return 0 if queue is None else queue.failures

    def retry_now(self, destination: str) -> None:
        """Try ``destination`` at once (it proved it is up, e.g. it sent us a request)."""
        queue = self._queues.get(destination)
        if queue is not None and queue.retry is not None and queue.retry.active():
            queue.retry.cancel()
            queue.retry = None
            self._kick(destination)

    def stop(self) -> None:
        """Cancel every pending retry timer (shutdown, tests)."""
        for queue in self._queues.values():
            if queue.retry is not None and queue.retry.active():
                queue.retry.cancel()
            queue.retry = None

    # --- sending --------------------------------------------------------------------

    def _queue(self, destination: str) -> _Queue:
        queue = self._queues.get(destination)
        if queue is None:
            queue = self._queues[destination] = _Queue()
        return queue

    def _next_txn_id(self) -> str:
        self._counter += 1
        txn_id = f"{self._prefix}.{self._counter}"
        self.transaction_ids.append(txn_id)
        return txn_id

    def _kick(self, destination: str) -> None:
        queue = self._queue(destination)
        if queue.in_flight or queue.retry is not None or not (queue.pdus or queue.edus):
            return
        pdus = [queue.pdus.popleft() for _ in range(min(len(queue.pdus), MAX_PDUS_PER_TRANSACTION))]
        edus = [queue.edus.popleft() for _ in range(min(len(queue.edus), MAX_EDUS_PER_TRANSACTION))]
        batch = _Batch(self._next_txn_id(), pdus, edus)
        body: dict[str, Any] = {
            "origin": self._origin,
            "origin_server_ts": int(self._clock.seconds() * 1000),
            "pdus": [pdu for _, pdu in pdus],
        }
        if edus:
            body["edus"] = edus
        queue.in_flight = True
        try:
            d = self._client.request(
                "PUT", destination, f"/_matrix/federation/v1/send/{batch.txn_id}", body
            )
        except Exception as e:  # a request that cannot even start counts as a failure
            self._failed(destination, queue, batch, str(e))
            return
        d.addCallbacks(
            lambda response: self._answered(destination, queue, batch, response),
            lambda failure: self._failed(destination, queue, batch, failure.getErrorMessage()),
        )

    def _answered(self, destination: str, queue: _Queue, batch: _Batch, response: Any) -> None:
        status = int(response.status)
        if not 200 <= status < 300:
            self._failed(destination, queue, batch, _answer_reason(status, response.body))
            return
        try:
            answer = parse_json_bytes(response.body)
        except Exception:
            answer = {}
        results = answer.get("pdus") if isinstance(answer, dict) else None
        results = results if isinstance(results, dict) else {}
        for event_id, _ in batch.pdus:
            result = results.get(event_id)
            queue.deliveries.append(
                Delivery(event_id, batch.txn_id, result if isinstance(result, dict) else None)
            )
        queue.in_flight = False
        queue.failures = 0
        self._kick(destination)

    def _failed(self, destination: str, queue: _Queue, batch: _Batch, reason: str) -> None:
        queue.in_flight = False
        queue.failures += 1
        # Back at the front, in order: nothing is lost by a failure.
        queue.pdus.extendleft(reversed(batch.pdus))
        queue.edus.extendleft(reversed(batch.edus))
        delay = retry_delay_seconds(queue.failures)
        log.info(
            "Transaction {txn_id} to {destination} failed ({reason}); retrying in {delay} s",
            txn_id=batch.txn_id,
            destination=destination,
            reason=reason,
            delay=delay,
        )

        def retry() -> None:
            queue.retry = None
            self._kick(destination)

        queue.retry = self._clock.callLater(delay, retry)
