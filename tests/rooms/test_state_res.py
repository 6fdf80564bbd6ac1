"""State resolution v2 (v10, v11) and v2.1 (v12) on hand-made forks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stubserver.rooms.state_res import (
    AuthChainTooLarge,
    MissingEvent,
    conflicted_state_subgraph,
    resolve_state,
    split_state,
)
from tests.rooms.room_builder import ALICE, BOB, CAROL, DAVE, RoomBuilder, standard_room

ALL = ("10", "11", "12")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")
TOPIC = ("m.room.topic", "")


def _levels(version: str, users: dict[str, int], **extra: int) -> dict[str, object]:
    listed = dict(users) if version == "12" else {ALICE: 100, **users}
    return {"users": listed, **extra}


def _fork(room: RoomBuilder) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    return dict(room.state), dict(room.state)


def _positions(room: RoomBuilder) -> Callable[[str], int]:
    """The order the builder made its events in: each after its auth events."""
    return {event_id: i for i, event_id in enumerate(room.events)}.__getitem__


def _resolve(room: RoomBuilder, *states: dict[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    """The resolution, the same whether the walks may stop early (positions) or not."""
    whole = resolve_state(room.version, states, room.get)
    assert resolve_state(room.version, states, room.get, position=_positions(room)) == whole
    return whole


def test_split_state_separates_agreeing_keys() -> None:
    """Keys with one value in every state are unconflicted; the rest are conflicted,
    including keys missing from some state."""
    unconflicted, conflicted = split_state(
        [{("a", ""): "$1", ("b", ""): "$2"}, {("a", ""): "$1", ("b", ""): "$3", ("c", ""): "$4"}]
    )
    assert unconflicted == {("a", ""): "$1"}
    assert conflicted == {"$2", "$3", "$4"}


@pytest.mark.parametrize("version", ALL)
def test_no_conflict_returns_the_common_state(version: str) -> None:
    """Identical state sets resolve to themselves."""
    room = standard_room(version)
    assert _resolve(room, dict(room.state), dict(room.state)) == room.state


@pytest.mark.parametrize("version", ALL)
def test_ban_beats_a_concurrent_state_change_by_the_banned_user(version: str) -> None:
    """A ban applied first (power event) makes the banned user's concurrent topic fail."""
    room = standard_room(version, users={BOB: 50})
    room.member(BOB, "join")
    a, b = _fork(room)
    ban = room.member(BOB, "ban", ALICE, state=a)
    room.send("m.room.topic", BOB, {"topic": "mine"}, state_key="", state=b)
    resolved = _resolve(room, a, b)
    assert resolved[("m.room.member", BOB)] == ban.event_id
    assert TOPIC not in resolved


@pytest.mark.parametrize("version", ALL)
def test_demotion_beats_a_concurrent_ban_by_the_demoted_user(version: str) -> None:
    """Power events go in reverse topological power order: the admin's demotion of Bob
    is applied before Bob's concurrent ban of Carol, which then fails."""
    room = standard_room(version, users={BOB: 50})
    room.member(BOB, "join")
    room.member(CAROL, "join")
    carol_join = room.state[("m.room.member", CAROL)]
    a, b = _fork(room)
    demote = room.send(
        "m.room.power_levels", ALICE, _levels(version, {}), state_key="", state=a, ts=5000
    )
    room.member(CAROL, "ban", BOB, state=b, ts=1)
    resolved = _resolve(room, a, b)
    assert resolved[PL] == demote.event_id
    assert resolved[("m.room.member", CAROL)] == carol_join


@pytest.mark.parametrize("version", ALL)
def test_join_rules_change_beats_a_concurrent_join(version: str) -> None:
    """A concurrent switch to invite-only wins over a join that needed the public rule."""
    room = standard_room(version)
    a, b = _fork(room)
    invite_only = room.send(
        "m.room.join_rules", ALICE, {"join_rule": "invite"}, state_key="", state=a
    )
    room.member(DAVE, "join", state=b)
    resolved = _resolve(room, a, b)
    assert resolved[JR] == invite_only.event_id
    assert ("m.room.member", DAVE) not in resolved


@pytest.mark.parametrize("version", ALL)
def test_power_level_conflict_orders_by_sender_power_before_time(version: str) -> None:
    """Higher-power senders' events sort first, so the lower-power moderator's allowed
    change is applied last and wins, though it is older."""
    room = standard_room(version, users={BOB: 50})
    room.member(BOB, "join")
    a, b = _fork(room)
    room.send(
        "m.room.power_levels",
        ALICE,
        _levels(version, {BOB: 50}, users_default=7),
        state_key="",
        state=a,
        ts=5000,
    )
    bobs = room.send(
        "m.room.power_levels",
        BOB,
        _levels(version, {BOB: 50}, users_default=5),
        state_key="",
        state=b,
        ts=10,
    )
    assert _resolve(room, a, b)[PL] == bobs.event_id


@pytest.mark.parametrize("version", ["10", "11"])
def test_equal_power_conflict_breaks_ties_by_origin_server_ts(version: str) -> None:
    """Equal sender power: the older event is applied first, the newer one wins."""
    room = standard_room(version, users={BOB: 100})
    room.member(BOB, "join")
    a, b = _fork(room)
    room.send(
        "m.room.power_levels",
        ALICE,
        _levels(version, {BOB: 100}, users_default=1),
        state_key="",
        state=a,
        ts=2000,
        event_id="$zz-alice",
    )
    newer = room.send(
        "m.room.power_levels",
        BOB,
        _levels(version, {BOB: 100}, ban=60),
        state_key="",
        state=b,
        ts=2001,
        event_id="$aa-bob",
    )
    assert _resolve(room, a, b)[PL] == newer.event_id


@pytest.mark.parametrize("version", ["10", "11"])
def test_equal_power_and_time_breaks_ties_by_event_id(version: str) -> None:
    """Equal power and ts: the smaller event ID is applied first, the larger one wins."""
    room = standard_room(version, users={BOB: 100})
    room.member(BOB, "join")
    a, b = _fork(room)
    larger = room.send(
        "m.room.power_levels",
        ALICE,
        _levels(version, {BOB: 100}, kick=60),
        state_key="",
        state=a,
        ts=2000,
        event_id="$zz",
    )
    room.send(
        "m.room.power_levels",
        BOB,
        _levels(version, {BOB: 100}, ban=60),
        state_key="",
        state=b,
        ts=2000,
        event_id="$aa",
    )
    assert _resolve(room, a, b)[PL] == larger.event_id


@pytest.mark.parametrize(("version", "winner"), [("11", "alice"), ("12", "bob")])
def test_v12_creator_outranks_a_listed_admin(version: str, winner: str) -> None:
    """v11: the creator and another admin both have 100, so the newer change wins. v12:
    the creator's infinite power sorts its change first, so the admin's older change,
    applied last, wins."""
    room = standard_room(version, users={BOB: 100})
    room.member(BOB, "join")
    a, b = _fork(room)
    alices = room.send(
        "m.room.power_levels",
        ALICE,
        _levels(version, {BOB: 100}, kick=60),
        state_key="",
        state=a,
        ts=9000,
    )
    bobs = room.send(
        "m.room.power_levels",
        BOB,
        _levels(version, {BOB: 100}, ban=60),
        state_key="",
        state=b,
        ts=1,
    )
    expected = {"alice": alices, "bob": bobs}[winner]
    assert _resolve(room, a, b)[PL] == expected.event_id


@pytest.mark.parametrize("version", ALL)
def test_mainline_ordering_applies_events_on_newer_power_levels_last(version: str) -> None:
    """Non-power events sort by mainline position: a topic authorised by the newer power
    levels is applied after one authorised by the older, whatever their timestamps."""
    room = standard_room(version, users={BOB: 50, CAROL: 50})
    room.member(BOB, "join")
    room.member(CAROL, "join")
    a, b = _fork(room)
    room.send("m.room.topic", BOB, {"topic": "bob"}, state_key="", state=a, ts=9000)
    room.send(
        "m.room.power_levels",
        ALICE,
        _levels(version, {BOB: 50, CAROL: 50}, users_default=1),
        state_key="",
        state=b,
    )
    carols = room.send("m.room.topic", CAROL, {"topic": "carol"}, state_key="", state=b, ts=1)
    assert _resolve(room, a, b)[TOPIC] == carols.event_id


def _reset_scenario(version: str) -> tuple[RoomBuilder, str, str, list[dict[tuple[str, str], str]]]:
    """Bob (a moderator) switches the room to invite-only, and is banned; one state set
    has his join rules and the ban, the other the old join rules and the same ban."""
    room = standard_room(version, users={BOB: 50})
    old_rules = room.state[JR]
    room.member(BOB, "join")
    a, b = _fork(room)
    bobs_rules = room.send("m.room.join_rules", BOB, {"join_rule": "invite"}, state_key="", state=a)
    ban = room.member(BOB, "ban", ALICE, state=dict(room.state))
    a[("m.room.member", BOB)] = b[("m.room.member", BOB)] = ban.event_id
    return room, old_rules, bobs_rules.event_id, [a, b]


@pytest.mark.parametrize("version", ["10", "11"])
def test_v2_checks_conflicted_power_events_against_unconflicted_state(version: str) -> None:
    """v2 starts the power-event auth checks from the unconflicted state, where Bob is
    already banned: his join rules change fails and the old rules stand."""
    room, old_rules, _, states = _reset_scenario(version)
    resolved = _resolve(room, *states)
    assert resolved[JR] == old_rules


def test_v21_checks_conflicted_power_events_from_empty_state() -> None:
    """v2.1 (v12) starts from an empty state: Bob's join rules change is checked against
    its own auth events, where he was joined, so it stands (the ban is re-applied from
    the unconflicted state at the end)."""
    room, _, bobs_rules, states = _reset_scenario("12")
    resolved = _resolve(room, *states)
    assert resolved[JR] == bobs_rules
    assert resolved[("m.room.member", BOB)] == states[0][("m.room.member", BOB)]


@pytest.mark.parametrize("version", ALL)
def test_unconflicted_state_overrides_the_result(version: str) -> None:
    """Step 5: unconflicted entries are put back, whatever the iterative checks did."""
    room = standard_room(version)
    a, b = _fork(room)
    room.send("m.room.join_rules", ALICE, {"join_rule": "invite"}, state_key="", state=a)
    topic = room.send("m.room.topic", ALICE, {"topic": "t"}, state_key="", state=dict(a))
    a[TOPIC] = b[TOPIC] = topic.event_id
    assert _resolve(room, a, b)[TOPIC] == topic.event_id


@pytest.mark.parametrize("version", ALL)
def test_missing_event_is_reported(version: str) -> None:
    """An event the caller cannot supply raises MissingEvent naming it."""
    room = standard_room(version)
    a, b = _fork(room)
    a[TOPIC] = "$nowhere"
    with pytest.raises(MissingEvent) as raised:
        _resolve(room, a, b)
    assert raised.value.event_id == "$nowhere"


def _long_power_chain(
    version: str, length: int
) -> tuple[RoomBuilder, dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    room = standard_room(version)
    start = dict(room.state)
    for n in range(length):
        room.send(
            "m.room.power_levels", ALICE, _levels(version, {}, users_default=n % 3), state_key=""
        )
    return room, start, dict(room.state)


@pytest.mark.parametrize("version", ["11", "12"])
def test_deep_auth_chain_resolves_without_recursion(version: str) -> None:
    """20,000 power levels events, each authorised by the last, resolve against the
    room's start: every walk is iterative."""
    room, start, end = _long_power_chain(version, 20_000)
    assert _resolve(room, start, end)[PL] == end[PL]


def test_auth_chain_walk_is_bounded() -> None:
    """A walk that passes the limit raises AuthChainTooLarge instead of running on."""
    room, start, end = _long_power_chain("12", 50)
    with pytest.raises(AuthChainTooLarge):
        resolve_state(room.version, [start, end], room.get, limit=20)


def test_conflicted_subgraph_holds_the_paths_between_conflicted_events() -> None:
    """v2.1: events on auth paths from one conflicted event to another (Bob's join, which
    cites the old join rules and authorises his new ones) are in the subgraph; events
    off those paths (Alice's join) are not."""
    room = standard_room("12", users={BOB: 50})
    old_rules = room.state[JR]
    bob_join = room.member(BOB, "join")
    new_rules = room.send("m.room.join_rules", BOB, {"join_rule": "invite"}, state_key="")
    subgraph = conflicted_state_subgraph({old_rules, new_rules.event_id}, room.get)
    assert subgraph == {old_rules, bob_join.event_id, new_rules.event_id}


def test_rejected_auth_events_are_not_fallen_back_on() -> None:
    """Iterative auth checks use an event's own auth events only when they were not
    rejected: with Bob's join marked rejected, his join rules change (checked from the
    empty state of v2.1) fails and Alice's concurrent one stands."""
    room = standard_room("12", users={BOB: 50})
    bob_join = room.member(BOB, "join")
    a, b = _fork(room)
    bobs = room.send("m.room.join_rules", BOB, {"join_rule": "invite"}, state_key="", state=a)
    alices = room.send("m.room.join_rules", ALICE, {"join_rule": "knock"}, state_key="", state=b)
    ban = room.member(BOB, "ban", ALICE, state=dict(room.state))
    a[("m.room.member", BOB)] = b[("m.room.member", BOB)] = ban.event_id
    assert resolve_state(room.version, [a, b], room.get)[JR] == bobs.event_id
    resolved = resolve_state(room.version, [a, b], room.get, rejected={bob_join.event_id})
    assert resolved[JR] == alices.event_id


@pytest.mark.parametrize(("version", "winner"), [("11", "first"), ("12", "third")])
def test_an_outdated_power_levels_beside_a_newer_auth_chain(version: str, winner: str) -> None:
    """MSC4297's Problem B, as ``stateres.v21_includes_conflicted_subgraph`` builds it:
    Alice raises Bob (P2), Bob raises Carol (P3); Dave joins on the state before P2 (P1)
    citing P3. Resolving P3's state with Dave's: v2 (v11) applies P1 and refuses P3 (Bob
    has no power under P1); v2.1 (v12) replays P2 from the conflicted subgraph, so P3
    stands."""
    room = standard_room(version)
    room.member(BOB, "join")
    room.member(CAROL, "join")
    before = dict(room.state)
    first = before[PL]
    room.send("m.room.power_levels", ALICE, _levels(version, {BOB: 50}), state_key="")
    third = room.send(
        "m.room.power_levels", BOB, _levels(version, {BOB: 50, CAROL: 50}), state_key=""
    )
    join = room.build("m.room.member", DAVE, {"membership": "join"}, state_key=DAVE)
    assert third.event_id in join.auth_event_ids
    daves = {**before, ("m.room.member", DAVE): join.event_id}
    resolved = _resolve(room, dict(room.state), daves)
    assert resolved[PL] == {"first": first, "third": third.event_id}[winner]
    assert resolved[("m.room.member", DAVE)] == join.event_id
