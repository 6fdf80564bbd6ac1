"""Rooms against a real Synapse 1.163.2, for room versions 10, 11 and 12 (issue 13).

Each room version runs on a different stub, so that room traffic crosses every delegation
method both ways: v10 on ``direct.test``, v11 on ``wk.test`` (``.well-known``), v12 on
``srv.test`` (SRV). Synapse's user is ``@bob:synapse.test``; ours is ``alice``. Every test
has a room of its own. Spec: Server-Server API v1.19, "Rooms", "Joining Rooms", "Inviting to
a room", "Leaving Rooms", "Transactions", "Backfilling and retrieving missing events".
"""

from __future__ import annotations

import pytest

from tests.interop.harness import InteropEnvironment
from tests.interop.rooms import ControlApi, SynapseUser, quote, wait_until

pytestmark = pytest.mark.interop

#: (room version, the stub that plays it): each version through another delegation method.
VERSIONS = [("10", "direct.test"), ("11", "wk.test"), ("12", "srv.test")]
IDS = ["v10-direct", "v11-well_known", "v12-srv"]
SYNAPSE = "synapse.test"


@pytest.fixture(params=VERSIONS, ids=IDS)
def world(
    request: pytest.FixtureRequest, interop_env: InteropEnvironment
) -> tuple[str, ControlApi, SynapseUser]:
    """(room version, our stub's control API, Synapse's bob)."""
    version, stub_name = request.param
    bob_id, _, token = interop_env.synapse_user
    return (
        version,
        ControlApi(interop_env, interop_env.stubs[stub_name]),
        SynapseUser(interop_env, bob_id, token),
    )


def _join_synapse_room(version: str, us: ControlApi, bob: SynapseUser) -> str:
    room_id = bob.create_room(version)
    answer = us.join(room_id, [SYNAPSE])
    assert answer["room_id"] == room_id and answer["room_version"] == version, answer
    wait_until(
        f"{us.user_id()} in Synapse's joined_members",
        lambda: True if us.user_id() in bob.joined_members(room_id) else None,
    )
    return room_id


def test_we_join_a_synapse_room(world: tuple[str, ControlApi, SynapseUser]) -> None:
    """We join a Synapse user's public room (make_join offering 10, 11, 12, then send_join):
    Synapse lists our user as joined, every event of ours is accepted, and the event IDs
    we computed for the room's state are exactly Synapse's."""
    version, us, bob = world
    room_id = _join_synapse_room(version, us, bob)
    room = us.room(room_id)
    assert room["room_version"] == version
    assert room["members"][bob.user_id] == "join"
    assert room["members"][us.user_id()] == "join"
    events = us.call("GET", f"/rooms/{quote(room_id)}/events?from=0")["events"]
    assert events and all(e["outcome"] == "accepted" for e in events), events
    ours = {e["event_id"] for e in events if e["pdu"].get("state_key") is not None}
    assert bob.state_event_ids(room_id) <= ours


def test_a_synapse_message_arrives_with_its_event_id(
    world: tuple[str, ControlApi, SynapseUser],
) -> None:
    """A message Synapse's user sends arrives in our room, accepted, under the event ID
    Synapse gave it (we compute it from the PDU)."""
    version, us, bob = world
    room_id = _join_synapse_room(version, us, bob)
    event_id = bob.send(room_id, f"hello from synapse in v{version}")
    entry = us.wait_for_event(room_id, lambda e: e["event_id"] == event_id, "Synapse's message")
    assert entry["outcome"] == "accepted", entry
    assert entry["origin"] == SYNAPSE
    assert entry["pdu"]["content"]["body"] == f"hello from synapse in v{version}"


def test_our_message_reaches_synapse(world: tuple[str, ControlApi, SynapseUser]) -> None:
    """A message we send is readable by Synapse's user, by event ID and in /messages."""
    version, us, bob = world
    room_id = _join_synapse_room(version, us, bob)
    event_id = us.send(room_id, f"hello from {us.server_name} in v{version}")
    seen = wait_until("our message at Synapse", lambda: bob.event(room_id, event_id))
    assert seen["content"]["body"] == f"hello from {us.server_name} in v{version}"
    assert seen["sender"] == us.user_id()
    assert event_id in [e["event_id"] for e in bob.messages(room_id)]


def test_synapse_joins_our_room_by_alias_and_backfills(
    world: tuple[str, ControlApi, SynapseUser],
) -> None:
    """Synapse's user joins a room we host by its alias (directory query, make_join,
    send_join); the join shows in our state; scrolling back, Synapse backfills our history
    from us."""
    version, us, bob = world
    alias_local = f"history-v{version}"
    room_id = us.create_room(version, alias=alias_local, name=f"History v{version}")
    history = [us.send(room_id, f"before you came, {i}") for i in range(3)]
    alias = f"#{alias_local}:{us.server_name}"
    joined = bob.ok("POST", f"/join/{quote(alias)}", {})
    assert joined["room_id"] == room_id
    us.wait_for_event(
        room_id,
        lambda e: (
            e["pdu"].get("type") == "m.room.member"
            and e["pdu"].get("state_key") == bob.user_id
            and e["outcome"] == "accepted"
        ),
        "Synapse's join",
    )
    assert us.room(room_id)["members"][bob.user_id] == "join"
    visible = wait_until(
        "our history in Synapse's /messages",
        lambda: (
            ids if set(history) <= (ids := {e["event_id"] for e in bob.messages(room_id)}) else None
        ),
    )
    assert set(history) <= visible
    us.wait_for_request(f"/_matrix/federation/v1/backfill/{room_id}", "a backfill request")


def test_synapse_invites_us_and_we_join(world: tuple[str, ControlApi, SynapseUser]) -> None:
    """Synapse's user invites our user to a private room (v2 invite, which we countersign);
    we accept by joining through the inviter's server."""
    version, us, bob = world
    room_id = bob.create_room(version, preset="private_chat", invite=[us.user_id()])
    us.wait_for_request("/_matrix/federation/v2/invite/", "the invite")
    us.join(room_id, [SYNAPSE])
    wait_until(
        "our user joined at Synapse",
        lambda: True if us.user_id() in bob.joined_members(room_id) else None,
    )


def test_we_invite_synapse_user_who_joins(world: tuple[str, ControlApi, SynapseUser]) -> None:
    """We invite Synapse's user to a private room we host (v2 invite with
    invite_room_state); they see the invite in /sync, join, and we list them joined."""
    version, us, bob = world
    room_id = us.create_room(version, preset="private_chat")
    us.invite(room_id, bob.user_id)
    wait_until(
        "the invite in Synapse's /sync",
        lambda: True if room_id in bob.sync().get("rooms", {}).get("invite", {}) else None,
    )
    bob.ok("POST", f"/rooms/{quote(room_id)}/join", {})
    us.wait_for_event(
        room_id,
        lambda e: (
            e["pdu"].get("state_key") == bob.user_id
            and e["pdu"].get("content", {}).get("membership") == "join"
        ),
        "Synapse's join",
    )
    assert us.room(room_id)["members"][bob.user_id] == "join"


def test_we_leave(world: tuple[str, ControlApi, SynapseUser]) -> None:
    """We leave a Synapse room (make_leave, send_leave); Synapse's member list drops us."""
    version, us, bob = world
    room_id = _join_synapse_room(version, us, bob)
    us.leave(room_id)
    wait_until(
        "our user gone from Synapse's joined_members",
        lambda: True if us.user_id() not in bob.joined_members(room_id) else None,
    )


def test_synapse_fetches_a_missing_event(world: tuple[str, ControlApi, SynapseUser]) -> None:
    """An event we withhold, then one that names it in prev_events: Synapse calls our
    get_missing_events and then shows both."""
    version, us, bob = world
    room_id = _join_synapse_room(version, us, bob)
    withheld = us.send(room_id, "you have not seen me", destinations=[])
    after = us.send(room_id, "but you see me")
    us.wait_for_request(f"/_matrix/federation/v1/get_missing_events/{room_id}", "the gap fill")
    wait_until("the later event at Synapse", lambda: bob.event(room_id, after))
    assert bob.event(room_id, withheld) is not None


def test_typing_and_receipts_both_ways(world: tuple[str, ControlApi, SynapseUser]) -> None:
    """Typing and read receipts cross as EDUs in both directions."""
    version, us, bob = world
    room_id = _join_synapse_room(version, us, bob)
    typing_path = f"/rooms/{quote(room_id)}/typing/{quote(bob.user_id)}"
    bob.ok("PUT", typing_path, {"typing": True, "timeout": 30000})
    typing = us.wait_for_edu(
        lambda e: e["edu_type"] == "m.typing" and e["content"].get("user_id") == bob.user_id,
        "Synapse's typing EDU",
    )
    assert typing["content"]["room_id"] == room_id and typing["origin"] == SYNAPSE
    message = bob.send(room_id, "read me")
    us.wait_for_event(room_id, lambda e: e["event_id"] == message, "the message")
    bob.ok("POST", f"/rooms/{quote(room_id)}/receipt/m.read/{quote(message)}", {})
    receipt = us.wait_for_edu(
        lambda e: e["edu_type"] == "m.receipt" and room_id in e["content"], "Synapse's receipt"
    )
    assert bob.user_id in receipt["content"][room_id]["m.read"]

    ours = us.send(room_id, "and I read yours")
    wait_until("our message at Synapse", lambda: bob.event(room_id, ours))
    typing_content = {"room_id": room_id, "user_id": us.user_id(), "typing": True}
    us.send_edu(room_id, "m.typing", typing_content)
    us.send_edu(
        room_id,
        "m.receipt",
        {room_id: {"m.read": {us.user_id(): {"data": {"ts": 1}, "event_ids": [ours]}}}},
    )

    seen: set[str] = set()

    def ephemeral_seen() -> bool | None:
        room = bob.sync().get("rooms", {}).get("join", {}).get(room_id, {})
        kinds = {e["type"]: e["content"] for e in room.get("ephemeral", {}).get("events", [])}
        if us.user_id() in kinds.get("m.typing", {}).get("user_ids", []):
            seen.add("typing")
        if us.user_id() in kinds.get("m.receipt", {}).get(ours, {}).get("m.read", {}):
            seen.add("receipt")
        return True if seen == {"typing", "receipt"} else None

    wait_until("our typing and receipt in Synapse's /sync", ephemeral_seen)


def test_a_bad_signature_is_refused_and_the_room_goes_on(
    world: tuple[str, ControlApi, SynapseUser],
) -> None:
    """An event we send with a broken signature never shows at Synapse, while the next
    good one does."""
    version, us, bob = world
    room_id = _join_synapse_room(version, us, bob)
    broken = us.send(room_id, "forged", tamper="signature")
    good = us.send(room_id, "genuine")
    wait_until("the good event at Synapse", lambda: bob.event(room_id, good))
    assert bob.event(room_id, broken) is None
