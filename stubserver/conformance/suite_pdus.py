"""What it does with PDUs that must not be taken as they are, and with transactions:
a bad signature, a bad content hash, an authorization failure, a soft failure, the
transaction limits and a retried transaction. Per room version.

Spec: Server-Server API v1.19, "Checks performed on receipt of a PDU", "Validating hashes
and signatures on received events", "Rejection", "Soft failure", "Transactions".
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from stubserver.conformance.context import (
    FEDERATION_WAIT_SECONDS,
    PEER_USER,
    PEER_USER_2,
    POLL_SECONDS,
    Context,
    client_call,
    expect,
    per_version,
    q,
    visible_event,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.testing import FederationAnswer

CHECKS = "Checks performed on receipt of a PDU"
HASHES = "Validating hashes and signatures on received events"
REJECTION = "Rejection"
SOFT_FAILURE = "Soft failure"
TRANSACTIONS = "Transactions"
#: The spec's limits on one transaction ("Transactions").
MAX_PDUS = 50
MAX_EDUS = 100


def bad_signature(ctx: Context, version: str) -> None:
    """Our PDU with a bad signature is dropped (never visible to its client), and the
    room goes on: the next good one is."""
    room_id = ctx.join_homeserver_room(version)
    broken = ctx.send_text(room_id, "forged", tamper="signature")
    good = ctx.send_text(room_id, "genuine")
    ctx.wait_visible(room_id, good, "the good event after the forged one")
    expect("the forged event as its client sees it", None, visible_event(ctx.user, room_id, broken))


def bad_content_hash(ctx: Context, version: str) -> None:
    """Our PDU whose content does not match its hash is redacted: its client sees the
    event with its content stripped."""
    room_id = ctx.join_homeserver_room(version)
    tampered = ctx.send_text(room_id, "changed after hashing", tamper="content")
    seen = ctx.wait_visible(room_id, tampered, "the event with a bad content hash")
    expect("the content of the event with a bad content hash", {}, seen.get("content"))


def auth_failure(ctx: Context, version: str) -> None:
    """A state event our level-0 user has no power for (``m.room.name``, state_default
    50) is rejected: invisible to its client, the name unchanged; the room goes on."""
    room_id = ctx.join_homeserver_room(version)
    extremities = ctx.peer.room_state(room_id)["forward_extremities"]
    rejected = ctx.peer.send(
        room_id,
        "m.room.name",
        {"name": "not yours to set"},
        sender=PEER_USER,
        state_key="",
        prev_events=extremities,
    )
    good = ctx.send_text(room_id, "after the rejected one")
    ctx.wait_visible(room_id, good, "the good event after the rejected one")
    expect(
        "the unauthorized event as its client sees it",
        None,
        visible_event(ctx.user, room_id, rejected),
    )
    names = [e for e in ctx.user.state(room_id) if e.get("type") == "m.room.name"]
    expect("the room's name events", [], [e for e in names if e["event_id"] == rejected])


def soft_failure(ctx: Context, version: str) -> None:
    """Its user bans our second user; an event from that user built on the pre-ban
    state (prev and auth events from before the ban) passes auth at its place in the
    graph but not against the current state: soft-failed, invisible to its client."""
    room_id = ctx.join_homeserver_room(version, users=(PEER_USER, PEER_USER_2))
    before = ctx.peer.send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": "before"}, sender=PEER_USER_2
    )
    ctx.wait_visible(room_id, before, "our second user's message before the ban")
    auth_events = ctx.peer.wait_for_event(room_id, event_id=before).pdu["auth_events"]
    banned = ctx.peer_user_id(PEER_USER_2)
    client_call(ctx.user, "POST", f"/rooms/{q(room_id)}/ban", {"user_id": banned})
    ctx.peer.wait_for_event(
        room_id,
        type="m.room.member",
        state_key=banned,
        match=lambda e: e.content.get("membership") == "ban",
    )
    late = ctx.peer.send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": "banned"},
        sender=PEER_USER_2,
        prev_events=[before],
        auth_events=auth_events,
    )
    good = ctx.send_text(room_id, "after the soft-failed one")
    ctx.wait_visible(room_id, good, "the good event after the soft-failed one")
    expect(
        "the soft-failed event as its client sees it", None, visible_event(ctx.user, room_id, late)
    )


def transaction_id() -> str:
    return f"conformance-{secrets.token_hex(8)}"


def put_transaction(ctx: Context, txn_id: str, pdus: list[Any], edus: list[Any]) -> Any:
    """PUT one transaction, again while the answer is 429: a homeserver may take one
    transaction per origin at a time (Synapse does), and our peer sends its own too."""
    deadline = time.monotonic() + FEDERATION_WAIT_SECONDS
    while True:
        answer = _put_once(ctx, txn_id, pdus, edus)
        if answer.status != HTTPStatus.TOO_MANY_REQUESTS or time.monotonic() >= deadline:
            return answer
        time.sleep(POLL_SECONDS)


def _put_once(ctx: Context, txn_id: str, pdus: list[Any], edus: list[Any]) -> Any:
    body = {
        "origin": ctx.peer.server_name,
        "origin_server_ts": int(time.time() * 1000),
        "pdus": pdus,
        "edus": edus,
    }
    return ctx.peer.federation_request(
        ctx.server_name, "PUT", f"/_matrix/federation/v1/send/{q(txn_id)}", body
    )


def _withheld_pdus(ctx: Context, room_id: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` messages we add to our copy of the room but send to nobody: (ID, PDU)."""
    ids = [ctx.send_text(room_id, f"held {i}", destinations=[]) for i in range(count)]
    by_id = {e.event_id: e.pdu for e in ctx.peer.events(room_id)}
    return [(i, by_id[i]) for i in ids]


def too_many_pdus(ctx: Context, version: str) -> None:
    """A transaction of 51 PDUs (the limit is 50) is refused with 400."""
    room_id = ctx.join_homeserver_room(version)
    pdus = [pdu for _, pdu in _withheld_pdus(ctx, room_id, MAX_PDUS + 1)]
    answer = put_transaction(ctx, transaction_id(), pdus, [])
    expect(f"a transaction of {MAX_PDUS + 1} PDUs (answer {answer.body})", 400, answer.status)


def too_many_edus(ctx: Context) -> None:
    """A transaction of 101 EDUs (the limit is 100) is refused with 400."""
    edu = {
        "edu_type": "m.typing",
        "content": {
            "room_id": "!nowhere:" + ctx.peer.server_name,
            "user_id": ctx.peer_user_id(),
            "typing": False,
        },
    }
    answer = put_transaction(ctx, transaction_id(), [], [edu] * (MAX_EDUS + 1))
    expect(f"a transaction of {MAX_EDUS + 1} EDUs (answer {answer.body})", 400, answer.status)


def expect_handled(what: str, answer: FederationAnswer, event_id: str) -> None:
    """``answer`` is a 200 whose ``pdus`` names ``event_id`` without an error ("If no
    error is present, the PDU can be considered successfully handled")."""
    expect(f"{what}'s status (answer {answer.body})", 200, answer.status)
    results = answer.body.get("pdus") if isinstance(answer.body, dict) else None
    result = results.get(event_id) if isinstance(results, dict) else None
    if not isinstance(result, dict) or "error" in result:
        raise CheckFailed(f"{what}'s result for {event_id}", "{} (handled)", answer.body)


def retried_transaction(ctx: Context, version: str) -> None:
    """A transaction sent again under the same ID, as a sender retries it ("The sending
    server must wait and retry for a 200 OK response before sending a transaction with a
    different txnId", PUT /send/{txnId}), is answered 200 with its PDU handled, as the
    first time ("The server is to use this response even in the event of one or more PDUs
    failing to be processed"), and the event stays readable.

    The spec says nothing of an ID reused for other PDUs, so that is not checked: Synapse
    answers the first answer again and drops them, Dendrite 0.13.8 processes them."""
    room_id = ctx.join_homeserver_room(version)
    ((event_id, pdu),) = _withheld_pdus(ctx, room_id, 1)
    txn = transaction_id()
    expect_handled("the transaction", put_transaction(ctx, txn, [pdu], []), event_id)
    ctx.wait_visible(room_id, event_id, "the transaction's event")
    expect_handled("the retried transaction", put_transaction(ctx, txn, [pdu], []), event_id)
    marker = ctx.send_text(room_id, "marker after the retry")
    ctx.wait_visible(room_id, marker, "the marker sent after the retried transaction")
    ctx.wait_visible(room_id, event_id, "the retried transaction's event")


AREA: list[tuple[str, str, Callable[[Context, str], None]]] = [
    ("pdus.bad_signature_dropped", HASHES, bad_signature),
    ("pdus.bad_content_hash_redacted", HASHES, bad_content_hash),
    ("pdus.unauthorized_event_rejected", REJECTION, auth_failure),
    ("pdus.banned_user_event_soft_failed", SOFT_FAILURE, soft_failure),
    ("transactions.51_pdus_refused", TRANSACTIONS, too_many_pdus),
    ("transactions.retry_answered", TRANSACTIONS, retried_transaction),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version, and the EDU limit once."""
    return [
        *per_version(AREA, versions),
        ConformanceTest("transactions.101_edus_refused", TRANSACTIONS, None, too_many_edus),
    ]


__all__ = ["CHECKS", "tests"]
