"""Judging how a homeserver filled a gap, from the requests it made to us: every way the
spec allows passes (and is named), no way at all fails (issue 20: the deep-gap and
missing-event tests once required one way)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from stubserver.conformance.gaps import gap_requests, judge_gap_fill
from stubserver.conformance.runner import CheckFailed

ROOM = "!gap:peer.test"
GAP = [f"$withheld{i}" for i in range(12)]
AFTER = "$after"
V1 = "/_matrix/federation/v1"


def gme(
    limit: int | None, room: str = ROOM, status: int = 200, latest: str = AFTER
) -> dict[str, Any]:
    content: dict[str, Any] = {"earliest_events": ["$join"], "latest_events": [latest]}
    if limit is not None:
        content["limit"] = limit
    uri = f"{V1}/get_missing_events/{quote(room, safe='')}"
    return {"method": "POST", "uri": uri, "status": status, "content": content}


def event(event_id: str, status: int = 200) -> dict[str, Any]:
    uri = f"{V1}/event/{quote(event_id, safe='')}"
    return {"method": "GET", "uri": uri, "status": status, "content": None}


def state_ids(endpoint: str = "state_ids", room: str = ROOM) -> dict[str, Any]:
    uri = f"{V1}/{endpoint}/{quote(room, safe='')}?event_id={quote(GAP[0], safe='')}"
    return {"method": "GET", "uri": uri, "status": 200, "content": None}


def test_one_get_missing_events_covering_the_whole_gap_passes() -> None:
    """Dendrite's way: one get_missing_events with a limit of 20 closes a 12-event gap;
    no state_ids is needed."""
    way = judge_gap_fill([gme(20)], ROOM, GAP, state_may_fill=True)
    assert way == "get_missing_events (limit 20) covering the 12-event gap"


def test_get_missing_events_falling_short_then_state_ids_and_event_passes() -> None:
    """Synapse's way: get_missing_events (limit 10) does not reach back far enough, so it
    takes the state at the event with state_ids and fetches events with /event."""
    requests = [gme(10), state_ids(), event(GAP[0]), event("$a_state_event")]
    way = judge_gap_fill(requests, ROOM, GAP, state_may_fill=True)
    assert way == (
        "/state_ids for the state at the event and /event for 1 of them,"
        " after get_missing_events (limit 10) fell short"
    )
    only_state = judge_gap_fill([state_ids("state")], ROOM, GAP, state_may_fill=True)
    assert only_state == "/state for the state at the event"


def test_every_event_fetched_one_by_one_with_event_passes() -> None:
    """No get_missing_events at all: each missing event fetched alone with /event."""
    requests = [event(e) for e in reversed(GAP)]
    assert judge_gap_fill(requests, ROOM, GAP, state_may_fill=True) == (
        "the 12 events fetched one by one with /event"
    )
    assert judge_gap_fill([event(GAP[3])], ROOM, [GAP[3]], state_may_fill=False) == (
        "the missing event fetched with /event"
    )


def test_get_missing_events_and_event_together_cover_the_gap() -> None:
    """A mix: get_missing_events for 10, /event for the 2 it did not reach."""
    requests = [gme(10), event(GAP[0]), event(GAP[1])]
    assert judge_gap_fill(requests, ROOM, GAP, state_may_fill=False) == (
        "get_missing_events (limit 10) covering the 12-event gap and /event for 2 of them"
    )


def test_the_default_limit_is_the_specs_ten() -> None:
    """A get_missing_events without ``limit`` asks for 10 (the spec's default): enough for
    one missing event, not for twelve."""
    assert judge_gap_fill([gme(None)], ROOM, [GAP[0]], state_may_fill=False) == (
        "get_missing_events (limit 10) covering the 1-event gap"
    )
    with pytest.raises(CheckFailed):
        judge_gap_fill([gme(None)], ROOM, GAP, state_may_fill=False)


def test_no_way_that_could_fill_the_gap_fails_with_what_it_asked() -> None:
    """No request for the gap (or only refused ones, other rooms' ones): a failure
    listing the allowed ways and what it asked. The state alone cannot fill a gap whose
    events the client must see."""
    noise = [gme(50, room="!other:peer.test"), gme(50, status=400), event(GAP[0], status=404)]
    with pytest.raises(CheckFailed) as failed:
        judge_gap_fill(noise, ROOM, GAP, state_may_fill=True)
    assert str(failed.value) == (
        "how it filled the gap of 12 events: expected get_missing_events covering it,"
        " /event for each, or state_ids (and event), got get_missing_events limits none,"
        " /event for 0, state_ids/state 0 time(s)"
    )
    with pytest.raises(CheckFailed, match="expected get_missing_events covering it, /event"):
        judge_gap_fill([state_ids()], ROOM, [GAP[0]], state_may_fill=False)


def test_the_log_is_read_for_the_room_and_answered_requests_only() -> None:
    """Only 200s count; get_missing_events and state for this room; /event by ID."""
    seen = gap_requests(
        [gme(20), gme(30, room="!x:y"), event("$e"), state_ids(), state_ids(room="!x:y")], ROOM
    )
    assert seen.missing_events_limits == (20,)
    assert seen.fetched == frozenset({"$e"})
    assert seen.state_asked == ("state_ids",)


def test_dendrites_sequence_passes_as_get_missing_events() -> None:
    """Dendrite's requests for the 12-event gap: get_missing_events with limit 20, then
    the state and an event all the same: the gap was covered by get_missing_events."""
    requests = [gme(20), state_ids(), event("$a_state_event")]
    assert judge_gap_fill(requests, ROOM, GAP, state_may_fill=True) == (
        "get_missing_events (limit 20) covering the 12-event gap"
    )
    assert judge_gap_fill(requests, ROOM, GAP, state_may_fill=False) == (
        "get_missing_events (limit 20) covering the 12-event gap"
    )


def test_a_walk_back_in_steps_covers_the_gap_a_retry_does_not() -> None:
    """Two get_missing_events of 10, the second from where the first stopped, cover 12
    events; the same call made twice walks over the same 10 and does not."""
    walk = [gme(10), gme(10, latest=GAP[2])]
    assert judge_gap_fill(walk, ROOM, GAP, state_may_fill=False) == (
        "get_missing_events (limit 10, 10) covering the 12-event gap"
    )
    with pytest.raises(CheckFailed, match="got get_missing_events limits 10, /event for 0"):
        judge_gap_fill([gme(10), gme(10)], ROOM, GAP, state_may_fill=False)
    assert gap_requests([gme(5), gme(10)], ROOM).missing_events_limits == (10,)
