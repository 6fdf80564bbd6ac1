"""The in-memory room: outcomes on receipt, forks, soft failure, read answers."""

from __future__ import annotations

import pytest

from stubserver.devtools import room_attacks
from stubserver.rooms.long_poll import event_json
from stubserver.rooms.room import EventRecord, MissingEvents, Room, RoomFull, WrongRoom
from stubserver.rooms.room_queries import (
    MAX_MISSING_EVENTS,
    auth_chain,
    backfill,
    event_auth,
    get_missing_events,
    state_ids_before,
)
from stubserver.rooms.state_res import resolve_state
from stubserver.signing.canonical_json import encode_canonical_json
from tests.rooms.room_fixtures import ALICE, BOB, VERSIONS, add, build, join, new_room, send

ALL = pytest.mark.parametrize("version", VERSIONS)
NAME = ("m.room.name", "")


@ALL
def test_a_joined_member_message_is_accepted_and_becomes_the_only_extremity(version: str) -> None:
    """An event built on the forward extremities and allowed is accepted, extends the
    graph linearly and is the new sole forward extremity."""
    room = new_room(version).room
    join(room, BOB)
    record = send(room, BOB, "m.room.message", {"body": "hi"})
    assert (record.outcome, record.reason) == ("accepted", None)
    assert room.forward_extremities == {record.event_id}
    assert room.members == {ALICE: "join", BOB: "join"}
    assert room.servers == ["a.test", "b.test"]


@ALL
def test_an_unexpected_auth_event_rejects_the_event(version: str) -> None:
    """A message citing the join rules (outside the auth events selection) is rejected
    and stays out of state and extremities."""
    room = new_room(version).room
    before = room.forward_extremities
    state = room.current_state
    auth = [
        state[("m.room.power_levels", "")],
        state[("m.room.member", ALICE)],
        state[("m.room.join_rules", "")],
    ]
    if version != "12":
        auth.append(state[("m.room.create", "")])
    record = add(room, build(room, ALICE, "m.room.message", {"body": "x"}, auth=auth))
    assert record.outcome == "rejected"
    assert "unexpected auth_event" in (record.reason or "")
    assert room.forward_extremities == before


@ALL
def test_an_event_allowed_by_its_auth_events_but_not_the_state_before_it_is_rejected(
    version: str,
) -> None:
    """Bob's message citing his join as auth event but built on prev_events before the
    join fails against the state before the event: rejected."""
    room = new_room(version).room
    prev_before_join = sorted(room.forward_extremities)
    join(room, BOB)
    auth = [
        room.current_state[k]
        for k in [("m.room.power_levels", ""), ("m.room.member", BOB)]
        + ([] if version == "12" else [("m.room.create", "")])
    ]
    record = add(
        room, build(room, BOB, "m.room.message", {"body": "x"}, prev=prev_before_join, auth=auth)
    )
    assert record.outcome == "rejected"
    assert "against the state before the event" in (record.reason or "")


@ALL
def test_a_banned_users_event_on_pre_ban_prev_events_is_soft_failed(version: str) -> None:
    """Bob's message built on his join (before his ban) passes its auth events and the
    state before it, but fails against the current state: soft-failed, not an
    extremity, state unchanged (rooms.md 1.2 step 11)."""
    room = new_room(version).room
    bob_join = join(room, BOB)
    message = build(room, BOB, "m.room.message", {"body": "late"})
    ban = send(room, ALICE, "m.room.member", {"membership": "ban"}, state_key=BOB)
    state = room.current_state
    record = add(room, message)
    assert message.event.prev_event_ids == (bob_join.event_id,)
    assert record.outcome == "soft_failed"
    assert "not joined" in (record.reason or "")
    assert room.forward_extremities == {ban.event_id}
    assert room.current_state == state
    assert room.members[BOB] == "ban"


@ALL
def test_a_fork_is_resolved_and_merged(version: str) -> None:
    """Two name changes on the same prev_events make two extremities; current state is
    state resolution over both; an event citing both merges them."""
    room = new_room(version).room
    base = sorted(room.forward_extremities)
    one = send(room, ALICE, "m.room.name", {"name": "one"}, state_key="", prev=base)
    two = add(
        room,
        build(
            room,
            ALICE,
            "m.room.name",
            {"name": "two"},
            state_key="",
            prev=base,
            ts=1_700_000_000_001,
        ),
    )
    assert two.outcome == "accepted"
    assert room.forward_extremities == {one.event_id, two.event_id}
    expected = resolve_state(
        room.room_version,
        [room.state_at(one.event_id), room.state_at(two.event_id)],
        room.get_event,
    )
    assert room.current_state == expected
    assert room.current_state[NAME] in {one.event_id, two.event_id}
    merge = send(room, ALICE, "m.room.message", {"body": "merge"})
    assert set(merge.event.prev_event_ids) == {one.event_id, two.event_id}
    assert room.forward_extremities == {merge.event_id}
    assert room.state_at(merge.event_id) == expected


def test_missing_prev_events_are_named_and_nothing_is_stored() -> None:
    """An event whose prev_events we lack raises MissingEvents("prev") naming them and
    leaves the room unchanged."""
    room = new_room("11").room
    other = new_room().room
    first = send(other, ALICE, "m.room.message", {"body": "1"})
    second = build(other, ALICE, "m.room.message", {"body": "2"})
    copy = Room(other.room_id, other.room_version)
    for record in other.events_since(0)[:-1]:
        copy.add_event(record.event, 0)
    assert copy.missing_prev_events(second.event) == [first.event_id]
    with pytest.raises(MissingEvents) as caught:
        copy.add_event(second.event, 0)
    assert (caught.value.kind, caught.value.event_ids) == ("prev", (first.event_id,))
    assert copy.get_event(second.event.event_id) is None
    with pytest.raises(WrongRoom):
        room.add_event(second.event, 0)


def test_an_event_with_state_from_state_ids_is_added_despite_missing_prevs() -> None:
    """With ``state_before`` (from /state_ids) an event whose prevs are missing is
    checked against that state and added."""
    other = new_room().room
    first = send(other, ALICE, "m.room.message", {"body": "1"})
    second = build(other, ALICE, "m.room.message", {"body": "2"})
    copy = Room(other.room_id, other.room_version)
    for record in other.events_since(0)[:-1]:
        copy.add_event(record.event, 0)
    record = copy.add_event(second.event, 0, state_before=other.state_at(first.event_id))
    assert record.outcome == "accepted"


def test_a_repeated_event_returns_its_first_record() -> None:
    """Adding an event twice changes nothing and returns the first record."""
    room = new_room().room
    built = build(room, ALICE, "m.room.message", {"body": "x"})
    first = add(room, built)
    assert add(room, built) is first
    assert len(room.events_since(first.position)) == 1


def _chain(room: Room, count: int) -> list[str]:
    return [send(room, ALICE, "m.room.message", {"body": str(i)}).event_id for i in range(count)]


def test_backfill_is_depth_descending_includes_v_and_is_limited() -> None:
    """backfill answers the ``v`` event first, then its ancestors deepest first, at
    most ``limit``."""
    room = new_room().room
    ids = _chain(room, 10)
    answer = [e.event_id for e in backfill(room, [ids[-1]], 4)]
    assert answer == list(reversed(ids[-4:]))
    depths = [e.depth for e in backfill(room, [ids[-1]], 100)]
    assert depths == sorted(depths, reverse=True)
    assert len(backfill(room, [ids[-1]], 1000)) == len(room)  # whole room, under the cap


def test_get_missing_events_is_oldest_first_between_earliest_and_latest() -> None:
    """get_missing_events answers the ancestors of latest (excluding it), stopping at
    earliest, oldest first."""
    room = new_room().room
    ids = _chain(room, 8)
    answer = get_missing_events(room, [ids[1]], [ids[7]], 10, 0)
    assert [e.event_id for e in answer] == ids[2:7]


def test_get_missing_events_caps_the_limit_at_20_and_honours_min_depth() -> None:
    """A limit above 20 gives 20 events (Synapse's cap); min_depth stops the walk."""
    room = new_room().room
    ids = _chain(room, 40)
    answer = get_missing_events(room, [], [ids[-1]], 100, 0)
    assert len(answer) == MAX_MISSING_EVENTS
    assert [e.event_id for e in answer] == ids[-21:-1]
    min_depth = room.get_event(ids[-4]).depth  # type: ignore[union-attr]
    shallow = get_missing_events(room, [], [ids[-1]], 10, min_depth)
    assert [e.event_id for e in shallow] == ids[-4:-1]


@ALL
def test_state_ids_before_a_state_event_excludes_it_and_has_the_auth_chain(version: str) -> None:
    """state_ids_before answers the state before the event (the event not in it) and
    the auth chain of that state."""
    room = new_room(version).room
    name = send(room, ALICE, "m.room.name", {"name": "n"}, state_key="")
    state_ids, chain = state_ids_before(room, name.event_id)
    assert name.event_id not in state_ids
    assert set(state_ids) == set(room.state_at(name.event_id).values()) - {name.event_id}
    create_id = room.current_state[("m.room.create", "")]
    assert create_id in chain
    assert set(chain) <= set(auth_chain(room, state_ids)) | set(state_ids)


@ALL
def test_event_auth_is_the_auth_chain_including_the_auth_events(version: str) -> None:
    """event_auth answers the event's auth events and their own auth chains."""
    room = new_room(version).room
    message = send(room, ALICE, "m.room.message", {"body": "x"})
    chain = event_auth(room, message.event_id)
    assert set(message.event.auth_event_ids) <= set(chain)
    assert room.current_state[("m.room.create", "")] in chain
    assert message.event_id not in chain


@ALL
def test_a_room_joined_from_a_send_join_answer_builds_its_state(version: str) -> None:
    """Outliers (state and auth chain from send_join) then the join with the state
    before it: the join is accepted, is the extremity, and current state is that state
    plus the join."""
    hosted = new_room(version).room
    join_record = join(hosted, BOB)
    state_ids, chain = state_ids_before(hosted, join_record.event_id)
    ours = Room(hosted.room_id, hosted.room_version)
    for event_id in sorted(set(chain) | set(state_ids), key=lambda e: hosted.get_event(e).depth):  # type: ignore[union-attr]
        assert ours.add_outlier(hosted.get_event(event_id), 0).outcome == "accepted"  # type: ignore[arg-type]
    record = ours.add_event(
        join_record.event, 0, state_before=hosted.state_before(join_record.event_id)
    )
    assert record.outcome == "accepted"
    assert ours.forward_extremities == {join_record.event_id}
    assert ours.current_state == hosted.state_at(join_record.event_id)
    assert ours.members[BOB] == "join"


def members_from_state(room: Room) -> dict[str, str]:
    """The memberships of the materialised current state (what the room keeps)."""
    result: dict[str, str] = {}
    for (event_type, state_key), event_id in room.current_state.items():
        event = room.get_event(event_id)
        if event_type == "m.room.member" and event is not None and event.membership:
            result[state_key] = event.membership
    return result


@pytest.mark.parametrize("version", VERSIONS)
def test_members_and_servers_follow_joins_leaves_and_a_resolved_fork(version: str) -> None:
    """The memberships and joined servers the room keeps as events are added are those
    of its current state: after joins, leaves, 70 more state events (a snapshot) and a
    fork of two joins merged by state resolution."""
    room = new_room(version).room
    dave = "@dave:b.test"
    for user in (BOB, dave):
        join(room, user)
    assert room.servers == ["a.test", "b.test"]
    send(room, BOB, "m.room.member", {"membership": "leave"}, state_key=BOB)
    assert room.is_server_in_room("b.test")  # dave still is
    send(room, dave, "m.room.member", {"membership": "leave"}, state_key=dave)
    assert room.servers == ["a.test"] and not room.is_server_in_room("b.test")
    for i in range(70):
        send(room, ALICE, "m.room.topic", {"topic": str(i)}, state_key="")
    base = sorted(room.forward_extremities)
    send(room, BOB, "m.room.member", {"membership": "join"}, state_key=BOB, prev=base)
    send(room, dave, "m.room.member", {"membership": "join"}, state_key=dave, prev=base)
    assert len(room.forward_extremities) == 2
    assert room.members == members_from_state(room)
    joined = {u.partition(":")[2] for u, m in members_from_state(room).items() if m == "join"}
    assert room.servers == sorted(joined)
    assert room.is_server_in_room("b.test") == ("b.test" in joined)


def _rejected_from_bob(room: Room, count: int, body_bytes: int = 10) -> list[EventRecord]:
    """``count`` messages of Bob, who never joined: each rejected."""
    records = [
        send(room, BOB, "m.room.message", {"body": f"{i}-" + "x" * body_bytes})
        for i in range(count)
    ]
    assert {r.outcome for r in records} == {"rejected"}
    return records


@ALL
def test_rejected_events_do_not_count_toward_the_room_cap(version: str) -> None:
    """Issue 22 row 8: with the room one event short of its cap, a non-member's rejected
    events leave that slot free (our next message is accepted); the event after it is
    refused (RoomFull) because accepted events do count."""
    room = new_room(version).room
    room.max_events = len(room) + 1
    _rejected_from_bob(room, 3)
    assert send(room, ALICE, "m.room.message", {"body": "ours"}).outcome == "accepted"
    with pytest.raises(RoomFull):
        send(room, ALICE, "m.room.message", {"body": "one too many"})


@ALL
def test_rejected_events_have_a_cap_of_their_own(version: str) -> None:
    """Past ``max_rejected`` a rejected event is not kept (RoomFull); accepted events
    still are."""
    room = new_room(version).room
    room.max_rejected = 2
    _rejected_from_bob(room, 2)
    with pytest.raises(RoomFull):
        send(room, BOB, "m.room.message", {"body": "third"})
    assert send(room, ALICE, "m.room.message", {"body": "ours"}).outcome == "accepted"


@ALL
def test_a_received_rejected_event_keeps_no_content(version: str) -> None:
    """Issue 22 row 2: a rejected event of another server keeps its ID, type, sender and
    graph links, never its content: a 60,000-byte message is kept in under 1,000 bytes
    of canonical JSON (it was kept whole), and the control API still shows its outcome
    and reason."""
    room = new_room(version).room
    (record,) = _rejected_from_bob(room, 1, body_bytes=60_000)
    kept = room.record(record.event_id)
    assert kept is not None
    assert kept.event.event_id == record.event_id
    assert "content" not in kept.event.pdu
    assert len(encode_canonical_json(dict(kept.event.pdu))) < 1_000
    shown = event_json(kept)
    assert (shown["outcome"], shown["pdu"]["type"], shown["pdu"]["sender"]) == (
        "rejected",
        "m.room.message",
        BOB,
    )
    assert shown["reason"]


@ALL
def test_our_own_rejected_event_is_kept_whole(version: str) -> None:
    """A rejected event of our own server (the control API sends such events on purpose)
    keeps its content."""
    room = new_room(version).room
    state = room.current_state
    auth = [state[("m.room.power_levels", "")], state[("m.room.join_rules", "")]]
    record = add(room, build(room, ALICE, "m.room.message", {"body": "x"}, auth=auth))
    assert record.outcome == "rejected"
    assert record.event.content == {"body": "x"}


def _forked_room(forks: int, *, conflicting: bool) -> tuple[Room, list[str]]:
    """A v12 room where Bob made ``forks`` events on the same parent: messages, or his
    own displayname changes (conflicting state). The fork IDs."""
    room = new_room("12").room
    join(room, BOB)
    return room, room_attacks.forks(room, BOB, forks, conflicting=conflicting)


def _state_sets_per_event(room: Room, tips: list[str], events: int) -> float:
    """State maps handed to state resolution per accepted event while Bob sends messages
    on fork tips and Alice sends (citing the deepest extremities, as our sends do)."""
    before = room.resolution_work.state_sets
    for i in range(events):
        record = send(room, BOB, "m.room.message", {"body": f"on {i}"}, prev=[tips[i]])
        assert record.outcome == "accepted"
        tips[i] = record.event_id
        assert send(room, ALICE, "m.room.message", {"body": f"ours {i}"}).outcome == "accepted"
    return (room.resolution_work.state_sets - before) / (2 * events)


def test_a_room_with_2000_extremities_costs_the_same_state_resolution_per_event_as_one() -> None:
    """Issue 22 row 4: with 2,000 forward extremities standing on one state, an accepted
    event costs no state resolution, as in a linear room (before: every accepted event
    re-resolved the states of all 2,000 extremities, 2,000 state maps per event); our own
    events cite the 10 deepest extremities (Synapse's count)."""
    linear, linear_tips = _forked_room(1, conflicting=False)
    forked, forked_tips = _forked_room(2_000, conflicting=False)
    assert len(forked.forward_extremities) == 2_000
    assert _state_sets_per_event(linear, linear_tips, 1) == 0
    assert _state_sets_per_event(forked, forked_tips, 20) == 0
    ours = build(forked, ALICE, "m.room.message", {"body": "merge"}).event
    assert len(ours.prev_event_ids) == 10


def test_choosing_our_prev_events_looks_at_as_many_extremities_with_2000_as_with_200() -> None:
    """Issue 22 row 4: the prev_events of each of our events (the 10 deepest
    extremities) are taken from a heap by depth: 20 sends look at as many heap entries
    in a room with 2,000 forks as with 200, at most twice the 10 cited per send (before:
    every extremity was looked at, 2,000 per send)."""

    def examined(forks: int) -> int:
        room, _ = _forked_room(forks, conflicting=False)
        tracker = room.extremity_tracker
        send(room, ALICE, "m.room.message", {"body": "first"})
        before = tracker.examined
        for i in range(20):
            assert send(room, ALICE, "m.room.message", {"body": f"{i}"}).outcome == "accepted"
        return tracker.examined - before

    assert examined(2_000) == examined(200) <= 20 * 2 * 10


def test_identical_states_are_resolved_once_and_only_when_the_distinct_states_change() -> None:
    """Issue 22 row 4: 100 forks with 100 conflicting displaynames are resolved when a
    new distinct state appears at an extremity, not again for messages that keep the
    same distinct states (before: every message re-resolved the 100 states); a merge of
    10 forks resolves the state before it and the new current state, once each."""
    room, tips = _forked_room(100, conflicting=True)
    work = room.resolution_work
    resolutions = work.resolutions
    for i in range(10):
        record = send(room, BOB, "m.room.message", {"body": f"on {i}"}, prev=[tips[i]])
        assert record.outcome == "accepted"
        tips[i] = record.event_id
    assert work.resolutions == resolutions
    merged = send(room, ALICE, "m.room.message", {"body": "merge"})
    assert len(merged.event.prev_event_ids) == 10
    # Two: the state before the merge (its 10 prevs), then the current state.
    assert work.resolutions == resolutions + 2


def test_a_resolution_costs_the_same_after_10050_events_of_history_as_after_50() -> None:
    """Issue 22 row 4: the state resolution of two conflicting displaynames of Bob
    visits as many events after 10,050 earlier displayname changes as after 50: the
    walks stop where both sides' auth chains meet (before: they walked the whole chain,
    10,050 events and more)."""

    def visited(history: int) -> int:
        room = new_room("12").room
        join(room, BOB)
        room_attacks.displayname_changes(room, BOB, history)
        room_attacks.forks(room, BOB, 2, conflicting=True)
        assert room.resolution_work.resolutions == 1
        return room.resolution_work.events_visited

    short = visited(50)
    assert short < 20
    assert visited(10_050) == short
