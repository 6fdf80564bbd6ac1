"""The outbound transaction queue (rooms.md 1.9, pitfall 10): one transaction in flight
per destination, batches within 50 PDUs / 100 EDUs, never a reused transaction ID,
clock-driven bounded backoff on failure, bounded queues, per-PDU delivery results."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from stubserver.rooms.sender import (
    MAX_QUEUED_EDUS,
    RETRY_MAX_SECONDS,
    RETRY_MIN_SECONDS,
    TransactionSender,
    retry_delay_seconds,
)
from tests.rooms.service_net import joined, say, two_peers


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class Recorder:
    """A requester that records each request and answers from a script (default 200 with
    ``{}`` for every PDU); ``hold`` keeps answers back until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, Any]] = []
        self.script: list[Any] = []
        self.held: list[Deferred[Any]] = []
        self.hold = False

    def request(
        self, method: str, destination: str, path_and_query: str, content: Any = None
    ) -> Deferred[Any]:
        self.calls.append((method, destination, path_and_query, content))
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.held.append(d)
            return d
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                return fail(step)
            return succeed(step)
        pdus: dict[str, Any] = {f"$e{i}": {} for i in range(len(content.get("pdus", [])))}
        return succeed(Answer(200, json.dumps({"pdus": pdus}).encode()))


def new_sender() -> tuple[Clock, Recorder, TransactionSender]:
    clock = Clock()
    recorder = Recorder()
    return clock, recorder, TransactionSender(clock, "a.test", recorder, random.Random(3))


def pdu(n: int) -> dict[str, Any]:
    return {"type": "m.room.message", "n": n}


def test_a_transaction_has_the_shape_synapse_sends() -> None:
    """PUT /_matrix/federation/v1/send/{txnId} with origin, origin_server_ts, pdus; no
    edus key when there are none, an edus list when there are."""
    clock, recorder, sender = new_sender()
    clock.advance(5)
    sender.send_pdu("b.test", "$e0", pdu(0))
    method, destination, path, body = recorder.calls[0]
    assert (method, destination) == ("PUT", "b.test")
    assert path == f"/_matrix/federation/v1/send/{sender.transaction_ids[0]}"
    assert body == {"origin": "a.test", "origin_server_ts": 5000, "pdus": [pdu(0)]}
    sender.send_edu("b.test", "m.typing", {"typing": True})
    assert recorder.calls[1][3]["edus"] == [{"edu_type": "m.typing", "content": {"typing": True}}]
    assert recorder.calls[1][3]["pdus"] == []


def test_one_transaction_in_flight_and_batches_within_the_limits() -> None:
    """While a transaction is unanswered, nothing else goes to that destination; then the
    queued PDUs and EDUs go in batches of at most 50 PDUs and 100 EDUs, in order."""
    _clock, recorder, sender = new_sender()
    recorder.hold = True
    sender.send_pdu("b.test", "$first", pdu(-1))
    for n in range(120):
        sender.send_pdu("b.test", f"$p{n}", pdu(n))
    for n in range(150):
        sender.send_edu("b.test", "m.typing", {"n": n})
    assert len(recorder.calls) == 1
    sender.send_pdu("c.test", "$other", pdu(0))  # another destination is independent
    assert len(recorder.calls) == 2
    recorder.hold = False
    recorder.held.pop(0).callback(Answer(200, b'{"pdus": {}}'))
    to_b = [c[3] for c in recorder.calls if c[1] == "b.test"][1:]
    assert [len(b["pdus"]) for b in to_b] == [50, 50, 20]
    assert [len(b.get("edus", [])) for b in to_b] == [100, 50, 0]
    assert [p["n"] for b in to_b for p in b["pdus"]] == list(range(120))


def test_a_failure_is_retried_after_a_clock_driven_backoff_with_a_new_txn_id() -> None:
    """A failed transaction (no answer, then a 500) is retried after RETRY_MIN_SECONDS,
    then twice that, with the same PDUs under a new transaction ID each time; the
    answer's per-PDU results are recorded as deliveries."""
    clock, recorder, sender = new_sender()
    recorder.script = [ConnectionError("refused"), Answer(500, b"{}")]
    sender.send_pdu("b.test", "$e0", pdu(0))
    assert len(recorder.calls) == 1 and sender.failures("b.test") == 1
    clock.advance(RETRY_MIN_SECONDS - 0.01)
    assert len(recorder.calls) == 1
    clock.advance(0.01)
    assert len(recorder.calls) == 2 and sender.failures("b.test") == 2
    clock.advance(RETRY_MIN_SECONDS * 2)
    assert len(recorder.calls) == 3 and sender.failures("b.test") == 0
    assert [c[3]["pdus"] for c in recorder.calls] == [[pdu(0)]] * 3
    paths = [c[2] for c in recorder.calls]
    assert len(set(paths)) == 3 and len(set(sender.transaction_ids)) == 3
    [delivery] = sender.deliveries("b.test")
    assert (delivery.event_id, delivery.result) == ("$e0", {})
    assert delivery.txn_id == sender.transaction_ids[-1]


def test_the_backoff_is_bounded() -> None:
    """The retry delay doubles from RETRY_MIN_SECONDS and never exceeds
    RETRY_MAX_SECONDS."""
    assert retry_delay_seconds(1) == RETRY_MIN_SECONDS
    assert retry_delay_seconds(2) == RETRY_MIN_SECONDS * 2
    assert retry_delay_seconds(1_000) == RETRY_MAX_SECONDS


def test_transaction_ids_have_a_random_prefix_and_never_repeat() -> None:
    """Two senders (two processes) use different prefixes; one sender's IDs are unique."""
    _, _, first = new_sender()
    other = TransactionSender(Clock(), "a.test", Recorder(), random.Random(4))
    for n in range(20):
        first.send_pdu("b.test", f"$e{n}", pdu(n))
        other.send_pdu("b.test", f"$e{n}", pdu(n))
    assert len(set(first.transaction_ids)) == 20
    assert first.transaction_ids[0].split(".")[0] != other.transaction_ids[0].split(".")[0]


def test_a_full_queue_drops_the_oldest_edus_and_logs_dropped_pdus() -> None:
    """Past MAX_QUEUED_EDUS the oldest EDUs go; past MAX_QUEUED_PDUS the oldest PDU goes
    and is recorded as a dropped delivery (never silently)."""
    recorder = Recorder()
    sender = TransactionSender(Clock(), "a.test", recorder, random.Random(3), max_queued_pdus=3)
    recorder.hold = True
    sender.send_pdu("b.test", "$inflight", pdu(0))
    for n in range(5):
        sender.send_pdu("b.test", f"$q{n}", pdu(n))
    for n in range(MAX_QUEUED_EDUS + 2):
        sender.send_edu("b.test", "m.typing", {"n": n})
    assert sender.queued("b.test") == (3, MAX_QUEUED_EDUS)
    dropped = [d.event_id for d in sender.deliveries("b.test")]
    assert dropped == ["$q0", "$q1"]
    assert all("dropped" in (d.result or {}).get("error", "") for d in sender.deliveries("b.test"))
    recorder.hold = False
    recorder.held.pop(0).callback(Answer(200, b"{}"))
    edus = [e["content"]["n"] for c in recorder.calls[1:] for e in c[3].get("edus", [])]
    assert edus[0] == 2


def test_between_two_servers_a_down_destination_gets_the_event_later() -> None:
    """With b down, a's message waits in the queue; after b is back and the backoff
    has passed on the clock, b has the message."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    network.down.add("b.test")
    event_id = say(a, room_id, "alice", "are you there")
    assert b.room(room_id).get_event(event_id) is None
    network.down.clear()
    network.clock.advance(RETRY_MIN_SECONDS)
    record = b.room(room_id).record(event_id)
    assert record is not None and record.outcome == "accepted"
    txn_paths = network.paths("a.test", "/v1/send/")
    assert len(txn_paths) == len(set(txn_paths))


def test_a_refused_transaction_is_one_line_with_the_destination_and_the_answer() -> None:
    """A transaction answered 429 is logged once, naming the destination, the status, the
    errcode and the error answered, and the retry's delay (issue 24)."""
    from twisted.logger import capturedLogs, formatEvent

    _clock, recorder, sender = new_sender()
    body = {"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests"}
    recorder.script = [Answer(429, json.dumps(body).encode())]
    with capturedLogs() as events:
        sender.send_pdu("b.test", "$e0", pdu(0))
    assert [formatEvent(e) for e in events] == [
        f"Transaction {sender.transaction_ids[0]} to b.test failed (HTTP 429 M_LIMIT_EXCEEDED:"
        f" Too many requests); retrying in {RETRY_MIN_SECONDS} s"
    ]
