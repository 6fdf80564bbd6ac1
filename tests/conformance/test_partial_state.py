"""The verdict on a ``send_join`` answer with ``members_omitted: true``
(:func:`~stubserver.conformance.suite_partial_state.judge_omitted`), fed with canned
answers: the spec's reduced answer passes, with or without the heroes' memberships; a
missing ``servers_in_room``, a missing non-member state event, a membership not in the
room and a hole in the auth chain each fail naming the rule."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.conformance.runner import CheckFailed
from stubserver.conformance.suite_partial_state import judge_omitted
from stubserver.rooms.versions import room_version

V10 = room_version("10")
A, B = "@a:hs.test", "@b:peer.test"


def _pdu(kind: str, state_key: str, auth: list[str]) -> dict[str, Any]:
    return {"type": kind, "state_key": state_key, "auth_events": auth}


PDUS = {
    "$c": _pdu("m.room.create", "", []),
    "$m1": _pdu("m.room.member", A, ["$c"]),
    "$p": _pdu("m.room.power_levels", "", ["$c", "$m1"]),
    "$j": _pdu("m.room.join_rules", "", ["$c", "$p", "$m1"]),
    "$m2": _pdu("m.room.member", B, ["$c", "$p", "$j"]),
}
CLIENT = {(p["type"], p["state_key"]): i for i, p in PDUS.items()}
#: A membership of a user who is not in the room (not in CLIENT).
STRANGER = {"$x": _pdu("m.room.member", "@x:elsewhere.test", ["$c"])}
SERVERS = ["hs.test", "peer.test"]


def _judge(state: list[str], chain: list[str], servers: object = SERVERS) -> str:
    return judge_omitted(
        {i: {**PDUS, **STRANGER}[i] for i in state},
        {i: PDUS[i] for i in chain},
        servers,
        CLIENT,
        servers={"hs.test", "peer.test"},
        heroes={A, B},
        version=V10,
    )


def test_members_omitted_with_their_auth_chain_passes() -> None:
    """The state without memberships, the creator's membership in the auth chain."""
    assert _judge(["$c", "$p", "$j"], ["$m1"]) == (
        "members_omitted true; 0 memberships kept; heroes not all in"
    )


def test_the_heroes_memberships_kept_pass_and_are_noted() -> None:
    """The heroes' memberships in the state (what the spec says it "should" do)."""
    assert _judge(["$c", "$p", "$j", "$m1", "$m2"], []).endswith("2 memberships kept; heroes in")


@pytest.mark.parametrize(
    ("state", "chain", "servers", "message"),
    [
        (["$c", "$p", "$j"], ["$m1"], None, "servers_in_room of its send_join answer"),
        (["$c", "$p", "$j"], ["$m1"], ["hs.test"], "a list with hs.test and peer.test"),
        (["$c", "$p"], ["$m1"], SERVERS, "missing ['m.room.join_rules/']"),
        (["$c", "$p", "$j", "$x"], ["$m1"], SERVERS, "memberships of the room, got also"),
        (["$c", "$p", "$j"], [], SERVERS, "the auth chain of every event in state, got $m1"),
    ],
)
def test_a_broken_reduced_answer_fails_naming_the_rule(
    state: list[str], chain: list[str], servers: object, message: str
) -> None:
    """No ``servers_in_room``, one without ours, the join rules left out, a membership
    of a user not in the room, the creator's membership in neither list."""
    with pytest.raises(CheckFailed) as caught:
        _judge(state, chain, servers)
    assert message in str(caught.value)
