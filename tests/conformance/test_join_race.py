"""The judging of ``joins.event_between_make_join_and_send_join_reachable``: which PDUs
it sends us after our join make the missed event reachable, fed with canned PDUs."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.conformance.suite_join_race import reached
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.versions import ROOM_VERSIONS

ROOM = "!r:hs.test"


def pdu(event_type: str, prev_events: list[str], body: str = "") -> dict[str, Any]:
    return {
        "room_id": ROOM,
        "type": event_type,
        "sender": "@u:hs.test",
        "content": {"body": body},
        "prev_events": prev_events,
        "auth_events": [],
        "depth": 5,
        "origin_server_ts": 1,
        "hashes": {"sha256": "x"},
    }


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_each_way_the_missed_event_reaches_us_is_named(version: str) -> None:
    """The missed event sent itself, cited by the follow-up message, or cited by an
    event of its own accord (a dummy): each passes, named; PDUs that do not cite it (our
    join's successor citing only the join) do not."""
    rv = ROOM_VERSIONS[version]
    missed = pdu("m.room.message", ["$before"], "missed")
    missed_id = compute_event_id(missed, rv)
    follow_up = pdu("m.room.message", [missed_id, "$join"], "after")
    follow_up_id = compute_event_id(follow_up, rv)
    dummy = pdu("org.matrix.dummy_event", ["$join", missed_id])
    only_join = pdu("m.room.message", ["$join"], "after, forgetting it")
    assert reached([missed], version, missed_id, follow_up_id) == (
        "the event itself was sent to us"
    )
    assert reached([only_join, follow_up], version, missed_id, follow_up_id) == (
        "cited in prev_events by the follow-up message"
    )
    assert reached([dummy], version, missed_id, follow_up_id) == (
        "cited in prev_events by an org.matrix.dummy_event of its own accord"
    )
    assert reached([only_join], version, missed_id, follow_up_id) is None
    assert reached([], version, missed_id, None) is None
