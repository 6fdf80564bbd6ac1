"""The judging helpers of the event-authorization area (pure): which event a redaction
names in each room version, the auth events we list, the difference of two states."""

from __future__ import annotations

from typing import Any

from stubserver.conformance.suite_auth import (
    CREATE,
    POWER_LEVELS,
    auth_ids,
    fetches,
    redaction_names,
    state_differences,
)

STATE: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    CREATE: ("$create", {}),
    POWER_LEVELS: ("$levels", {}),
    ("m.room.member", "@a:p"): ("$member", {}),
}


def test_a_redaction_names_its_target_where_the_room_version_puts_it() -> None:
    """v10: the top-level ``redacts`` only (one in content is ignored); v11 and v12: the
    one in content only (a top-level one is ignored)."""
    top = {"redacts": "$top", "content": {}}
    inside = {"content": {"redacts": "$inside"}}
    assert redaction_names(top, "10") == "$top"
    assert redaction_names(inside, "10") is None
    for version in ("11", "12"):
        assert redaction_names(inside, version) == "$inside"
        assert redaction_names(top, version) is None


def test_auth_events_list_the_create_event_except_in_v12() -> None:
    """Our auth events name the create event first in v10 and v11; v12 implies it."""
    member = ("m.room.member", "@a:p")
    assert auth_ids(STATE, "10", POWER_LEVELS, member) == ["$create", "$levels", "$member"]
    assert auth_ids(STATE, "12", POWER_LEVELS, member) == ["$levels", "$member"]


def test_state_differences_name_each_key_that_differs() -> None:
    """Only differing keys, with both sides (a missing one as None)."""
    expected = {("m.room.topic", ""): "$old", ("m.room.name", ""): "$n"}
    got = {("m.room.topic", ""): "$new", ("m.room.name", ""): "$n", ("x", "k"): "$x"}
    assert state_differences(expected, got) == {
        "m.room.topic/": {"expected": "$old", "got": "$new"},
        "x/k": {"expected": None, "got": "$x"},
    }
    assert state_differences(expected, dict(expected)) == {}


def test_fetches_are_the_requests_naming_the_events_with_our_status() -> None:
    """A request names an event when its path holds the ID (quoted or not); the query is
    not the path; the endpoint and our status are kept in order."""
    requests = [
        {
            "method": "GET",
            "uri": "/_matrix/federation/v1/event_auth/%21r%3Ah/%24dep",
            "status": 404,
        },
        {"method": "GET", "uri": "/_matrix/federation/v1/event/$auth", "status": 200},
        {
            "method": "GET",
            "uri": "/_matrix/federation/v1/state_ids/!r:h?event_id=$dep",
            "status": 200,
        },
        {"method": "PUT", "uri": "/_matrix/federation/v1/send/t1", "status": 200},
    ]
    assert fetches(requests, ["$auth", "$dep"]) == [("GET /event_auth", 404), ("GET /event", 200)]
    assert fetches(requests, ["$other"]) == []
