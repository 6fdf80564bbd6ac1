"""The demo's room: one conversation across the trio, through each server's control API.

After the pair matrix, alpha hosts the public room :data:`ROOM_ALIAS` in the default room
version, beta joins it by alias (alpha's directory answers ``query/directory``), gamma
joins it by room ID through alpha, and each server's user sends one message (one
*round*). A second ``start`` finds the room (the servers kept running: rooms live in
memory) and adds one more round. What counts as a delivery, and how it is shown, is
:mod:`stubserver.devtools.demo_evidence`'s.

The control API is our own, on loopback: a synchronous HTTP client suffices
(:mod:`stubserver.control.client`). Every wait is a long poll (``events?from=N&wait_ms=M``)
bounded by one deadline; nothing sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from stubserver.config import load_config
from stubserver.control.client import (
    CommandFailed,
    Transport,
    call,
    control_endpoint,
    http_transport,
    room_path,
)
from stubserver.devtools.demo_evidence import (
    MESSAGE,
    ROOM_ALIAS,
    ROOM_LOCALPART,
    USER,
    Copy,
    Message,
    MessageReport,
    carrying_transactions,
    copies_of_messages,
    count_deliveries,
    delivery,
    demo_messages,
    format_messages,
    message_body,
    round_of,
    user_id,
)
from stubserver.devtools.demo_world import TRIO, DemoServer

ROOM_NAME: Final = "Lobby of the demo federation"
#: How long the room part may wait for joins and messages to arrive, in seconds.
ROOM_WAIT_SECONDS: Final = 10.0
#: Longest one long poll asks to wait, in milliseconds.
MAX_POLL_MS: Final = 5_000
#: Time on top of a long poll's own wait for its answer to arrive, in seconds.
HTTP_MARGIN_SECONDS: Final = 5.0


# -- the control API shell ------------------------------------------------------------------


class RoomDemoError(Exception):
    """The room part could not go on; ``str()`` says where."""


@dataclass
class ControlClient:
    """One server's control API, with the demo's deadline."""

    server: DemoServer
    transport: Transport
    deadline: float
    monotonic: Callable[[], float] = time.monotonic

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; :class:`RoomDemoError` naming the server on a refusal."""
        try:
            return call(self.transport, method, path, body, timeout=self.remaining() + 5)
        except CommandFailed as e:
            raise RoomDemoError(f"{self.server.server_name}: {method} {path}: {e}") from None

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - self.monotonic())

    def room(self, room: str) -> Mapping[str, Any] | None:
        """``GET /rooms/{room}``, or None when this server does not hold it."""
        try:
            answer = call(self.transport, "GET", room_path(room), timeout=HTTP_MARGIN_SECONDS)
        except CommandFailed as e:
            if e.answer.status == 404:
                return None
            raise RoomDemoError(f"{self.server.server_name}: {e}") from None
        return answer if isinstance(answer, dict) else None

    def _page(self, what: str, start: int, wait_ms: int) -> tuple[list[Any], int]:
        key = "events" if what.endswith("/events") else "requests"
        query = urlencode({"from": start, "wait_ms": wait_ms})
        try:
            answer = call(
                self.transport,
                "GET",
                f"{what}?{query}",
                timeout=wait_ms / 1000 + HTTP_MARGIN_SECONDS,
            )
        except CommandFailed as e:
            raise RoomDemoError(f"{self.server.server_name}: {e}") from None
        items = answer.get(key) if isinstance(answer, dict) else None
        after = answer.get("next") if isinstance(answer, dict) else None
        if not isinstance(items, list) or not isinstance(after, int):
            raise RoomDemoError(f"{self.server.server_name}: a malformed {key} answer")
        return items, max(after, start)

    def read_until(self, what: str, done: Callable[[list[Any]], bool]) -> tuple[list[Any], bool]:
        """Every item of the feed ``what`` (``/rooms/R/events`` or ``/requests``) from the
        start, long-polling for more until ``done(items)`` or the deadline."""
        items: list[Any] = []
        position = 0
        while True:
            page, position = self._page(what, position, 0)
            items.extend(page)
            if page:
                continue
            if done(items):
                return items, True
            wait_ms = min(int(self.remaining() * 1000), MAX_POLL_MS)
            if wait_ms <= 0:
                return items, False
            page, position = self._page(what, position, wait_ms)
            items.extend(page)


def clients_for(
    run_dir: Path, servers: Sequence[DemoServer], deadline: float
) -> list[ControlClient]:
    """A control client per server, from its config (address and token)."""
    return [
        ControlClient(
            s, http_transport(control_endpoint(load_config(run_dir / f"{s.slug}.yaml"))), deadline
        )
        for s in servers
    ]


@dataclass
class RoomRun:
    """What one run of the room part did and found."""

    room_id: str = ""
    room_version: str = ""
    steps: list[str] = field(default_factory=list)
    round_number: int = 0
    reports: list[MessageReport] = field(default_factory=list)
    messages: int = 0
    ok: int = 0
    expected: int = 0


def _joined(info: Mapping[str, Any] | None, user: str) -> bool:
    members = info.get("members") if info is not None else None
    return isinstance(members, dict) and members.get(user) == "join"


def ensure_room(clients: Sequence[ControlClient], run: RoomRun) -> None:
    """Create the room on the host unless it holds it; join every other server's user."""
    host, *others = clients
    info = host.room(ROOM_ALIAS)
    if info is None:
        created = host.call(
            "POST",
            "/rooms",
            {"creator": USER, "preset": "public_chat", "alias": ROOM_LOCALPART, "name": ROOM_NAME},
        )
        run.steps.append(f"{host.server.server_name} created {ROOM_ALIAS} (public)")
        info = host.room(created["room_id"])
        if info is None:
            raise RoomDemoError(f"{host.server.server_name} lost the room it just created")
    else:
        run.steps.append(f"{host.server.server_name} still holds {ROOM_ALIAS}")
    run.room_id = str(info["room_id"])
    run.room_version = str(info["room_version"])
    for index, client in enumerate(others):
        name = client.server.server_name
        if _joined(client.room(run.room_id), user_id(client.server)):
            run.steps.append(f"{name} is still in the room")
            continue
        if index == 0:
            # By alias: the joining server asks the alias's server (its directory).
            client.call("POST", room_path(ROOM_ALIAS) + "/join", {"user": USER, "via": []})
            directory = f"{host.server.server_name}'s directory"
            run.steps.append(f"{name} joined by alias (through {directory})")
        else:
            via = [host.server.server_name]
            client.call("POST", room_path(run.room_id) + "/join", {"user": USER, "via": via})
            run.steps.append(f"{name} joined by room ID via {host.server.server_name}")


def wait_for_members(clients: Sequence[ControlClient], run: RoomRun) -> None:
    """Until every server sees every demo user joined (so each message goes to all)."""
    everyone = [user_id(c.server) for c in clients]
    for client in clients:
        events_path = room_path(run.room_id) + "/events"

        def all_joined(_items: list[Any], client: ControlClient = client) -> bool:
            info = client.room(run.room_id)
            return all(_joined(info, u) for u in everyone)

        _, done = client.read_until(events_path, all_joined)
        if not done:
            raise RoomDemoError(
                f"{client.server.server_name} did not see every server join in time"
            )


def next_round(clients: Sequence[ControlClient], run: RoomRun) -> int:
    """1 + the latest round the host's room holds."""
    items, _ = clients[0].read_until(room_path(run.room_id) + "/events", lambda _: True)
    copies = copies_of_messages(items)
    keys = demo_messages({"host": copies}, [c.server for c in clients])
    return 1 + max((round_of(body) for _, body in keys), default=0)


def send_round(clients: Sequence[ControlClient], run: RoomRun) -> list[Message]:
    """Each server's user sends this round's message."""
    sent = []
    for client in clients:
        body = message_body(client.server, run.round_number)
        answer = client.call(
            "POST",
            room_path(run.room_id) + "/send",
            {"sender": USER, "type": MESSAGE, "content": {"msgtype": "m.text", "body": body}},
        )
        sent.append(Message(user_id(client.server), body, str(answer["event_id"])))
    return sent


def collect(clients: Sequence[ControlClient], run: RoomRun, sent: Sequence[Message]) -> None:
    """Wait for every message at every server, then read the evidence and count."""
    copies_by_server: dict[str, dict[tuple[str, str], Copy]] = {}
    requests_by_server: dict[str, list[Any]] = {}
    wanted = [(m.sender, m.body) for m in sent]
    for client in clients:
        items, _ = client.read_until(
            room_path(run.room_id) + "/events",
            lambda items: all(k in copies_of_messages(items) for k in wanted),
        )
        copies_by_server[client.server.server_name] = copies_of_messages(items)
        # The transactions that carried the others' messages: logged once answered.
        theirs = [m for m in sent if m.sender != user_id(client.server)]

        def all_carried(items: list[Any], theirs: list[Message] = theirs) -> bool:
            return all(
                carrying_transactions(items, m.sender.partition(":")[2], m.sender, m.body)
                for m in theirs
            )

        requests, _ = client.read_until("/requests", all_carried)
        requests_by_server[client.server.server_name] = requests
    for m in sent:
        run.reports.append(
            MessageReport(
                m,
                tuple(
                    delivery(
                        m,
                        c.server,
                        copies_by_server[c.server.server_name],
                        requests_by_server[c.server.server_name],
                    )
                    for c in clients
                ),
            )
        )
    run.messages, run.ok, run.expected = count_deliveries(
        copies_by_server, [c.server for c in clients]
    )


def run_room(
    run_dir: Path,
    servers: Sequence[DemoServer] = TRIO,
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> RoomRun:
    """The room part of the demo, start to count; :class:`RoomDemoError` when stuck."""
    deadline = monotonic() + ROOM_WAIT_SECONDS
    clients = clients_for(run_dir, servers, deadline)
    run = RoomRun()
    ensure_room(clients, run)
    wait_for_members(clients, run)
    run.round_number = next_round(clients, run)
    sent = send_round(clients, run)
    collect(clients, run, sent)
    return run


def format_room(run: RoomRun) -> str:
    """Everything the room part prints but the summary line (pure)."""
    lines = [f"room {ROOM_ALIAS} = {run.room_id} (room version {run.room_version})"]
    lines += [f"  {step}" for step in run.steps]
    lines.append("")
    lines.append(f"round {run.round_number}: one message from each server")
    lines.append(format_messages(run.reports))
    return "\n".join(lines)
