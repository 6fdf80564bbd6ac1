"""What it does with PDUs that must not be taken as they are, and with transactions:
a bad signature, a bad content hash, an authorization failure, a soft failure, the
transaction limits and a retried transaction. Per room version.

Spec: Server-Server API v1.19, "Checks performed on receipt of a PDU", "Validating hashes
and signatures on received events", "Rejection", "Soft failure", "Transactions".
"""

from __future__ import annotations

import secrets
import time
from http import HTTPStatus
from typing import Any

from stubserver.conformance.context import (
    FEDERATION_WAIT_SECONDS,
    PEER_USER,
    PEER_USER_2,
    POLL_SECONDS,
    AreaEntry,
    Context,
    NotYet,
    SyncStream,
    ephemeral,
    expect,
    once_in_newest,
    per_version,
    q,
    visible_event,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.conformance.suite_auth import (
    REJECTION,
    SOFT_FAILURE,
    rejected_event,
    soft_failed_event,
)
from stubserver.testing import FederationAnswer, Peer

CHECKS = "Checks performed on receipt of a PDU"
HASHES = "Validating hashes and signatures on received events"
TRANSACTIONS = "Transactions"
#: The spec's limits on one transaction ("Transactions").
MAX_PDUS = 50
MAX_EDUS = 100
#: A /messages page larger than any test room.
BIG_PAGE = 100


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


def _txn_id() -> str:
    return f"conformance-{secrets.token_hex(8)}"


def _put_transaction(
    ctx: Context, txn_id: str, pdus: list[Any], edus: list[Any], origin: Peer | None = None
) -> Any:
    """PUT one transaction from ``origin`` (by default the peer), again while the answer
    is 429: a homeserver may take one transaction per origin at a time (Synapse does),
    and our peer sends its own too."""
    deadline = time.monotonic() + FEDERATION_WAIT_SECONDS
    while True:
        answer = _put_once(ctx, txn_id, pdus, edus, origin or ctx.peer)
        if answer.status != HTTPStatus.TOO_MANY_REQUESTS or time.monotonic() >= deadline:
            return answer
        time.sleep(POLL_SECONDS)


def _put_once(ctx: Context, txn_id: str, pdus: list[Any], edus: list[Any], origin: Peer) -> Any:
    body = {
        "origin": origin.server_name,
        "origin_server_ts": int(time.time() * 1000),
        "pdus": pdus,
        "edus": edus,
    }
    return origin.federation_request(
        ctx.server_name, "PUT", f"/_matrix/federation/v1/send/{q(txn_id)}", body
    )


def _withheld_pdus(ctx: Context, room_id: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` messages we add to our copy of the room but send to nobody: (ID, PDU)."""
    ids = [ctx.send_text(room_id, f"held {i}", destinations=[]) for i in range(count)]
    by_id = {e.event_id: e.pdu for e in ctx.peer.events(room_id)}
    return [(i, by_id[i]) for i in ids]


def _visible_among(ctx: Context, room_id: str, event_ids: list[str]) -> list[str]:
    """Which of ``event_ids`` its client's ``/messages`` (newest first) lists."""
    chunk = ctx.user.messages(room_id, limit=BIG_PAGE)["chunk"]
    listed = {e.get("event_id") for e in chunk}
    return [e for e in event_ids if e in listed]


def _wait_all_visible(ctx: Context, room_id: str, event_ids: list[str], what: str) -> None:
    def probe() -> bool | NotYet:
        got = len(_visible_among(ctx, room_id, event_ids))
        return True if got == len(event_ids) else NotYet(f"{got} of them")

    wait_until(what, probe, expected=f"all {len(event_ids)} in its client's /messages")


def _marker_after(ctx: Context, room_id: str, prev: str, what: str) -> None:
    """A message of ours in a transaction of its own, built on ``prev`` (not on anything
    it must not take), readable by its client: what it did before is done."""
    marker = ctx.send_text(room_id, f"marker after {what}", prev_events=[prev])
    ctx.wait_visible(room_id, marker, f"the marker sent after {what}")


def max_pdus_processed(ctx: Context, version: str) -> str:
    """A transaction of exactly 50 PDUs, the most it may carry ("Transactions are limited
    in size; they can have at most 50 PDUs"), is answered 200 and every PDU of it is
    processed: all 50 are readable by its client."""
    room_id = ctx.join_homeserver_room(version)
    held = _withheld_pdus(ctx, room_id, MAX_PDUS)
    answer = _put_transaction(ctx, _txn_id(), [pdu for _, pdu in held], [])
    expect(f"the status of a transaction of {MAX_PDUS} PDUs", 200, answer.status)
    _wait_all_visible(ctx, room_id, [i for i, _ in held], f"the {MAX_PDUS} PDUs of a transaction")
    listed = answer.body.get("pdus") if isinstance(answer.body, dict) else None
    return f"its answer's pdus map lists {len(listed or {})} of them"


def too_many_pdus(ctx: Context, version: str) -> str:
    """A transaction of 51 PDUs breaks the limit ("Must not include more than 50 PDUs";
    the spec names no status for the receiver): it is not processed as a whole. Once a
    later marker (built beside them, not on them) is readable, its client does not see
    all 51. The note gives the status and how many it processed."""
    room_id = ctx.join_homeserver_room(version)
    before = ctx.peer.room_state(room_id)["forward_extremities"][0]
    held = _withheld_pdus(ctx, room_id, MAX_PDUS + 1)
    answer = _put_transaction(ctx, _txn_id(), [pdu for _, pdu in held], [])
    _marker_after(ctx, room_id, before, f"the {MAX_PDUS + 1}-PDU transaction")
    seen = _visible_among(ctx, room_id, [i for i, _ in held])
    if len(seen) == len(held):
        raise CheckFailed(
            f"a transaction of {MAX_PDUS + 1} PDUs (answered {answer.status}), once a later"
            " marker is readable",
            "not processed as a whole (at most 50 PDUs per transaction)",
            f"all {len(held)} PDUs readable by its client",
        )
    return f"answered {answer.status}; {len(seen)} of its PDUs processed"


def _stray_typing(ctx: Context, count: int) -> list[dict[str, Any]]:
    """``count`` m.typing EDUs for a room no one is in: nothing to show of them."""
    edu = {
        "edu_type": "m.typing",
        "content": {
            "room_id": "!nowhere:" + ctx.peer.server_name,
            "user_id": ctx.peer_user_id(),
            "typing": False,
        },
    }
    return [edu] * count


def _typing_edu(room_id: str, user_id: str) -> dict[str, Any]:
    return {
        "edu_type": "m.typing",
        "content": {"room_id": room_id, "user_id": user_id, "typing": True},
    }


def _typing(answer: dict[str, Any], room_id: str) -> list[str]:
    return list(ephemeral(answer, room_id).get("m.typing", {}).get("user_ids") or [])


def max_edus_processed(ctx: Context, version: str) -> None:
    """A transaction of exactly 100 EDUs, the most it may carry ("at most ... 100
    EDUs"), is answered 200 and processed to its last EDU: 99 typing EDUs for a room no
    one is in, then our user typing in a room we share, which its client's /sync shows."""
    room_id = ctx.join_homeserver_room(version)
    stream = SyncStream(ctx.user)
    user_id = ctx.peer_user_id()
    edus = [*_stray_typing(ctx, MAX_EDUS - 1), _typing_edu(room_id, user_id)]
    answer = _put_transaction(ctx, _txn_id(), [], edus)
    expect(f"the status of a transaction of {MAX_EDUS} EDUs", 200, answer.status)
    stream.wait(
        f"our user typing (the last of {MAX_EDUS} EDUs) in its client's /sync",
        lambda a: user_id in _typing(a, room_id),
        seen=lambda a: ephemeral(a, room_id).get("m.typing"),
    )


def too_many_edus(ctx: Context, version: str) -> str:
    """A transaction of 101 EDUs breaks the limit ("Must not include more than 100
    EDUs"; no status named): it is not processed as a whole. Its last EDU (our user
    typing in a room we share) is not shown by its client's /sync, up to the marker: our
    second user typing, sent in a later transaction. The note gives the status."""
    room_id = ctx.join_homeserver_room(version, users=(PEER_USER, PEER_USER_2))
    stream = SyncStream(ctx.user)
    first, second = ctx.peer_user_id(PEER_USER), ctx.peer_user_id(PEER_USER_2)
    edus = [*_stray_typing(ctx, MAX_EDUS), _typing_edu(room_id, first)]
    answer = _put_transaction(ctx, _txn_id(), [], edus)
    seen: set[str] = set()

    def marker_seen(a: dict[str, Any]) -> bool:
        now = _typing(a, room_id)
        seen.update(now)
        return second in now

    marker = _put_transaction(ctx, _txn_id(), [], [_typing_edu(room_id, second)])
    expect("the marker transaction's status", 200, marker.status)
    stream.wait(
        "the marker (our second user typing) in its client's /sync",
        marker_seen,
        seen=lambda a: ephemeral(a, room_id).get("m.typing"),
    )
    if first in seen:
        raise CheckFailed(
            f"a transaction of {MAX_EDUS + 1} EDUs (answered {answer.status}), up to a later"
            " marker",
            "not processed as a whole (at most 100 EDUs per transaction)",
            "its last EDU processed: our user shown typing",
        )
    return f"answered {answer.status}"


def one_malformed_pdu(ctx: Context, version: str) -> str:
    """A transaction with one malformed PDU (no ``type``) between two good ones is
    answered 200 ("The server is to use this response even in the event of one or more
    PDUs failing to be processed") and the good ones are processed: its client reads
    both, and the answer's ``pdus`` map gives them no ``error`` ("If no error is
    present, the PDU can be considered successfully handled"). The note says what the
    map says of the malformed one."""
    room_id = ctx.join_homeserver_room(version)
    (one_id, one), (two_id, two) = _withheld_pdus(ctx, room_id, 2)
    malformed = {k: v for k, v in one.items() if k != "type"}
    answer = _put_transaction(ctx, _txn_id(), [one, malformed, two], [])
    expect(
        "the status of a transaction with one malformed PDU",
        200,
        answer.status,
        answer=answer.body,
    )
    results = answer.body.get("pdus") if isinstance(answer.body, dict) else None
    results = results if isinstance(results, dict) else {}
    for event_id in (one_id, two_id):
        result = results.get(event_id)
        if isinstance(result, dict) and "error" in result:
            raise CheckFailed(
                f"the answer's pdus entry for the good PDU {event_id}", "no error", result
            )
    for n, event_id in enumerate((one_id, two_id), 1):
        ctx.wait_visible(room_id, event_id, f"good PDU {n} beside the malformed one")
    others = {k: v for k, v in results.items() if k not in (one_id, two_id)}
    return f"the pdus map says of the malformed one: {others or 'nothing'}"


def expect_handled(what: str, answer: FederationAnswer, event_id: str) -> None:
    """``answer`` is a 200 whose ``pdus`` names ``event_id`` without an error ("If no
    error is present, the PDU can be considered successfully handled")."""
    expect(f"{what}'s status", 200, answer.status, answer=answer.body)
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
    txn = _txn_id()
    expect_handled("the transaction", _put_transaction(ctx, txn, [pdu], []), event_id)
    ctx.wait_visible(room_id, event_id, "the transaction's event")
    expect_handled("the retried transaction", _put_transaction(ctx, txn, [pdu], []), event_id)
    marker = ctx.send_text(room_id, "marker after the retry")
    ctx.wait_visible(room_id, marker, "the marker sent after the retried transaction")
    ctx.wait_visible(room_id, event_id, "the retried transaction's event")


AREA: list[AreaEntry] = [
    ("pdus.bad_signature_dropped", HASHES, bad_signature),
    ("pdus.bad_content_hash_redacted", HASHES, bad_content_hash),
    ("pdus.unauthorized_event_rejected", REJECTION, rejected_event),
    ("pdus.banned_user_event_soft_failed", SOFT_FAILURE, soft_failed_event),
    ("transactions.one_malformed_pdu_others_processed", TRANSACTIONS, one_malformed_pdu),
    ("transactions.retry_answered", TRANSACTIONS, retried_transaction),
]

#: The limits of a transaction (50 PDUs, 100 EDUs: "A transaction is limited in size"),
#: run once, in the newest room version: they are the transaction's, not the room's, so
#: the room version does not change them (and each costs a homeserver 50 PDUs to take).
LIMITS: list[AreaEntry] = [
    ("transactions.50_pdus_processed", TRANSACTIONS, max_pdus_processed),
    ("transactions.100_edus_processed", TRANSACTIONS, max_edus_processed),
]

#: The limits exceeded, over the baselines above (once, as they are).
LIMITS_EXCEEDED: list[AreaEntry] = [
    (
        "transactions.51_pdus_not_processed_whole",
        TRANSACTIONS,
        too_many_pdus,
        ("transactions.50_pdus_processed",),
    ),
    (
        "transactions.101_edus_not_processed_whole",
        TRANSACTIONS,
        too_many_edus,
        ("transactions.100_edus_processed",),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests for each room version, then the transaction limits once: the
    baselines, then the negatives."""
    return (
        per_version(AREA, versions)
        + once_in_newest(LIMITS, versions)
        + once_in_newest(LIMITS_EXCEEDED, versions)
    )


__all__ = ["CHECKS", "tests"]
