"""The judging of what a homeserver serves of a room (``conformance/serving.py``): each
check passes a right answer and fails a wrong one with a message that names what is
wrong (these are the wrong answers the suite's serving tests were first seen to fail on).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from stubserver.conformance.runner import CheckFailed
from stubserver.conformance.serving import (
    ancestors,
    auth_chain,
    expect_ids,
    leaks,
    same_event,
    served_pdus,
)
from stubserver.rooms.hashes import compute_event_id, room_id_from_create_event_id
from stubserver.rooms.signing import sign_event
from stubserver.rooms.versions import RoomVersion, room_version
from stubserver.signing.keys import ServerSigningKey

HS = "hs.test"
KEY = ServerSigningKey.generate("a")
KEYS = {HS: {KEY.key_id: KEY.key.verify_key}}
ALICE = f"@alice:{HS}"


class Room:
    """A small room of ``version`` built here: create, alice's join, power levels, then
    messages in a chain; every event signed by ``HS``."""

    def __init__(self, version: str) -> None:
        self.version: RoomVersion = room_version(version)
        self.pdus: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        create = self._event(
            None,
            {"type": "m.room.create", "state_key": "", "content": {"room_version": version}},
            [],
        )
        self.create = create
        self.member = self.add(
            {"type": "m.room.member", "state_key": ALICE, "content": {"membership": "join"}},
            [create],
        )
        self.power = self.add(
            {"type": "m.room.power_levels", "state_key": "", "content": {"users": {}}},
            [create, self.member],
        )

    @property
    def room_id(self) -> str:
        return (
            room_id_from_create_event_id(self.create)
            if self.version.room_id_is_create_hash
            else "!room:hs.test"
        )

    def _event(self, room_id: str | None, fields: dict[str, Any], auth: list[str]) -> str:
        pdu: dict[str, Any] = {
            "sender": ALICE,
            "depth": len(self.order) + 1,
            "origin_server_ts": 1000 + len(self.order),
            "prev_events": self.order[-1:],
            "auth_events": auth,
            **fields,
        }
        if room_id is not None:
            pdu["room_id"] = room_id
        elif not self.version.room_id_is_create_hash:
            pdu["room_id"] = "!room:hs.test"
        signed = sign_event(pdu, self.version, HS, KEY.key_id, KEY.key)
        event_id = compute_event_id(signed, self.version)
        self.pdus[event_id] = signed
        self.order.append(event_id)
        return event_id

    def add(self, fields: dict[str, Any], auth: list[str]) -> str:
        if self.version.room_id_is_create_hash:
            auth = [a for a in auth if a != self.create]
        return self._event(self.room_id, fields, auth)

    def message(self, text: str) -> str:
        return self.add(
            {"type": "m.room.message", "content": {"msgtype": "m.text", "body": text}},
            [self.create, self.power, self.member],
        )


@pytest.fixture(params=["10", "12"])
def room(request: pytest.FixtureRequest) -> Room:
    return Room(request.param)


def test_served_pdus_are_keyed_by_the_ids_we_compute(room: Room) -> None:
    """Well-formed PDUs signed by their sender's server: their IDs, each to its PDU."""
    message = room.message("hi")
    served = served_pdus("x", [room.pdus[room.create], room.pdus[message]], room.version, KEYS)
    assert served == {room.create: room.pdus[room.create], message: room.pdus[message]}


def test_a_pdu_signed_with_another_key_fails_naming_the_signature(room: Room) -> None:
    """A PDU whose signature is not by the server's published key fails."""
    other = ServerSigningKey.generate("a")
    pdu = {k: v for k, v in room.pdus[room.message("hi")].items() if k != "signatures"}
    forged = sign_event(pdu, room.version, HS, other.key_id, other.key)
    with pytest.raises(CheckFailed, match=r"signature by hs.test: expected valid, got invalid"):
        served_pdus("its /state pdus", [forged], room.version, KEYS)


def test_an_unsigned_pdu_fails(room: Room) -> None:
    """No signature of the sender's server at all: fails, listing what was there."""
    pdu = dict(room.pdus[room.message("hi")], signatures={})
    with pytest.raises(CheckFailed, match=r"no signature by a key we know"):
        served_pdus("x", [pdu], room.version, KEYS)


def test_changed_content_fails_the_content_hash_unless_redaction_is_allowed(room: Room) -> None:
    """A served message whose content was changed after signing fails the content hash
    (the signature covers only the redacted form, so it still verifies)."""
    pdu = copy.deepcopy(room.pdus[room.message("hi")])
    pdu["content"]["body"] = "changed"
    with pytest.raises(CheckFailed, match=r"content hash: expected matching"):
        served_pdus("x", [pdu], room.version, KEYS)
    assert len(served_pdus("x", [pdu], room.version, KEYS, intact=False)) == 1


def test_malformed_or_repeated_pdus_fail(room: Room) -> None:
    """Not a list; a PDU with an ``event_id`` key (v3+ has none); one PDU twice."""
    message = room.pdus[room.message("hi")]
    with pytest.raises(CheckFailed, match="a list of PDUs"):
        served_pdus("x", {"pdus": []}, room.version, KEYS)
    with pytest.raises(CheckFailed, match="format"):
        served_pdus("x", [dict(message, event_id="$x")], room.version, KEYS)
    with pytest.raises(CheckFailed, match="each PDU once"):
        served_pdus("x", [message, message], room.version, KEYS)


def test_the_auth_chain_is_the_auth_events_recursively(room: Room) -> None:
    """A message's chain: create, join, power levels (in v12 the create event though it
    is never listed); the state's chain leaves out state events no one cites."""
    message = room.message("hi")
    assert auth_chain(room.pdus, [message], room.version) == {room.create, room.member, room.power}
    state = {room.create, room.member, room.power}
    assert auth_chain(room.pdus, state, room.version) == {room.create, room.member}


def test_an_auth_event_we_do_not_hold_fails() -> None:
    """The chain cannot be computed past an event we lack: said, not guessed."""
    room = Room("10")
    pdus = {k: v for k, v in room.pdus.items() if k != room.member}
    with pytest.raises(CheckFailed, match=re.escape(f"{room.member} known to us")):
        auth_chain(pdus, [room.power], room.version)


def test_ancestors_follow_prev_events_and_stop_where_told(room: Room) -> None:
    """Everything before the last message; not past (nor including) a stop."""
    first, second, third = (room.message(str(i)) for i in range(3))
    assert ancestors(room.pdus, [third]) == {room.create, room.member, room.power, first, second}
    assert ancestors(room.pdus, [third], stop=[first]) == {second}


def test_expect_ids_names_what_is_missing_extra_or_doubled() -> None:
    """Set equality, with the allowed extras; each fault said."""
    assert expect_ids("x", {"$a", "$b"}, ["$b", "$a"]) == ["$b", "$a"]
    assert expect_ids("x", {"$a"}, ["$a", "$s"], also_allowed={"$s"}) == ["$a", "$s"]
    with pytest.raises(CheckFailed, match=r"missing \['\$b'\]"):
        expect_ids("its pdu_ids", {"$a", "$b"}, ["$a"])
    with pytest.raises(CheckFailed, match=r"not expected \['\$c'\]"):
        expect_ids("its pdu_ids", {"$a"}, ["$a", "$c"])
    with pytest.raises(CheckFailed, match=r"listed twice \['\$a'\]"):
        expect_ids("its pdu_ids", {"$a"}, ["$a", "$a"])
    with pytest.raises(CheckFailed, match="a list of event IDs"):
        expect_ids("its pdu_ids", {"$a"}, "$a")


def test_same_event_ignores_unsigned_only() -> None:
    """``unsigned`` may change in transit; any other difference is named."""
    ours = {"type": "m.room.message", "content": {"body": "hi"}, "unsigned": {"age": 1}}
    same_event("x", ours, {**ours, "unsigned": {"age": 9}})
    with pytest.raises(CheckFailed, match=r"different \['content'\]"):
        same_event("its copy", ours, {**ours, "content": {}})


def test_leaks_finds_a_text_anywhere_in_an_answer() -> None:
    """In a nested string: found; in a redacted copy (content gone): not."""
    answer = {"pdus": [{"content": {"body": "the secret 42"}}]}
    assert leaks("secret 42", answer)
    assert not leaks("secret 42", {"pdus": [{"content": {}}]})
