"""The demo room's evidence (pure): paths, deliveries, counts, output."""

from __future__ import annotations

from typing import Any

from stubserver.devtools.demo_evidence import (
    Copy,
    Message,
    MessageReport,
    carrying_transactions,
    copies_of_messages,
    count_deliveries,
    delivery,
    delivery_path,
    demo_messages,
    describe_delivery,
    format_messages,
    message_body,
    round_of,
    summary_line,
    user_id,
)
from stubserver.devtools.demo_world import TRIO

ALPHA, BETA, GAMMA = TRIO


def event(sender: str, body: str, outcome: str = "accepted", origin: str = "x") -> dict[str, Any]:
    return {
        "event_id": f"${sender}{body}",
        "pdu": {"type": "m.room.message", "sender": sender, "content": {"body": body}},
        "origin": origin,
        "outcome": outcome,
        "reason": None if outcome == "accepted" else "auth",
    }


def send_request(origin: str, sender: str, body: str, authenticated: bool = True) -> dict[str, Any]:
    return {
        "method": "PUT",
        "uri": "/_matrix/federation/v1/send/txn1",
        "origin": origin,
        "authenticated": authenticated,
        "content": {"pdus": [{"sender": sender, "content": {"body": body}}], "edus": []},
    }


def round_copies(round_number: int, servers: tuple[Any, ...] = TRIO) -> dict[Any, Copy]:
    return copies_of_messages(event(user_id(s), message_body(s, round_number)) for s in servers)


def test_each_destination_is_reached_the_way_the_world_delegates_it() -> None:
    """alpha directly, beta through .well-known, gamma through SRV, at their real ports."""
    assert [delivery_path(s) for s in TRIO] == [
        "direct → alpha.demo:8448",
        "well-known → beta-fed.demo:8449",
        "SRV → gamma-srv.demo:8450",
    ]


def test_only_message_events_with_a_text_body_are_copies() -> None:
    """Membership and state events of the feed are not messages."""
    member = {"event_id": "$m", "pdu": {"type": "m.room.member", "sender": "@a:b", "content": {}}}
    copies = copies_of_messages([member, event("@alice:beta.demo", "hi")])
    assert list(copies) == [("@alice:beta.demo", "hi")]


def test_a_transaction_carries_a_message_only_from_its_senders_server() -> None:
    """The PUT /send must come from the sender's server and hold the PDU."""
    requests = [
        send_request("gamma.demo", "@alice:beta.demo", "hi"),
        send_request("beta.demo", "@alice:beta.demo", "other"),
        {**send_request("beta.demo", "@alice:beta.demo", "hi"), "method": "GET"},
    ]
    assert carrying_transactions(requests, "beta.demo", "@alice:beta.demo", "hi") == []
    good = send_request("beta.demo", "@alice:beta.demo", "hi")
    assert carrying_transactions([*requests, good], "beta.demo", "@alice:beta.demo", "hi") == [good]


def test_a_delivery_is_received_verified_and_accepted() -> None:
    """beta's message in gamma's room, accepted, carried by an authenticated transaction."""
    m = Message("@alice:beta.demo", "hi", "$e")
    copies = copies_of_messages([event("@alice:beta.demo", "hi", origin="beta.demo")])
    d = delivery(m, GAMMA, copies, [send_request("beta.demo", "@alice:beta.demo", "hi")])
    assert d.ok and d.authenticated is True
    assert d.path == "SRV → gamma-srv.demo:8450"
    assert describe_delivery(d) == "received, verified, accepted"


def test_a_missing_or_rejected_copy_is_not_a_delivery() -> None:
    """Absent from the room: NOT received; present but rejected: NOT accepted, with why."""
    m = Message("@alice:beta.demo", "hi", "$e")
    missing = delivery(m, ALPHA, {}, [])
    assert not missing.ok and describe_delivery(missing) == "NOT received"
    rejected = delivery(
        m, ALPHA, copies_of_messages([event("@alice:beta.demo", "hi", outcome="rejected")]), []
    )
    assert not rejected.ok
    assert describe_delivery(rejected) == "received, verified, NOT accepted (rejected: auth)"


def test_the_senders_own_copy_counts_without_a_path() -> None:
    """The sender's server holds its own message: no path, no transaction."""
    m = Message("@alice:alpha.demo", "hi", "$e")
    d = delivery(m, ALPHA, copies_of_messages([event("@alice:alpha.demo", "hi")]), [])
    assert d.ok and d.own and d.path == ""
    assert describe_delivery(d) == "sent here, accepted"


def test_deliveries_count_every_round_on_every_server() -> None:
    """Two rounds everywhere: 6 messages, 18/18; one copy missing at beta: 17/18."""
    both = {**round_copies(1), **round_copies(2)}
    everywhere = {s.server_name: both for s in TRIO}
    assert count_deliveries(everywhere, TRIO) == (6, 18, 18)
    gap = dict(both)
    del gap[(user_id(GAMMA), message_body(GAMMA, 2))]
    assert count_deliveries({**everywhere, "beta.demo": gap}, TRIO) == (6, 17, 18)


def test_other_messages_in_the_room_are_not_demo_messages() -> None:
    """Only '<hello from S, round N>' by S's alice counts, in round then trio order."""
    copies = {
        **round_copies(2),
        **round_copies(1, (GAMMA,)),
        **copies_of_messages([event("@bob:alpha.demo", "hello from alpha.demo, round 1")]),
        **copies_of_messages([event(user_id(ALPHA), "hello from beta.demo, round 1")]),
    }
    assert demo_messages({"x": copies}, TRIO) == [
        (user_id(GAMMA), message_body(GAMMA, 1)),
        (user_id(ALPHA), message_body(ALPHA, 2)),
        (user_id(BETA), message_body(BETA, 2)),
        (user_id(GAMMA), message_body(GAMMA, 2)),
    ]
    assert round_of(message_body(BETA, 12)) == 12
    assert round_of("no round") == 0


def test_summary_line_says_ok_only_when_all_arrived() -> None:
    """The last line of the demo, as the README shows it."""
    expected = "room #lobby:alpha.demo: 3 servers, 3 messages, 9/9 deliveries OK"
    assert summary_line(3, 3, 9, 9) == expected
    assert summary_line(3, 6, 17, 18).endswith("17/18 deliveries FAILED")


def test_message_lines_are_aligned_across_messages() -> None:
    """Every server line of every message starts its verdict in the same column."""
    m = Message(user_id(ALPHA), "hi", "$e")
    copies = copies_of_messages([event(user_id(ALPHA), "hi")])
    report = MessageReport(m, tuple(delivery(m, s, copies, None) for s in TRIO))
    lines = format_messages([report, report]).splitlines()
    server_lines = [line for line in lines if line.startswith("  ")]
    assert len(server_lines) == 6
    verdicts = {line.index("sent" if "sent" in line else "received") for line in server_lines}
    assert len(verdicts) == 1
    assert server_lines[0].split()[1:4] == ["(its", "own", "copy)"]
