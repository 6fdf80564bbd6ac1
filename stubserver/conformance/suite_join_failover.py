"""Joining through the servers its client names when the first of them cannot help (issue
23; Complement's ``TestJoinFederatedRoomFailOver`` and ``TestJoinViaRoomIDAndServerName``,
area A, PEER+HS2 there: here two servers of the peer's process play both).

The room is hosted by our servers: A creates it (public), B joins it through A. Its user
then joins with ``POST /_matrix/client/v3/join/{roomId}?via=A&via=B`` while A cannot
help. ``via`` is the current spec's name (Client-Server API v1.12 on; ``server_name``,
its older name, was removed by MSC4213): the same list goes as ``server_name`` too, for
homeservers older than that (Dendrite 0.13.8 reads only ``server_name``).

What the spec requires: ``via`` lists "The servers to attempt to join the room through.
One of the servers must be participating in the room." (Client-Server API, ``POST
/join/{roomIdOrAlias}``), and the answer 200 means "The room has been joined." It says
nothing of the order of the attempts, and the joining server gets the template from "a
resident from the candidate list" and "in principle any valid candidate may be used at
each time" (Server-Server API, "Joining Rooms"): so a test requires the join, its
``make_join`` and ``send_join`` answered 200 by the servers the faults leave able to
answer, and reports the order of the attempts it saw (A first or not, A's refusals) as
its note, never requires one.

Each test takes its own A (it sets faults there, cleared in ``finally``); B, which no test
faults, is shared by them (a room of its own per test). Run once, in the newest room
version (the behaviour does not depend on it), but for the room ID test: in the newest
version whose room IDs carry a server name (v12's carry none).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from stubserver.conformance.context import (
    PEER_USER,
    AreaEntry,
    Context,
    expect,
    membership_is,
    once_in_newest,
    q,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.rooms.versions import room_version
from stubserver.testing import HomeserverError, Peer

JOIN = (
    "Client-Server API: POST /_matrix/client/v3/join/{roomIdOrAlias} (via); "
    "Server-Server API: Joining Rooms"
)
MAKE_JOIN: Final = "/_matrix/federation/v1/make_join/*"
SEND_JOIN: Final = "/_matrix/federation/v*/send_join/*"
_KIND = re.compile(r"^/_matrix/federation/v[0-9]+/(make_join|send_join)/([^/]+)/")
#: The key of the shared B in the run's shared values.
SHARED_B: Final = "join_failover.b"


@dataclass(frozen=True)
class Attempt:
    """One ``make_join`` or ``send_join`` of the homeserver at one of our servers:
    ``server`` (its name), ``kind``, ``outcome`` (``"200"``, another status, or the fault:
    ``"refused"``), ``ts`` (ms, the peer process's clock)."""

    server: str
    kind: str
    outcome: str
    ts: int

    def __str__(self) -> str:
        return f"{self.kind} at {self.server} {self.outcome}"


def attempts(
    feeds: Mapping[str, Sequence[Mapping[str, Any]]], room_id: str, origin: str
) -> list[Attempt]:
    """The homeserver's (``origin``) ``make_join``/``send_join`` requests for ``room_id``
    in our servers' request feeds (``{server name: entries}``), in the order they came
    (pure)."""
    found: list[Attempt] = []
    for server, entries in feeds.items():
        for entry in entries:
            match = _KIND.match(unquote(str(entry.get("uri", ""))))
            if match is None or match[2] != room_id or entry.get("origin") != origin:
                continue
            outcome = str(
                entry.get("fault") if entry.get("fault") == "refused" else entry.get("status")
            )
            found.append(Attempt(server, match[1], outcome, int(entry.get("ts") or 0)))
    return sorted(found, key=lambda a: a.ts)


def story(seen: Sequence[Attempt]) -> str:
    """The attempts as one line, runs of the same one counted (pure)."""
    if not seen:
        return "no make_join or send_join from it at our servers"
    parts: list[tuple[str, int]] = []
    for attempt in seen:
        if parts and parts[-1][0] == str(attempt):
            parts[-1] = (parts[-1][0], parts[-1][1] + 1)
        else:
            parts.append((str(attempt), 1))
    return ", then ".join(text if n == 1 else f"{text} x{n}" for text, n in parts)


def judge(
    seen: Sequence[Attempt], *, make_join_at: Sequence[str], send_join_at: Sequence[str]
) -> str:
    """The verdict on the attempts behind a join its client says is done (pure): a
    ``make_join`` answered 200 at one of ``make_join_at`` and a ``send_join`` answered 200
    at one of ``send_join_at`` (the servers the faults left able to answer); CheckFailed
    naming the missing one, with what was seen. The note: the attempts, in order."""
    done = [a for a in seen if a.outcome == "200"]
    for kind, at in (("make_join", make_join_at), ("send_join", send_join_at)):
        if not any(a.kind == kind and a.server in at for a in done):
            raise CheckFailed(
                f"the {kind} behind its join", f"one answered 200 by {' or '.join(at)}", story(seen)
            )
    return story(seen)


def first_tried(seen: Sequence[Attempt], server: str) -> str:
    """Whether ``server`` was tried before the others, after them, or not at all (pure)."""
    if not seen:
        return f"{server} not tried"
    if seen[0].server == server:
        return f"{server} tried first"
    if any(a.server == server for a in seen):
        return f"{server} tried, not first"
    return f"{server} not tried"


def _shared_b(ctx: Context) -> Peer:
    return ctx.shared(SHARED_B, lambda: ctx.servers(1, "the join failover tests' B")[0])


def _room(ctx: Context, version: str, purpose: str) -> tuple[Peer, Peer, str]:
    """A (taken by this test) hosts a public room of ``version`` that B has joined:
    A, B and the room ID."""
    a = ctx.servers(1, purpose)[0]
    b = _shared_b(ctx)
    room = a.create_room(PEER_USER, room_version=version, preset="public_chat")
    b.join(room.room_id, PEER_USER, via=[a.server_name])
    return a, b, room.room_id


def _join_through(
    ctx: Context,
    world: tuple[Peer, Peer, str],
    *,
    via: Sequence[str],
    fault: str,
    faults: Callable[[], object],
) -> list[Attempt]:
    """With ``faults()`` set on A (cleared after, whatever happens), its user joins
    ``room_id`` through ``via``; the join must be done (200, and its user joined as its
    own client reads the room). The homeserver's attempts at A and B, in order."""
    a, b, room_id = world
    start_a, start_b = len(a.requests()), len(b.requests())
    origin = ctx.server_name

    def seen() -> list[Attempt]:
        feeds = {a.server_name: a.requests(start_a), b.server_name: b.requests(start_b)}
        return attempts(feeds, room_id, origin)

    what = f"its user's join of {room_id} with via={list(via)} while {a.server_name} {fault}"
    faults()
    try:
        try:
            joined = ctx.user.join(room_id, via=via)
        except HomeserverError as e:
            raise CheckFailed(
                what,
                f'200: joined through {b.server_name}, which is in the room (via: "The'
                " servers to attempt to join the room through. One of the servers must be"
                ' participating in the room")',
                f"{e.status} {e.errcode}: {e.error}; at our servers: {story(seen())}",
            ) from None
    finally:
        a.clear_faults()
    if joined != room_id:
        raise CheckFailed(f"{what}: the room_id of its answer", room_id, joined)
    wait_until(
        f"{ctx.user.user_id} joined, as its own client reads {room_id}",
        membership_is(ctx.user, room_id, ctx.user.user_id, "join"),
        expected="membership 'join'",
    )
    return seen()


def knows_key_of(ctx: Context, server: Peer) -> None:
    """``server`` signs a request to the homeserver, answered 200: it has verified the
    signature, so it holds the server's key."""
    path = f"/_matrix/federation/v1/query/profile?user_id={q(ctx.user.user_id)}"
    answer = server.federation_request(ctx.server_name, "GET", path)
    expect(f"its answer to {server.server_name}'s signed GET {path}", 200, answer.status)


def first_server_down(ctx: Context, version: str) -> str:
    """A is down (every connection to it reset), B is in the room: its user's join with
    ``via=[A, B]`` is done, through B: B answered its ``make_join`` and its ``send_join``
    200 (no other server could). Whether it tried A first (A's refused attempts) is the
    note: the spec names no order. A signed a request to it before going down: the room's
    first events are A's, and with A down it can verify them only with A's key in hand
    (or from a notary, which the spec does not oblige it to have)."""
    a, b, room_id = _room(ctx, version, "a join while the first via server is down")
    knows_key_of(ctx, a)
    seen = _join_through(
        ctx,
        (a, b, room_id),
        via=[a.server_name, b.server_name],
        fault="is down",
        faults=lambda: a.set_faults(down="reset"),
    )
    path = judge(seen, make_join_at=[b.server_name], send_join_at=[b.server_name])
    return f"{first_tried(seen, a.server_name)}: {path}"


def make_join_refused_404(ctx: Context, version: str) -> str:
    """A answers ``make_join`` 404 ``M_NOT_FOUND`` (a server that does not know the room),
    B is in the room: its user's join with ``via=[A, B]`` is done: B answered its
    ``make_join`` 200, and A or B its ``send_join`` (any candidate may take it; Complement's
    ``TestJoinFederatedRoomFailOver``). The note: the attempts in order."""
    a, b, room_id = _room(ctx, version, "a join whose first via server answers 404")
    rule = {"status": 404, "errcode": "M_NOT_FOUND", "routes": [MAKE_JOIN]}
    seen = _join_through(
        ctx,
        (a, b, room_id),
        via=[a.server_name, b.server_name],
        fault="answers make_join 404 M_NOT_FOUND",
        faults=lambda: a.set_faults(fail=rule),
    )
    both = [a.server_name, b.server_name]
    path = judge(seen, make_join_at=[b.server_name], send_join_at=both)
    return f"{first_tried(seen, a.server_name)}: {path}"


def send_join_failing_retried_at_next(ctx: Context, version: str) -> str:
    """A answers ``make_join`` as a resident does but ``send_join`` 500, B is in the room:
    its user's join with ``via=[A, B]`` is done, its ``send_join`` answered 200 by B. Its
    template may come from A or B (Synapse sends the event A's template gave to B;
    Dendrite asks B for a template of its own): the note says which."""
    a, b, room_id = _room(ctx, version, "a join whose first via server fails send_join")
    seen = _join_through(
        ctx,
        (a, b, room_id),
        via=[a.server_name, b.server_name],
        fault="answers send_join 500",
        faults=lambda: a.set_faults(fail={"status": 500, "routes": [SEND_JOIN]}),
    )
    path = judge(seen, make_join_at=[a.server_name, b.server_name], send_join_at=[b.server_name])
    return f"{first_tried(seen, a.server_name)}: {path}"


def via_not_room_id_domain(ctx: Context, version: str) -> str:
    """The room's ID names A (it created the room), which answers ``make_join`` and
    ``send_join`` 404 ``M_NOT_FOUND``; B is in the room: its user's join with ``via=[B]``
    alone is done through B (``make_join`` and ``send_join`` answered 200 by B), not
    routed to the room ID's server only (Complement's ``TestJoinViaRoomIDAndServerName``;
    the room ID's server part "is purely a namespace", MSC4156). Whether it tried A too
    is the note."""
    a, b, room_id = _room(ctx, version, "a join through via, not the room ID's server")
    rule = {"status": 404, "errcode": "M_NOT_FOUND", "routes": [MAKE_JOIN, SEND_JOIN]}
    seen = _join_through(
        ctx,
        (a, b, room_id),
        via=[b.server_name],
        fault="(the room ID's server) answers make_join and send_join 404",
        faults=lambda: a.set_faults(fail=rule),
    )
    path = judge(seen, make_join_at=[b.server_name], send_join_at=[b.server_name])
    tried_a = any(x.server == a.server_name for x in seen)
    return f"{a.server_name} {'tried too' if tried_a else 'not tried'}: {path}"


AREA: list[AreaEntry] = [
    ("join_failover.first_server_down", JOIN, first_server_down),
    ("join_failover.make_join_refused_404", JOIN, make_join_refused_404),
    (
        "join_failover.send_join_failing_retried_at_next",
        JOIN,
        send_join_failing_retried_at_next,
    ),
]
ROOM_ID_DOMAIN: list[AreaEntry] = [
    ("join_failover.via_not_room_id_domain", JOIN, via_not_room_id_domain),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests, once each: the room ID test in the newest version whose room IDs
    name a server (none when every version's are the create event's hash)."""
    with_domain = [v for v in versions if not room_version(v).room_id_is_create_hash]
    return once_in_newest(AREA, versions) + once_in_newest(ROOM_ID_DOMAIN, with_domain)
