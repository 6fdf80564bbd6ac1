"""State resolution of real forks in room version 12 (Complement area S): the creators'
infinite power in the reverse topological power ordering (MSC4289, Complement's
``TestMSC4289PrivilegedRoomCreators``, "admin with >PL100 sorts after the room creator
for state resolution"), and state resolution v2.1's two changes (MSC4297: "starts from
the empty set", "includes the conflicted subgraph"). Room version 12 only: the rules
tested are room version 12's (in v10 and v11 the same forks resolve otherwise, as v2
says). When the homeserver does not offer room version 12, each test is skipped, saying so.

Each builds a fork that the homeserver holds whole (every event reaches it in order, each
naming prev_events it has), then a merge event of ours naming both branches. The state at
the merge is defined by the room version's state resolution ("The room state S(E) before E
is the resolution of the set of states ... after the prev_events"); our own state
resolution computes it, each test checks the rule it is about in our answer first, and
then its client's room state and its ``/state_ids`` at the merge must be that.

Spec: Room Versions, "Room Version 12": "Room creators have infinitely high power level";
"State resolution" ("This state resolution algorithm is largely the same as the algorithm
found in room version 2 with the following modifications: 1. The iterative auth checks
algorithm ... now starts with an empty state map instead of the unconflicted state map.
2. A new definition for conflicted state subgraph ... 3. ... the definition for full
conflicted set additionally includes the subgraph").
"""

from __future__ import annotations

from stubserver.conformance.context import (
    PEER_USER,
    PEER_USER_2,
    AreaEntry,
    Context,
    client_call,
    expect_accepted,
    per_version,
    q,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest, Skipped
from stubserver.conformance.suite_auth import (
    MEMBER,
    POWER_LEVELS,
    STATE_RES,
    StateMap,
    auth_ids,
    expect_state_at_merge,
    peer_state,
)

V12 = "12"
JOIN_RULES = ("m.room.join_rules", "")
#: The level Complement gives its admin: far above 100, far below the largest integer.
ADMIN_LEVEL = 9493420
#: A third user of ours (Complement's "Eve" of MSC4297's Problem B).
PEER_USER_3 = "conformance-third"


def _wait_received(ctx: Context, room_id: str, event_id: str, what: str) -> None:
    """Wait until its event ``event_id`` reached us, accepted."""
    expect_accepted(
        f"our verdict on {what} ({event_id})", ctx.peer.wait_for_event(room_id, event_id=event_id)
    )


def unmet(
    expected: dict[tuple[str, str], str], wanted: dict[tuple[str, str], str]
) -> dict[str, str | None]:
    """The keys of ``wanted`` that ``expected`` (a state) does not hold as wanted, each
    as ``type/state_key`` with what it holds (None: nothing) (pure)."""
    return {
        f"{t}/{k}": expected.get((t, k))
        for (t, k), v in wanted.items()
        if expected.get((t, k)) != v
    }


def _judge_merge(
    ctx: Context, room_id: str, merge: str, rule: str, wanted: dict[tuple[str, str], str]
) -> None:
    """The state our own state resolution gives at ``merge`` must hold ``wanted`` (the
    test's premise, checked before the homeserver is judged: CheckFailed naming ``rule``);
    then its client's room state and its ``/state_ids`` at the merge must be that state."""
    expected = {k: v[0] for k, v in peer_state(ctx, room_id).items()}
    wrong = unmet(expected, wanted)
    if wrong:
        raise CheckFailed(f"our own state resolution at the merge ({rule})", wanted, wrong)
    expect_state_at_merge(ctx, room_id, merge, expected, what=f"the merge ({rule})")


def _forked(
    ctx: Context,
    room_id: str,
    key: tuple[str, str],
    content: dict[str, str],
    *,
    sender: str = PEER_USER,
    prev_events: list[str],
    auth_events: list[str],
) -> str:
    """Our state event ``key`` on ``prev_events`` (a branch of the fork), authorised by
    ``auth_events`` (the state where it stands, or what the test chooses). Its ID."""
    return ctx.peer.send(
        room_id,
        key[0],
        content,
        sender=sender,
        state_key=key[1],
        prev_events=prev_events,
        auth_events=auth_events,
    )


def creator_sorts_before_admin(ctx: Context, version: str) -> str:
    """Room creators have "infinitely high power level", so in the reverse topological
    power ordering ("x < y if x's sender has greater power level than y's sender") a
    creator's power event comes before that of an admin of any level, and the admin's,
    applied later, wins (Complement's "admin with >PL100 sorts after the room creator for
    state resolution"). In its room its user (the creator) gives our user level 9493420,
    then sets the join rule to ``invite``; our user sets it to ``knock`` on the power
    levels event (concurrently); our merge event names both. The state at the merge has
    our ``knock``: a creator ranked by the power levels' ``users`` (where a v12 creator
    is not) sorts last and its ``invite`` would win."""
    room_id = ctx.join_homeserver_room(version)
    us = ctx.peer_user_id()
    levels = next(
        e["content"] for e in ctx.user.state(room_id) if (e["type"], e["state_key"]) == POWER_LEVELS
    )
    raised = {**levels, "users": {**(levels.get("users") or {}), us: ADMIN_LEVEL}}
    path = f"/rooms/{q(room_id)}/state"
    promotion = client_call(ctx.user, "PUT", f"{path}/m.room.power_levels/", raised)["event_id"]
    _wait_received(ctx, room_id, promotion, f"its power levels giving our user {ADMIN_LEVEL}")
    state = peer_state(ctx, room_id)
    invite = client_call(ctx.user, "PUT", f"{path}/m.room.join_rules/", {"join_rule": "invite"})[
        "event_id"
    ]
    _wait_received(ctx, room_id, invite, "its creator's join rule 'invite'")
    knock = _forked(
        ctx,
        room_id,
        JOIN_RULES,
        {"join_rule": "knock"},
        prev_events=[promotion],
        auth_events=auth_ids(state, version, POWER_LEVELS, (MEMBER, us)),
    )
    merge = ctx.send_text(room_id, "the merge", prev_events=[invite, knock])
    rule = "v12: the creator's join rule sorts first, the admin's applies last"
    _judge_merge(ctx, room_id, merge, rule, {JOIN_RULES: knock})
    return "our admin's 'knock' applied after its creator's 'invite'"


def _third_party_room(ctx: Context, version: str) -> tuple[str, StateMap]:
    """Our room of ``version`` (our first user the creator), our second user and its user
    joined; the state as we hold it once its user's join reached us."""
    room_id = ctx.peer.create_room(PEER_USER, room_version=version, preset="public_chat").room_id
    ctx.peer.join(room_id, PEER_USER_2)
    ctx.user.join(room_id, via=[ctx.peer.server_name])
    ctx.peer.wait_for_event(
        room_id,
        type=MEMBER,
        state_key=ctx.user.user_id,
        match=lambda e: e.outcome == "accepted",
    )
    return room_id, peer_state(ctx, room_id)


def starts_from_empty_set(ctx: Context, version: str) -> str:
    """State resolution v2.1's first iterative auth checks start "with an empty state map
    instead of the unconflicted state map" (MSC4297's Problem A, Complement's
    ``TestMSC4297StateResolutionV2_1_starts_from_empty_set``). In our room (its user
    joined), on one branch our creator sets the join rule to ``invite``, on the other it
    leaves; a message names both (state there: ``invite``, the creator left), another
    names only the leave (the old ``public``, the creator left). At our merge of those
    two the join rules conflict while the creator's leave is unconflicted: started from
    the unconflicted state, both join rules fail (their sender is not joined) and the
    room is left with no join rule (v2's state reset); started from the empty state, each
    is checked against its own auth events and the later, ``invite``, stands, with the
    leave laid over. The state at the merge has ``invite`` and the leave.

    Why no display-name changes: Complement needs 250 of them so that the homeserver
    gives up ``get_missing_events`` and asks ``/state_ids``, which Complement answers with
    an outdated join rule to make a state set whose ``prev_events`` history disagrees with
    its auth chains. The fork here makes that disagreement with real events the
    homeserver receives in order (no gap at all), so the verdict holds whatever way, if
    any, it fills gaps, and needs no wrong ``/state_ids`` answer."""
    room_id, state = _third_party_room(ctx, version)
    creator = ctx.peer_user_id()
    base = ctx.peer.room_state(room_id)["forward_extremities"]
    auth = auth_ids(state, version, POWER_LEVELS, (MEMBER, creator))
    invite = _forked(
        ctx, room_id, JOIN_RULES, {"join_rule": "invite"}, prev_events=base, auth_events=auth
    )
    leave = _forked(
        ctx, room_id, (MEMBER, creator), {"membership": "leave"}, prev_events=base, auth_events=auth
    )
    both = _message(ctx, room_id, "after the join rule and the leave", [invite, leave])
    after_leave = _message(ctx, room_id, "after the leave only", [leave])
    merge = _message(ctx, room_id, "the merge", [both, after_leave])
    rule = "v2.1 starts from the empty state: the join rules pass on their own auth events"
    _judge_merge(ctx, room_id, merge, rule, {JOIN_RULES: invite, (MEMBER, creator): leave})
    return "the join rule 'invite' kept beside the creator's leave"


def _message(ctx: Context, room_id: str, text: str, prev_events: list[str]) -> str:
    """Our second user's message on ``prev_events`` (its sender joined on every branch)."""
    return ctx.peer.send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": text},
        sender=PEER_USER_2,
        prev_events=prev_events,
    )


def includes_conflicted_subgraph(ctx: Context, version: str) -> str:
    """State resolution v2.1's full conflicted set holds the *conflicted state subgraph*,
    the events on auth-event paths between conflicted events (MSC4297's Problem B,
    Complement's ``TestMSC4297StateResolutionV2_1_includes_conflicted_subgraph``). In our
    room (its user joined) our creator raises our second user to 100 (power levels P2),
    who then gives its user 50 (P3). Our third user joins on the state before P2 (the old
    P1) with P3 among its auth events (allowed: its join passes on both). At our merge of
    P3 and that join the power levels P1 and P3 conflict, and P2 is in every state set's
    auth chain (so not in the auth difference). Without P2 the iterative auth checks
    apply P1, then refuse P3 (its sender has no power under P1): v2's state reset. With
    the subgraph P1 → P2 → P3 all apply. The state at the merge has P3 and the join.

    Why no display-name changes: as in ``stateres.v21_starts_from_empty_set``, the state
    set holding an outdated power levels event beside an event whose auth chain names the
    newer ones, which Complement makes with 250 changes and a wrong ``/state_ids``
    answer, is made here by one join whose prev_events and auth_events disagree, received
    in order."""
    room_id, state = _third_party_room(ctx, version)
    second = ctx.peer_user_id(PEER_USER_2)
    base = ctx.peer.room_state(room_id)["forward_extremities"]
    levels = dict(state[POWER_LEVELS][1]["content"])
    users = dict(levels.get("users") or {})
    ctx.peer.send(  # P2
        room_id,
        POWER_LEVELS[0],
        {**levels, "users": {**users, second: 100}},
        sender=PEER_USER,
        state_key="",
    )
    p3 = ctx.peer.send(
        room_id,
        POWER_LEVELS[0],
        {**levels, "users": {**users, second: 100, ctx.user.user_id: 50}},
        sender=PEER_USER_2,
        state_key="",
    )
    third = ctx.peer_user_id(PEER_USER_3)
    join = _forked(
        ctx,
        room_id,
        (MEMBER, third),
        {"membership": "join"},
        sender=PEER_USER_3,
        prev_events=base,
        auth_events=[p3, *auth_ids(state, version, JOIN_RULES)],
    )
    merge = _message(ctx, room_id, "the merge", [p3, join])
    rule = "v2.1's conflicted subgraph brings P2, which lets P3 apply"
    _judge_merge(ctx, room_id, merge, rule, {POWER_LEVELS: p3, (MEMBER, third): join})
    return "the power levels P3 kept beside the join"


AREA: list[AreaEntry] = [
    ("stateres.creator_sorts_before_admin", STATE_RES, creator_sorts_before_admin),
    ("stateres.v21_starts_from_empty_set", STATE_RES, starts_from_empty_set),
    ("stateres.v21_includes_conflicted_subgraph", STATE_RES, includes_conflicted_subgraph),
]


def _not_offered(ctx: Context) -> None:
    raise Skipped(
        "the homeserver does not offer room version 12 (its /capabilities lists no stable"
        " 12): creators' infinite power and state resolution v2.1 are room version 12's"
    )


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests in room version 12; when the homeserver does not offer it, the
    same ids, skipped with why (``room_version`` None: they ran in no version)."""
    if V12 in versions:
        return per_version(AREA, [V12])
    return [ConformanceTest(f"{entry[0]}/v{V12}", entry[1], None, _not_offered) for entry in AREA]
