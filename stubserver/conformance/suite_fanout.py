"""Fan-out and recovery, with several of the peer's servers (issue 23): an event of its
user reaches every server in the room, and a server that was down gets what it missed
once it is back, and later events again.

These tests take their own servers of the peer's process (:meth:`Context.servers`;
skipped when the process serves too few) and run once, in the newest room version (the
room version does not change how a homeserver delivers its events).

Spec: Server-Server API v1.19, the introduction ("Persisted Data Units (PDUs): These events
are broadcast from one homeserver to any others that have joined the same room"; "it is
the responsibility of the originating server of a PDU to deliver that event to its
recipient servers"), "Transactions", and "Backfilling and retrieving missing events".
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from stubserver.conformance.context import (
    PEER_USER,
    AreaEntry,
    Context,
    NotYet,
    expect_accepted,
    once_in_newest,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.testing import Peer, ReceivedEdu, RoomEvent, WaitTimeout

#: The spec's words are in its introduction, which has no anchor; its section "PDUs"
#: ("a single Room Event which the origin server wants to send to the destination").
PDUS = "PDUs"
MISSING = "Backfilling and retrieving missing events"
SEND_PATH: Final = "/_matrix/federation/v1/send/"
#: How many of the peer's servers the fan-out test takes.
FANOUT_SERVERS: Final = 5
#: The key of the fan-out room in the run's shared values.
FANOUT_ROOM: Final = "fanout.room"
TYPING = "Typing Notifications"
RECEIPTS = "Receipts"


# -- judging: what the request feed of one of our servers says (pure) ----------------------


def send_transactions(requests: Sequence[dict[str, Any]], origin: str) -> list[dict[str, Any]]:
    """The ``PUT /send`` transactions of ``requests`` (request log objects) that
    ``origin`` signed."""
    return [
        r
        for r in requests
        if r.get("method") == "PUT"
        and str(r.get("uri", "")).startswith(SEND_PATH)
        and r.get("origin") == origin
    ]


def _carries(entry: dict[str, Any], room_id: str, body: str) -> bool:
    content = entry.get("content")
    pdus = content.get("pdus") if isinstance(content, dict) else None
    return any(
        isinstance(p, dict)
        and p.get("room_id") == room_id
        and isinstance(p.get("content"), dict)
        and p["content"].get("body") == body
        for p in pdus or ()
    )


def pushed_in(
    requests: Sequence[dict[str, Any]], origin: str, room_id: str, body: str
) -> dict[str, Any] | None:
    """The first ``/send`` of ``origin`` that we answered 200 (no fault acted on it) and
    that carries the message ``body`` of ``room_id``; None when the message came another
    way (we fetched it: ``get_missing_events`` or ``/event``)."""
    for entry in send_transactions(requests, origin):
        if entry.get("status") == 200 and not entry.get("fault") and _carries(entry, room_id, body):
            return entry
    return None


def how_it_came(requests: Sequence[dict[str, Any]], origin: str, room_id: str, body: str) -> str:
    """``"pushed"`` (in a ``/send`` of ``origin``) or ``"pulled"`` (we fetched it)."""
    return "pushed" if pushed_in(requests, origin, room_id, body) is not None else "pulled"


# -- the flows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A message of the homeserver's user: its event ID and its (unique) body."""

    event_id: str
    body: str


def _send(ctx: Context, room_id: str, label: str) -> Message:
    body = f"{label} {secrets.token_hex(6)}"
    return Message(ctx.user.send_message(room_id, body), body)


def _join_all(ctx: Context, room_id: str, servers: Sequence[Peer]) -> None:
    """Our user of each server joins ``room_id`` through the homeserver; its client
    lists every one of them joined."""
    for server in servers:
        ctx.peer_joins(room_id, server=server)


def _received(server: Peer, room_id: str, message: Message, what: str) -> RoomEvent:
    """``message`` as ``server`` holds it, accepted; CheckFailed naming the server when it
    did not come within the wait."""
    try:
        event = server.wait_for_event(room_id, event_id=message.event_id)
    except WaitTimeout as e:
        raise CheckFailed(f"{what} at {server.server_name}", "received", str(e)) from e
    expect_accepted(f"{what} at {server.server_name}", event)
    return event


def _fanout_room(ctx: Context, version: str) -> tuple[list[Peer], str]:
    """The fan-out room: its user's room of ``version`` that five of our servers (taken
    for it) joined, made once in the run (the EDU test reuses it): the servers and the
    room ID."""

    def make() -> tuple[list[Peer], str]:
        servers = ctx.servers(FANOUT_SERVERS, "fan-out to every server in the room")
        room_id = ctx.user.create_room(preset="public_chat", room_version=version)
        _join_all(ctx, room_id, servers)
        return servers, room_id

    return ctx.shared(FANOUT_ROOM, make)


def event_reaches_every_server(ctx: Context, version: str) -> str:
    """Five of our servers join its user's room; its user's message reaches every one of
    them, accepted ("Persisted Data Units (PDUs): These events are broadcast from one
    homeserver to any others that have joined the same room"; "it is the responsibility
    of the originating server of a PDU to deliver that event to its recipient servers",
    Server-Server API, introduction). Nothing else is sent into the room after it, so no
    server has a later event that would lead it to fetch the message: each must be sent
    it. The note says how it came to each (pushed in a ``/send``, or pulled) and how many
    ``/send`` transactions the homeserver sent to them from the message on."""
    servers, room_id = _fanout_room(ctx, version)
    starts = [len(s.requests()) for s in servers]
    message = _send(ctx, room_id, "to every server")
    ways: list[str] = []
    counts: list[int] = []
    for server, start in zip(servers, starts, strict=True):
        _received(server, room_id, message, "its user's message, sent to every server in the room")
        feed = server.requests(start)
        ways.append(how_it_came(feed, ctx.server_name, room_id, message.body))
        counts.append(len(send_transactions(feed, ctx.server_name)))
    pushed = ways.count("pushed")
    return (
        f"{pushed} of {len(servers)} got it in a /send, {len(servers) - pushed} pulled it;"
        f" {sum(counts)} /send transactions from {ctx.server_name} to them from the"
        f" message on ({', '.join(map(str, counts))})"
    )


def _edu_reaches_every_server(
    ctx: Context,
    servers: Sequence[Peer],
    edu_type: str,
    *,
    what: str,
    match: Callable[[ReceivedEdu], bool],
    act: Callable[[], object],
) -> str:
    """After ``act()``, each of ``servers`` gets an EDU of ``edu_type`` from the homeserver
    that ``match`` accepts (EDUs from before ``act`` do not count); CheckFailed naming the
    first server without one. The note: the EDUs each server got from it since."""
    starts = [len(s.edus()) for s in servers]
    act()
    counts: list[int] = []
    for server, start in zip(servers, starts, strict=True):
        try:
            server.wait_for_edu(edu_type, origin=ctx.server_name, match=match, start=start)
        except WaitTimeout as e:
            raise CheckFailed(
                f"{what} in a room of {len(servers)} of our servers, at {server.server_name}",
                f"an {edu_type} EDU",
                str(e),
            ) from e
        counts.append(len([e for e in server.edus(start) if e.origin == ctx.server_name]))
    return f"EDUs from {ctx.server_name} at each server: {', '.join(map(str, counts))}"


def typing_reaches_every_server(ctx: Context, version: str) -> str:
    """In the fan-out room (after ``fanout.event_reaches_every_server``, its baseline: its
    message reached all five, so it counts them among the servers in the room), its user
    types: every one of the five gets an ``m.typing`` EDU for that user in that room
    ("When a server's users send typing notifications, those notifications need to be
    sent to other servers in the room so their users are aware of the same state",
    Typing Notifications). The note counts the EDUs each server got from it."""
    servers, room_id = _fanout_room(ctx, version)
    user_id = ctx.user.user_id

    def typing(e: ReceivedEdu) -> bool:
        content = e.content
        return (content.get("room_id"), content.get("user_id"), content.get("typing")) == (
            room_id,
            user_id,
            True,
        )

    try:
        return _edu_reaches_every_server(
            ctx,
            servers,
            "m.typing",
            what="its user's typing",
            match=typing,
            act=lambda: ctx.user.typing(room_id, True),
        )
    finally:
        ctx.user.typing(room_id, False)


def receipt_reaches_every_server(ctx: Context, version: str) -> str:
    """In the fan-out room (after ``fanout.event_reaches_every_server``, its baseline), its
    user reads a new message of its own that every one of the five got: each gets an
    ``m.receipt`` EDU saying that user read that event ("Receipts are EDUs used to
    communicate a marker for a given event"; the ``m.receipt`` EDU carries "receipts for
    a particular room" of the sending server's users, Receipts). The note counts the EDUs
    each server got from it."""
    servers, room_id = _fanout_room(ctx, version)
    user_id = ctx.user.user_id
    message = _send(ctx, room_id, "read by its user")
    for server in servers:
        _received(server, room_id, message, "the message its user then reads")

    def read(e: ReceivedEdu) -> bool:
        reads = (e.content.get(room_id) or {}).get("m.read") or {}
        return message.event_id in ((reads.get(user_id) or {}).get("event_ids") or ())

    return _edu_reaches_every_server(
        ctx,
        servers,
        "m.receipt",
        what="its user's read receipt",
        match=read,
        act=lambda: ctx.user.receipt(room_id, message.event_id),
    )


def _refused_since(server: Peer, before: int) -> NotYet | int:
    refused = server.fault_counters()["connections_refused"] - before
    return refused if refused > 0 else NotYet("no connection refused yet")


def catch_up_after_down(ctx: Context, version: str) -> str:
    """Of two of our servers in its user's room, one is down (each connection to it
    reset) while its user sends M1: the other gets M1 at once (the baseline: the fault
    is the cause), the homeserver's attempt on the down one fails (seen in its fault
    counters). Then the server comes back: its faults cleared, its user sends a message
    into the room, as a real server's users do once it is up again. That signed
    ``/send`` tells the homeserver the server answers again: Synapse retries a
    destination it backs off from at once on a request from it (Dendrite too, at most
    once a minute per server). After a first failure both also retry by themselves
    within seconds: Synapse's client 3-6 s later, Dendrite after a backoff of about 2 s
    (``federationapi/statistics``). The homeserver takes that message, and
    its user sends M2. The server that was down gets M2 (it is not locked out: "Once a
    homeserver has joined a room, it receives all the events emitted by other
    homeservers in that room", "Backfilling and retrieving missing events") and M1, by
    any way the spec allows: the homeserver's retry or catch-up ``/send``, or fetched by
    us when M2 names it in ``prev_events`` ("a server may not have all the events in
    the graph. That server may use the ``/get_missing_events`` API to acquire the
    events it is missing"). The note says which. The spec sets no deadline for
    delivery: the test waits 30 s once the server has shown itself up, which no
    backoff timer of a server that heeds that needs. Its mutants make Synapse's failed
    transaction final at once (no retry inside its HTTP client) and then lock the
    destination out, or never wake it on its request."""
    down, up = ctx.servers(2, "recovery of a server that was down")
    room_id = ctx.user.create_room(preset="public_chat", room_version=version)
    _join_all(ctx, room_id, (down, up))
    start = len(down.requests())
    refused_before = down.fault_counters()["connections_refused"]
    try:
        down.set_faults(down="reset")
        m1 = _send(ctx, room_id, "M1, while one server is down")
        _received(up, room_id, m1, "M1 at the server that was up all along (the baseline)")
        refused = wait_until(
            f"the homeserver's attempt to send M1 to {down.server_name}, which is down",
            lambda: _refused_since(down, refused_before),
            expected="a connection refused (reset)",
        )
        down.clear_faults()
        back = down.send_message(room_id, "back again", sender=PEER_USER)
        ctx.wait_visible(room_id, back, f"the message of {down.server_name}'s user once back")
        m2 = _send(ctx, room_id, "M2, after the server came back")
        _received(
            down,
            room_id,
            m2,
            "M2, sent after the server came back (locked out after its outage?)",
        )
        _received(
            down,
            room_id,
            m1,
            "M1, missed while down (by a retry, catch-up or fetched when M2 named it)",
        )
    finally:
        down.clear_faults()
    feed = down.requests(start)
    m1_way, m2_way = (how_it_came(feed, ctx.server_name, room_id, m.body) for m in (m1, m2))
    return (
        f"{refused} connection(s) to {down.server_name} refused while down; M1 {m1_way}"
        f" ({'a retry or catch-up /send' if m1_way == 'pushed' else 'fetched by us'}), M2 {m2_way}"
    )


AREA: list[AreaEntry] = [
    ("fanout.event_reaches_every_server", PDUS, event_reaches_every_server),
    ("fanout.catch_up_after_down", MISSING, catch_up_after_down),
    (
        "fanout.typing_reaches_every_server",
        TYPING,
        typing_reaches_every_server,
        ("fanout.event_reaches_every_server",),
    ),
    (
        "fanout.receipt_reaches_every_server",
        RECEIPTS,
        receipt_reaches_every_server,
        ("fanout.event_reaches_every_server",),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests, once, in the newest of ``versions``."""
    return once_in_newest(AREA, versions)
