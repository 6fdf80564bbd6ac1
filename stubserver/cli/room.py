"""``stubserver room ...``: clients of the control API of the server ``-c CONFIG`` describes.

Contract: DESIGN.md, "Rooms and the control API". The client (the config's first
``control`` listener, its token, one synchronous request) is
:mod:`stubserver.control.client`, shared with the demo.

Choices where DESIGN.md is silent:

- ``USER`` defaults to :data:`DEFAULT_USER`.
- ``room wait`` looks at every event the room has, from its first: an event that arrived
  before the command started matches too, so that a test never races its own wait.
- ``room join`` takes ``--via`` any number of times (none for an alias or a room we hold).
- Exit status: 0 done; 1 the operation failed (the server refused it, a remote refused it:
  its answer is shown, or the server could not be reached); 2 bad usage or configuration,
  including a 400 or 401 from the control API (a bad argument, a wrong token).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from stubserver.config import ConfigError, load_config
from stubserver.control.client import (
    EXIT_FAILED,
    CommandFailed,
    ControlUnreachable,
    Transport,
    call,
    control_endpoint,
    for_server,
    http_transport,
    room_path,
)

EXIT_OK: Final = 0
#: The localpart of our user when ``--user``/``--creator`` is not given.
DEFAULT_USER: Final = "stubserver"
#: ``room wait``'s default timeout, in seconds.
DEFAULT_WAIT_SECONDS: Final = 30.0
#: Longest one long poll asks the server to wait, in milliseconds (the API's bound).
MAX_POLL_MS: Final = 60_000
#: Time allowed on top of a request's own wait for the answer to arrive, in seconds.
HTTP_MARGIN_SECONDS: Final = 30.0


def _aligned(rows: Sequence[tuple[str, Any]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def _event_line(entry: Mapping[str, Any]) -> str:
    pdu = entry.get("pdu") if isinstance(entry.get("pdu"), dict) else {}
    assert isinstance(pdu, dict)
    return _aligned(
        [
            ("event_id", entry.get("event_id")),
            ("type", pdu.get("type")),
            ("sender", pdu.get("sender")),
            ("origin", entry.get("origin")),
            ("outcome", entry.get("outcome")),
            ("content", json.dumps(pdu.get("content"), sort_keys=True)),
        ]
    )


def matches(entry: Mapping[str, Any], event_type: str | None, sender: str | None) -> bool:
    """True when an events entry has ``event_type`` and ``sender`` (None: any) (pure)."""
    pdu = entry.get("pdu")
    if not isinstance(pdu, dict):
        return False
    if event_type is not None and pdu.get("type") != event_type:
        return False
    return sender is None or pdu.get("sender") == sender


def wait_for_event(
    transport: Transport,
    room: str,
    event_type: str | None,
    sender: str | None,
    timeout_seconds: float,
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> Mapping[str, Any] | None:
    """The first event of ``room`` that matches, waiting up to ``timeout_seconds``; None
    when none arrived in time. Long-polls the API (no sleeps)."""
    deadline = monotonic() + timeout_seconds
    position = 0
    while True:
        remaining_ms = max(0, int((deadline - monotonic()) * 1000))
        wait_ms = min(remaining_ms, MAX_POLL_MS)
        query = urlencode({"from": position, "wait_ms": wait_ms})
        page = call(
            transport,
            "GET",
            f"{room_path(room)}/events?{query}",
            timeout=wait_ms / 1000 + HTTP_MARGIN_SECONDS,
        )
        events = page.get("events") if isinstance(page, dict) else None
        if not isinstance(events, list):
            raise ControlUnreachable("the events answer has no 'events' list")
        for entry in events:
            if isinstance(entry, dict) and matches(entry, event_type, sender):
                return entry
        next_position = page.get("next")
        if isinstance(next_position, int) and not isinstance(next_position, bool):
            position = max(position, next_position)
        if remaining_ms == 0:
            return None


def _content(args: argparse.Namespace) -> tuple[str, dict[str, Any], str | None]:
    """The event type, content and state key ``room send`` was asked for."""
    if args.type is None:
        if args.content is not None or args.state_key is not None:
            raise ConfigError("--type", "--content and --state-key need --type")
        if args.text is None:
            raise ConfigError("TEXT", "give a TEXT or --type T --content JSON")
        return "m.room.message", {"msgtype": "m.text", "body": args.text}, None
    if args.text is not None:
        raise ConfigError("TEXT", "give either TEXT or --type and --content, not both")
    if args.content is None:
        raise ConfigError("--content", "required with --type")
    try:
        content = json.loads(args.content)
    except ValueError as e:
        raise ConfigError("--content", f"not JSON: {e}") from None
    if not isinstance(content, dict):
        raise ConfigError("--content", "must be a JSON object")
    return args.type, content, args.state_key


def run_command(args: argparse.Namespace, transport: Transport, out: Any) -> int:
    """Run ``room <action>`` against ``transport``, writing to ``out``; the exit status."""
    action = args.room_action
    result: Any
    if action == "create":
        body: dict[str, Any] = {"creator": args.creator}
        if args.version is not None:
            body["room_version"] = args.version
        if args.preset is not None:
            body["preset"] = args.preset
        if args.alias is not None:
            body["alias"] = args.alias
        result = call(transport, "POST", "/rooms", body)
        rows = [("room_id", result.get("room_id")), ("room_version", result.get("room_version"))]
    elif action == "join":
        result = call(
            transport, "POST", room_path(args.room) + "/join", {"user": args.user, "via": args.via}
        )
        rows = [
            ("room_id", result.get("room_id")),
            ("room_version", result.get("room_version")),
            ("event_id", result.get("event_id")),
        ]
    elif action == "send":
        event_type, content, state_key = _content(args)
        body = {"sender": args.user, "type": event_type, "content": content}
        if state_key is not None:
            body["state_key"] = state_key
        result = call(transport, "POST", room_path(args.room) + "/send", body)
        rows = [("event_id", result.get("event_id"))]
    elif action == "invite":
        result = call(
            transport,
            "POST",
            room_path(args.room) + "/invite",
            {"sender": args.user, "user_id": args.user_id},
        )
        rows = [("event_id", result.get("event_id"))]
    elif action == "leave":
        result = call(transport, "POST", room_path(args.room) + "/leave", {"user": args.user})
        rows = [("event_id", result.get("event_id"))]
    elif action == "show":
        result = call(transport, "GET", room_path(args.room))
        members = result.get("members") or {}
        rows = [
            ("room_id", result.get("room_id")),
            ("room_version", result.get("room_version")),
            ("servers", ", ".join(result.get("servers") or [])),
            ("forward_extremities", ", ".join(result.get("forward_extremities") or [])),
            ("state_events", len(result.get("state") or [])),
            *((user, membership) for user, membership in sorted(members.items())),
        ]
    else:  # wait
        found = wait_for_event(transport, args.room, args.type, args.sender, args.timeout)
        if found is None:
            print(
                f"stubserver: no matching event in {args.room} within {args.timeout:g} s",
                file=sys.stderr,
            )
            return EXIT_FAILED
        out.write((json.dumps(found) if args.json else _event_line(found)) + "\n")
        return EXIT_OK
    out.write((json.dumps(result) if args.json else _aligned(rows)) + "\n")
    return EXIT_OK


def main(args: argparse.Namespace, transport: Transport | None = None) -> int:
    """Entry point of ``stubserver room``: ConfigError (exit 2) propagates to ``main``."""
    if args.room_action == "wait" and not args.timeout >= 0:
        raise ConfigError("--timeout", "must be a number of seconds, 0 or more")
    if transport is None:
        transport = http_transport(control_endpoint(load_config(args.config)))
    if args.server is not None:
        transport = for_server(transport, args.server)
    try:
        return run_command(args, transport, sys.stdout)
    except CommandFailed as e:
        if args.json:
            sys.stdout.write(json.dumps(e.answer.body) + "\n")
        print(f"stubserver: {e}", file=sys.stderr)
        return e.exit_status
    except ControlUnreachable as e:
        print(f"stubserver: {e}", file=sys.stderr)
        return EXIT_FAILED


def add_room_parser(sub: Any) -> None:
    """Add ``room`` and its actions to the subparsers ``sub`` of the main parser."""
    room = sub.add_parser("room", help="drive the rooms of a running stubserver")
    actions = room.add_subparsers(dest="room_action", required=True, metavar="ACTION")

    def action(name: str, text: str, *, takes_room: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=text)
        if takes_room:
            p.add_argument("room", metavar="ROOM", help="room ID (!...) or alias (#...)")
        p.add_argument("-c", "--config", type=Path, required=True)
        p.add_argument("--json", action="store_true")
        p.add_argument(
            "--server",
            metavar="NAME",
            help="one of the servers the config serves (servers:, issue 23); default the first",
        )
        return p

    c = action("create", "host a new room", takes_room=False)
    c.add_argument("--creator", default=DEFAULT_USER, metavar="USER")
    c.add_argument("--version", metavar="V")
    preset = c.add_mutually_exclusive_group()
    preset.add_argument("--public", dest="preset", action="store_const", const="public_chat")
    preset.add_argument("--private", dest="preset", action="store_const", const="private_chat")
    c.add_argument("--alias", metavar="LOCALPART")

    j = action("join", "join a room")
    j.add_argument("--via", action="append", default=[], metavar="SERVER")
    j.add_argument("--user", default=DEFAULT_USER, metavar="USER")

    s = action("send", "send an event (a text message by default)")
    s.add_argument("text", nargs="?", metavar="TEXT")
    s.add_argument("--type", metavar="T")
    s.add_argument("--content", metavar="JSON")
    s.add_argument("--state-key", metavar="K")
    s.add_argument("--user", default=DEFAULT_USER, metavar="USER")

    i = action("invite", "invite a user")
    i.add_argument("user_id", metavar="USER_ID")
    i.add_argument("--user", default=DEFAULT_USER, metavar="USER")

    leave = action("leave", "leave a room")
    leave.add_argument("--user", default=DEFAULT_USER, metavar="USER")

    action("show", "show a room's state, members and servers")

    w = action("wait", "wait for a matching event (exit 1 on timeout)")
    w.add_argument("--type", metavar="T")
    w.add_argument("--sender", metavar="USER_ID")
    w.add_argument("--timeout", type=float, default=DEFAULT_WAIT_SECONDS, metavar="SECONDS")
