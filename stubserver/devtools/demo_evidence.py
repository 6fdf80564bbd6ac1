"""The demo room's evidence: what each server holds, the deliveries it shows, and the
lines printed about them (all pure).

A **delivery** is one message present in one server's copy of the room, with outcome
``accepted`` and the content it was sent with. Every server holds only PDUs whose
signatures verified (a PDU whose content hash failed would hold redacted content), so a
delivery to a server other than the sender's means it was received, verified and accepted
there. For this round's messages the report also shows the evidence on the receiving side:
the ``PUT /send`` transaction from the sender's server in the receiver's inbound requests,
authenticated (X-Matrix). ``room ...: 3 servers, N messages, D/E deliveries OK`` counts
every demo message of the room, all rounds (E = messages x servers).

The path shown for each delivery is how the sending server resolved the receiving one:
it follows from the receiver's delegation in the demo world (direct, well-known, SRV).
:mod:`stubserver.devtools.demo_room` sets the room up and reads the feeds this judges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from stubserver.devtools.demo_pairs import describe_path
from stubserver.devtools.demo_world import TRIO, DemoServer

ROOM_LOCALPART: Final = "lobby"
#: The demo's room, hosted by the first server of the trio (alpha).
ROOM_ALIAS: Final = f"#{ROOM_LOCALPART}:{TRIO[0].server_name}"
#: The localpart of each server's user (the demo configs name her ``alice``).
USER: Final = "alice"
MESSAGE: Final = "m.room.message"
SEND_PATH_PREFIX: Final = "/_matrix/federation/v1/send/"


def user_id(server: DemoServer) -> str:
    """The demo user of ``server``."""
    return f"@{USER}:{server.server_name}"


def message_body(server: DemoServer, round_number: int) -> str:
    """The text ``server``'s user sends in round ``round_number`` (unique per round)."""
    return f"hello from {server.server_name}, round {round_number}"


def round_of(body: str) -> int:
    """The round a demo message's text names (0 when none) (pure)."""
    tail = body.rpartition(" ")[2]
    return int(tail) if tail.isascii() and tail.isdigit() else 0


def delivery_path(destination: DemoServer) -> str:
    """How any other server reaches ``destination`` in the demo world (pure)."""
    host = f"{destination.fed_host}:{destination.fed_port}"
    if destination.method == "well-known":
        return f"well-known → {host}"
    if destination.method == "srv":
        return describe_path("srv", destination.fed_host, destination.fed_port)
    return describe_path("default_port", destination.fed_host, destination.fed_port)


# -- what each server holds (pure) ----------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One demo message: its sender, text, and event ID (at its sender)."""

    sender: str  # the user ID
    body: str
    event_id: str


@dataclass(frozen=True)
class Copy:
    """One server's copy of a message: who handed it over and what the auth checks said."""

    event_id: str
    origin: str | None
    outcome: str
    reason: str | None
    body: Any


@dataclass(frozen=True)
class Delivery:
    """One message at one server: the path it took there and the evidence."""

    server: str
    path: str  # "" for the sender's own copy
    own: bool  # the sender's own server
    received: bool
    authenticated: bool | None  # the carrying transaction's X-Matrix check; None: not seen
    accepted: bool
    note: str = ""

    @property
    def ok(self) -> bool:
        """The definition of a delivery (module docstring): present, intact, accepted."""
        return self.received and self.accepted


def copies_of_messages(events: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Copy]:
    """The ``m.room.message`` events of an events feed, by (sender, body) (pure)."""
    found: dict[tuple[str, str], Copy] = {}
    for entry in events:
        pdu = entry.get("pdu")
        if not isinstance(pdu, dict) or pdu.get("type") != MESSAGE:
            continue
        content = pdu.get("content")
        body = content.get("body") if isinstance(content, dict) else None
        sender = pdu.get("sender")
        if not isinstance(sender, str) or not isinstance(body, str):
            continue
        found[(sender, body)] = Copy(
            str(entry.get("event_id")),
            entry.get("origin"),
            str(entry.get("outcome")),
            entry.get("reason"),
            body,
        )
    return found


def carrying_transactions(
    requests: Iterable[Mapping[str, Any]], sender_server: str, sender: str, body: str
) -> list[Mapping[str, Any]]:
    """The inbound ``PUT /send`` requests from ``sender_server`` carrying the message (pure)."""
    found = []
    for entry in requests:
        uri = entry.get("uri")
        if entry.get("method") != "PUT" or not isinstance(uri, str):
            continue
        if not uri.startswith(SEND_PATH_PREFIX) or entry.get("origin") != sender_server:
            continue
        content = entry.get("content")
        pdus = content.get("pdus") if isinstance(content, dict) else None
        for pdu in pdus if isinstance(pdus, list) else []:
            if (
                isinstance(pdu, dict)
                and pdu.get("sender") == sender
                and isinstance(pdu.get("content"), dict)
                and pdu["content"].get("body") == body
            ):
                found.append(entry)
                break
    return found


def delivery(
    message: Message,
    server: DemoServer,
    copies: Mapping[tuple[str, str], Copy],
    requests: Sequence[Mapping[str, Any]] | None,
) -> Delivery:
    """``message`` at ``server``, from its copy of the room and its inbound requests (None:
    not looked at) (pure)."""
    own = message.sender == user_id(server)
    path = "" if own else delivery_path(server)
    copy = copies.get((message.sender, message.body))
    authenticated: bool | None = None
    if requests is not None and not own:
        carried = carrying_transactions(
            requests, message.sender.partition(":")[2], message.sender, message.body
        )
        if carried:
            authenticated = all(e.get("authenticated") is True for e in carried)
    if copy is None:
        return Delivery(server.server_name, path, own, False, authenticated, False, "not in room")
    accepted = copy.outcome == "accepted"
    note = "" if accepted else f"{copy.outcome}: {copy.reason}"
    return Delivery(server.server_name, path, own, True, authenticated, accepted, note)


def describe_delivery(d: Delivery) -> str:
    """``received, verified, accepted`` or what is missing (pure)."""
    if d.own:
        return "sent here, accepted" if d.accepted else f"sent here, NOT accepted ({d.note})"
    if not d.received:
        return "NOT received"
    if d.authenticated is False:
        verified = "verified (event), transaction NOT authenticated"
    else:
        verified = "verified"
    if d.accepted:
        return f"received, {verified}, accepted"
    return f"received, {verified}, NOT accepted ({d.note})"


@dataclass(frozen=True)
class MessageReport:
    """One message and its delivery to every server."""

    message: Message
    deliveries: tuple[Delivery, ...]


OWN_COPY: Final = "(its own copy)"


def format_messages(reports: Sequence[MessageReport]) -> str:
    """Each message: who sent what, then one aligned line per server (pure)."""
    deliveries = [d for r in reports for d in r.deliveries]
    width_server = max((len(d.server) for d in deliveries), default=0)
    width_path = max((len(d.path or OWN_COPY) for d in deliveries), default=0)
    lines = []
    for report in reports:
        m = report.message
        lines.append(f"{m.sender}: {m.body!r}  {m.event_id}")
        for d in report.deliveries:
            path = d.path or OWN_COPY
            lines.append(
                f"  {d.server:<{width_server}}  {path:<{width_path}}  {describe_delivery(d)}"
            )
    return "\n".join(lines)


def summary_line(servers: int, messages: int, ok: int, expected: int) -> str:
    """The demo's last line (pure)."""
    verdict = "OK" if ok == expected else "FAILED"
    return (
        f"room {ROOM_ALIAS}: {servers} servers, {messages} messages, "
        f"{ok}/{expected} deliveries {verdict}"
    )


def demo_messages(
    copies_by_server: Mapping[str, Mapping[tuple[str, str], Copy]],
    servers: Sequence[DemoServer],
) -> list[tuple[str, str]]:
    """Every demo message (sender, body) any server holds, in round then sender order (pure)."""
    senders = {user_id(s): s for s in servers}
    keys: set[tuple[str, str]] = set()
    for copies in copies_by_server.values():
        for sender, body in copies:
            s = senders.get(sender)
            if s is not None and body.startswith(f"hello from {s.server_name}, round "):
                keys.add((sender, body))
    order = {user_id(s): i for i, s in enumerate(servers)}
    return sorted(keys, key=lambda k: (round_of(k[1]), order[k[0]]))


def count_deliveries(
    copies_by_server: Mapping[str, Mapping[tuple[str, str], Copy]],
    servers: Sequence[DemoServer],
) -> tuple[int, int, int]:
    """(messages, deliveries OK, deliveries expected) over every round (pure)."""
    keys = demo_messages(copies_by_server, servers)
    ok = sum(
        1
        for key in keys
        for s in servers
        if (copy := copies_by_server.get(s.server_name, {}).get(key)) is not None
        and copy.outcome == "accepted"
    )
    return len(keys), ok, len(keys) * len(servers)
