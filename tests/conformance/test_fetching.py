"""The judging helpers of the fetching area, fed with canned request logs."""

from __future__ import annotations

from collections import Counter

from stubserver.conformance.suite_fetching import asked_about, asked_note

B = "$b-event"


def _entry(method: str, uri: str, status: int, content: object = None) -> dict[str, object]:
    return {"method": method, "uri": uri, "status": status, "content": content}


def test_requests_naming_the_event_are_counted_by_endpoint_and_status() -> None:
    """/event and /event_auth naming it in the path, /state_ids in the query (percent-
    encoded), get_missing_events in latest_events: each counted under its endpoint and
    our status; requests about other events, and other paths, are not."""
    log = [
        _entry("GET", "/_matrix/federation/v1/event/%24b-event", 404),
        _entry("GET", "/_matrix/federation/v1/event/%24b-event", 404),
        _entry("GET", "/_matrix/federation/v1/state_ids/!r?event_id=%24b-event", 404),
        _entry("GET", "/_matrix/federation/v1/event_auth/!r/$b-event", 404),
        _entry("POST", "/_matrix/federation/v1/get_missing_events/!r", 200, {"latest_events": [B]}),
        _entry(
            "POST", "/_matrix/federation/v1/get_missing_events/!r", 200, {"latest_events": ["$x"]}
        ),
        _entry("GET", "/_matrix/federation/v1/event/$other", 200),
        _entry("GET", "/_matrix/key/v2/server", 200),
    ]
    assert asked_about(log, [B]) == Counter(
        {
            "/event 404": 2,
            "/state_ids 404": 1,
            "/event_auth 404": 1,
            "/get_missing_events 200": 1,
        }
    )


def test_a_log_without_it_asks_nothing() -> None:
    """No request names it: an empty count, noted as "nothing"."""
    log: list[dict[str, object]] = [
        _entry("GET", "/_matrix/federation/v1/event/$other", 200),
        {"uri": None},
    ]
    assert asked_about(log, [B]) == Counter()
    assert asked_note(Counter()) == "nothing"


def test_the_note_lists_the_most_asked_first() -> None:
    """asked_note: ``endpoint status xN``, most asked first."""
    assert asked_note(Counter({"/state 200": 1, "/event 404": 3})) == "/event 404 x3, /state 200 x1"
