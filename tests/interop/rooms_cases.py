"""Rooms between the stubs and a real homeserver: the cases shared by Synapse
(test_rooms_synapse.py) and Dendrite (test_rooms_dendrite.py).

A subclass provides the ``world`` fixture: (room version, our stub's control API, the
homeserver's user ``bob``); ours is ``alice``. Every test has a room of its own. Spec:
Server-Server API v1.19, "Rooms", "Joining Rooms", "Inviting to a room", "Leaving Rooms",
"Transactions", "Backfilling and retrieving missing events".
"""

from __future__ import annotations

from tests.interop.federation_cases import PeerEnvironment
from tests.interop.rooms import ControlApi, HomeserverUser, quote, wait_until

#: What a test gets: (room version, our stub's control API, the homeserver's user).
World = tuple[str, ControlApi, HomeserverUser]


def world_of(env: PeerEnvironment, version: str, stub_name: str) -> World:
    """A test's world: ``version`` rooms, played by the stub ``stub_name`` against the
    homeserver's bob."""
    hs = env.homeserver
    bob_id, _, token = hs.user
    return (
        version,
        ControlApi(env, env.stubs[stub_name]),
        HomeserverUser(env, hs.spec, bob_id, token),
    )


def join_homeserver_room(version: str, us: ControlApi, bob: HomeserverUser) -> str:
    """A public room bob creates, which our alice joins; its ID once bob lists her."""
    room_id = bob.create_room(version)
    answer = us.join(room_id, [bob.server_name])
    assert answer["room_id"] == room_id and answer["room_version"] == version, answer
    wait_until(
        f"{us.user_id()} in {bob.server_name}'s joined_members",
        lambda: True if us.user_id() in bob.joined_members(room_id) else None,
    )
    return room_id


#: The template fields the spec's make_join schema lists under ``required``
#: (Server-Server API, ``GET /_matrix/federation/v1/make_join``, 200, ``event``), but for
#: ``origin``: PDUs no longer have that field (it left the PDU format), the schema's
#: ``origin`` is a leftover, and neither Synapse 1.163.2 nor Dendrite sends it.
MAKE_JOIN_REQUIRED = ("state_key", "origin_server_ts", "type", "content", "sender")


class RoomsInteropCases:
    """The cases; a subclass provides the ``world`` fixture.

    Cases the homeserver is known to fail are listed in ``expected_failures`` by test
    name, with the spec's words and the upstream issue (run as strict xfails).
    """

    expected_failures: dict[str, str] = {}

    def test_make_join_template_has_the_required_fields(self, world: World) -> None:
        """The make_join template for our user carries the fields the spec's schema
        requires of it, ``required: [state_key, origin, origin_server_ts, type, content,
        sender]``, but for ``origin`` (see :data:`MAKE_JOIN_REQUIRED`), with ``sender`` and
        ``state_key`` our user and ``content.membership`` ``join`` (Server-Server API,
        "Joining Rooms", ``make_join``)."""
        version, us, bob = world
        room_id = bob.create_room(version)
        path = (
            f"/_matrix/federation/v1/make_join/{quote(room_id)}/{quote(us.user_id())}?ver={version}"
        )
        out = us.env.stubserver(
            "request", bob.server_name, path, "--json", "-c", us.stub.files.config_path
        )
        assert out["status"] == 200, out
        template = out["body"]["event"]
        assert out["body"]["room_version"] == version
        assert template["sender"] == template["state_key"] == us.user_id()
        assert template["type"] == "m.room.member"
        assert template["content"]["membership"] == "join"
        missing = [key for key in MAKE_JOIN_REQUIRED if key not in template]
        assert missing == [], template

    def test_we_join_a_homeserver_room(self, world: World) -> None:
        """We join a homeserver user's public room (make_join offering the versions we
        support, then send_join): the homeserver lists our user as joined, every event of
        ours is accepted, and the event IDs we computed for the room's state are exactly
        the homeserver's."""
        version, us, bob = world
        room_id = join_homeserver_room(version, us, bob)
        room = us.room(room_id)
        assert room["room_version"] == version
        assert room["members"][bob.user_id] == "join"
        assert room["members"][us.user_id()] == "join"
        events = us.call("GET", f"/rooms/{quote(room_id)}/events?from=0")["events"]
        assert events and all(e["outcome"] == "accepted" for e in events), events
        ours = {e["event_id"] for e in events if e["pdu"].get("state_key") is not None}
        assert bob.state_event_ids(room_id) <= ours

    def test_a_homeserver_message_arrives_with_its_event_id(self, world: World) -> None:
        """A message the homeserver's user sends arrives in our room, accepted, under the
        event ID the homeserver gave it (we compute it from the PDU)."""
        version, us, bob = world
        room_id = join_homeserver_room(version, us, bob)
        text = f"hello from {bob.server_name} in v{version}"
        event_id = bob.send(room_id, text)
        entry = us.wait_for_event(room_id, lambda e: e["event_id"] == event_id, "its message")
        assert entry["outcome"] == "accepted", entry
        assert entry["origin"] == bob.server_name
        assert entry["pdu"]["content"]["body"] == text

    def test_our_message_reaches_the_homeserver(self, world: World) -> None:
        """A message we send is readable by the homeserver's user, by event ID and in
        /messages."""
        version, us, bob = world
        room_id = join_homeserver_room(version, us, bob)
        event_id = us.send(room_id, f"hello from {us.server_name} in v{version}")
        seen = wait_until("our message there", lambda: bob.event(room_id, event_id))
        assert seen["content"]["body"] == f"hello from {us.server_name} in v{version}"
        assert seen["sender"] == us.user_id()
        assert event_id in [e["event_id"] for e in bob.messages(room_id)]

    def test_homeserver_joins_our_room_by_alias_and_backfills(self, world: World) -> None:
        """The homeserver's user joins a room we host by its alias (directory query,
        make_join, send_join); the join shows in our state; scrolling back, the homeserver
        backfills our history from us."""
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
            "its join",
        )
        assert us.room(room_id)["members"][bob.user_id] == "join"
        visible = wait_until(
            "our history in its /messages",
            lambda: (
                ids
                if set(history) <= (ids := {e["event_id"] for e in bob.messages(room_id)})
                else None
            ),
        )
        assert set(history) <= visible
        us.wait_for_request(f"/_matrix/federation/v1/backfill/{room_id}", "a backfill request")

    def test_homeserver_invites_us_and_we_join(self, world: World) -> None:
        """The homeserver's user invites our user to a private room (v2 invite, which we
        countersign); we accept by joining through the inviter's server."""
        version, us, bob = world
        room_id = bob.create_room(version, preset="private_chat", invite=[us.user_id()])
        us.wait_for_request("/_matrix/federation/v2/invite/", "the invite")
        us.join(room_id, [bob.server_name])
        wait_until(
            "our user joined there",
            lambda: True if us.user_id() in bob.joined_members(room_id) else None,
        )

    def test_we_invite_homeserver_user_who_joins(self, world: World) -> None:
        """We invite the homeserver's user to a private room we host (v2 invite with
        invite_room_state); they see the invite in /sync, join, and we list them joined."""
        version, us, bob = world
        room_id = us.create_room(version, preset="private_chat")
        us.invite(room_id, bob.user_id)
        wait_until(
            "the invite in its /sync",
            lambda: True if room_id in bob.sync().get("rooms", {}).get("invite", {}) else None,
        )
        bob.ok("POST", f"/rooms/{quote(room_id)}/join", {})
        us.wait_for_event(
            room_id,
            lambda e: (
                e["pdu"].get("state_key") == bob.user_id
                and e["pdu"].get("content", {}).get("membership") == "join"
            ),
            "its join",
        )
        assert us.room(room_id)["members"][bob.user_id] == "join"

    def test_we_leave(self, world: World) -> None:
        """We leave a homeserver's room (make_leave, send_leave); its member list drops
        us."""
        version, us, bob = world
        room_id = join_homeserver_room(version, us, bob)
        us.leave(room_id)
        wait_until(
            "our user gone from its joined_members",
            lambda: True if us.user_id() not in bob.joined_members(room_id) else None,
        )

    def test_homeserver_fetches_a_missing_event(self, world: World) -> None:
        """An event we withhold, then one that names it in prev_events: the homeserver
        calls our get_missing_events and then shows both."""
        version, us, bob = world
        room_id = join_homeserver_room(version, us, bob)
        withheld = us.send(room_id, "you have not seen me", destinations=[])
        after = us.send(room_id, "but you see me")
        us.wait_for_request(f"/_matrix/federation/v1/get_missing_events/{room_id}", "the gap fill")
        wait_until("the later event there", lambda: bob.event(room_id, after))
        assert bob.event(room_id, withheld) is not None

    def test_typing_and_receipts_both_ways(self, world: World) -> None:
        """Typing and read receipts cross as EDUs in both directions."""
        version, us, bob = world
        room_id = join_homeserver_room(version, us, bob)
        typing_path = f"/rooms/{quote(room_id)}/typing/{quote(bob.user_id)}"
        bob.ok("PUT", typing_path, {"typing": True, "timeout": 30000})
        typing = us.wait_for_edu(
            lambda e: e["edu_type"] == "m.typing" and e["content"].get("user_id") == bob.user_id,
            "its typing EDU",
        )
        assert typing["content"]["room_id"] == room_id and typing["origin"] == bob.server_name
        message = bob.send(room_id, "read me")
        us.wait_for_event(room_id, lambda e: e["event_id"] == message, "the message")
        bob.ok("POST", f"/rooms/{quote(room_id)}/receipt/m.read/{quote(message)}", {})
        receipt = us.wait_for_edu(
            lambda e: e["edu_type"] == "m.receipt" and room_id in e["content"], "its receipt"
        )
        assert bob.user_id in receipt["content"][room_id]["m.read"]

        ours = us.send(room_id, "and I read yours")
        wait_until("our message there", lambda: bob.event(room_id, ours))
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

        wait_until("our typing and receipt in its /sync", ephemeral_seen)

    def test_a_bad_signature_is_refused_and_the_room_goes_on(self, world: World) -> None:
        """An event we send with a broken signature never shows at the homeserver, while
        the next good one does."""
        version, us, bob = world
        room_id = join_homeserver_room(version, us, bob)
        broken = us.send(room_id, "forged", tamper="signature")
        good = us.send(room_id, "genuine")
        wait_until("the good event there", lambda: bob.event(room_id, good))
        assert bob.event(room_id, broken) is None
