"""The fan-out area's judging (issue 23): which ``/send`` transactions of the homeserver
one of our servers received, and whether a message came in one of them (pushed) or was
fetched by us (pulled), from canned request feeds, the wrong ones included."""

from __future__ import annotations

from typing import Any

from stubserver.conformance.suite_fanout import how_it_came, pushed_in, send_transactions

HS = "hs.test"
ROOM = "!room:hs.test"


def _send(
    body: str | None,
    *,
    origin: str | None = HS,
    status: int = 200,
    fault: str | None = None,
    room: str = ROOM,
    method: str = "PUT",
    uri: str = "/_matrix/federation/v1/send/1700000000",
) -> dict[str, Any]:
    pdus = [] if body is None else [{"room_id": room, "content": {"body": body}}]
    entry: dict[str, Any] = {
        "ts": 1,
        "method": method,
        "uri": uri,
        "origin": origin,
        "status": status,
        "content": {"origin": origin, "pdus": pdus},
    }
    if fault is not None:
        entry["fault"] = fault
    return entry


def test_only_the_homeservers_put_send_requests_are_its_transactions() -> None:
    """PUT /send signed by the homeserver counts, whatever its content (an EDU-only
    transaction too); another origin's, an unsigned one, a GET and another path do not."""
    feed = [
        _send("a"),
        _send(None),
        _send("a", origin="other.test"),
        _send("a", origin=None),
        _send("a", method="GET"),
        _send("a", uri="/_matrix/federation/v1/event/$x"),
    ]
    assert send_transactions(feed, HS) == feed[:2]


def test_a_message_in_an_answered_send_was_pushed() -> None:
    """The message's body in a /send of the homeserver, answered 200: pushed, that entry."""
    feed = [_send("other"), _send("M1")]
    assert pushed_in(feed, HS, ROOM, "M1") is feed[1]
    assert how_it_came(feed, HS, ROOM, "M1") == "pushed"


def test_a_message_only_in_a_refused_or_failed_send_was_pulled() -> None:
    """A /send that a fault acted on (reset while down, failed 502) or that was not
    answered 200 did not deliver it: the message came another way, pulled."""
    feed = [
        _send("M1", fault="refused", status=499),
        _send("M1", fault="failed", status=502),
        _send("M1", status=400),
    ]
    assert pushed_in(feed, HS, ROOM, "M1") is None
    assert how_it_came(feed, HS, ROOM, "M1") == "pulled"


def test_the_same_body_from_another_server_or_room_is_not_the_message() -> None:
    """The body in another server's /send, or in a PDU of another room: not pushed."""
    feed = [_send("M1", origin="other.test"), _send("M1", room="!elsewhere:hs.test")]
    assert how_it_came(feed, HS, ROOM, "M1") == "pulled"


def test_malformed_transaction_content_is_no_delivery() -> None:
    """A /send whose content is not an object, whose pdus are not PDU objects or whose
    PDU has no content object delivered nothing."""
    feed = [
        {**_send("M1"), "content": None},
        {**_send("M1"), "content": {"pdus": ["M1"]}},
        {**_send("M1"), "content": {"pdus": [{"room_id": ROOM, "content": "M1"}]}},
    ]
    assert pushed_in(feed, HS, ROOM, "M1") is None
