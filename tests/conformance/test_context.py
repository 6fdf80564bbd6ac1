"""The suite's helpers that turn a wait or a verdict into a failure message: expected vs
got, with the last value seen and the peer's own reason."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.conformance.context import expect, expect_accepted, membership_is, wait_until
from stubserver.conformance.runner import CheckFailed
from stubserver.testing import RoomEvent


class _Members:
    """A homeserver user whose member list shows ``shown`` for everyone."""

    def __init__(self, shown: str | None) -> None:
        self.shown = shown

    def members(self, room_id: str) -> dict[str, Any]:
        return {"@conformance:peer.test": self.shown}


def test_a_wait_that_times_out_says_what_it_expected_and_the_last_value_seen() -> None:
    """A probe that keeps finding the wrong membership: the failure names the expected
    one, the deadline and the membership seen last."""
    probe = membership_is(_Members("invite"), "!r:hs", "@conformance:peer.test", "join")  # type: ignore[arg-type]
    with pytest.raises(CheckFailed) as failed:
        wait_until("our user in its member list", probe, timeout=0, expected="membership 'join'")
    assert str(failed.value) == (
        "our user in its member list: expected membership 'join' within 0 s,"
        " got membership 'invite' (the last seen)"
    )


def test_a_wait_that_never_saw_anything_says_nothing_and_a_found_value_is_returned() -> None:
    """A probe that only ever returned None: 'got nothing'; one that finds its value
    returns it at once."""
    with pytest.raises(CheckFailed, match=r"expected it within 0 s, got nothing$"):
        wait_until("the event", lambda: None, timeout=0)
    probe = membership_is(_Members("join"), "!r:hs", "@conformance:peer.test", "join")  # type: ignore[arg-type]
    assert wait_until("our user", probe, timeout=0) is True


def test_an_event_the_peer_refused_fails_with_the_peers_reason() -> None:
    """The peer's verdict and its reason, not just 'not accepted'."""
    event = RoomEvent(
        "$join", {"type": "m.room.member"}, "hs.test", "rejected", "auth: no power", 3
    )
    with pytest.raises(CheckFailed) as failed:
        expect_accepted("our verdict on its join", event)
    assert str(failed.value) == (
        "our verdict on its join: expected accepted, got rejected: auth: no power"
    )
    expect_accepted("ok", RoomEvent("$j", {}, "hs.test", "accepted", None, 4))


def test_the_verdict_comes_before_the_answer_it_came_in() -> None:
    """A status check that fails gives ``expected X, got Y`` first and the answer after
    it, so a table cut at its width still shows the verdict; a long answer is quoted up
    to 300 characters with how much was left out."""
    long_answer = {"errcode": "M_UNKNOWN", "error": "x" * 1000}
    with pytest.raises(CheckFailed) as failed:
        expect("its make_join status", 200, 500, answer=long_answer)
    message = str(failed.value)
    assert message.startswith("its make_join status: expected 200, got 500 (the answer: {")
    assert message.endswith("... (737 more characters))")
    with pytest.raises(
        CheckFailed, match=r"^its invite: expected 400, got 200 \(the answer: \{\}\)$"
    ):
        expect("its invite", 400, 200, answer={})
    expect("its make_join status", 200, 200, answer=long_answer)
