"""Clients for the rooms interop tests: a stub's control API and a real homeserver's
(Synapse's or Dendrite's) client API.

Both run their requests inside the test namespace (``harness.http_request``), where names
resolve through the tests' DNS. Waiting is always for something, with a deadline: the
stub's long-polls (``events``, ``edus``, ``requests``) or a poll of the homeserver's client
API.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from tests.interop.harness import (
    POLL_INTERVAL_S,
    HarnessError,
    HomeserverSpec,
    RunningStub,
    StubWorld,
    http_request,
)

#: How long a test waits for something to cross federation, in seconds.
FEDERATION_WAIT_S = 30.0
#: One long-poll's wait, in milliseconds (the control API's cap is 60 s).
LONG_POLL_MS = 5_000

T = TypeVar("T")
_txn_ids = itertools.count()


def quote(value: str) -> str:
    """A path segment: room IDs, aliases, user IDs and event IDs quoted whole."""
    return urllib.parse.quote(value, safe="")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = FEDERATION_WAIT_S) -> T:
    """Call ``probe`` until it returns something other than None, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = probe()
        except HarnessError as e:
            value, last = None, e
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last})")
        time.sleep(POLL_INTERVAL_S)


class ControlApi:
    """A stub's control API (DESIGN.md, "Rooms and the control API")."""

    def __init__(self, env: StubWorld, stub: RunningStub) -> None:
        self.env = env
        self.stub = stub
        self.server_name = stub.server_name

    def user_id(self, localpart: str = "alice") -> str:
        """Our user's ID."""
        return f"@{localpart}:{self.server_name}"

    def call(self, method: str, path: str, body: Any = None, *, wait_s: float = 0) -> Any:
        """One control call; its JSON answer. Raises HarnessError on a non-2xx."""
        answer = http_request(
            self.env.ns,
            method,
            f"{self.stub.files.control_url}/_stubserver/v1{path}",
            body=body,
            headers={"Authorization": f"Bearer {self.stub.files.control_token}"},
            timeout=60 + wait_s,
        )
        if answer.status is None or not 200 <= answer.status < 300:
            raise HarnessError(
                f"control {method} {path} -> {answer.status} {answer.error or answer.raw_body}"
            )
        return answer.body

    def create_room(self, version: str, *, preset: str = "public_chat", **extra: Any) -> str:
        """A room we host; its ID."""
        body = {"creator": "alice", "room_version": version, "preset": preset, **extra}
        answer = self.call("POST", "/rooms", body)
        assert answer["room_version"] == version, answer
        return str(answer["room_id"])

    def join(self, room: str, via: list[str]) -> Any:
        """Our alice joins ``room`` through ``via``."""
        return self.call("POST", f"/rooms/{quote(room)}/join", {"user": "alice", "via": via})

    def leave(self, room: str) -> Any:
        """Our alice leaves ``room``."""
        return self.call("POST", f"/rooms/{quote(room)}/leave", {"user": "alice"})

    def invite(self, room: str, user_id: str) -> Any:
        """Our alice invites ``user_id``."""
        return self.call(
            "POST", f"/rooms/{quote(room)}/invite", {"sender": "alice", "user_id": user_id}
        )

    def send(self, room: str, text: str, **extra: Any) -> str:
        """Our alice says ``text``; the event ID."""
        body = {
            "sender": "alice",
            "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": text},
            **extra,
        }
        return str(self.call("POST", f"/rooms/{quote(room)}/send", body)["event_id"])

    def send_edu(self, room: str, edu_type: str, content: Mapping[str, Any]) -> None:
        """An EDU to every other server in ``room``."""
        self.call("POST", f"/rooms/{quote(room)}/edu", {"edu_type": edu_type, "content": content})

    def room(self, room: str) -> Any:
        """``GET /rooms/{room}``: state, members, servers, extremities."""
        return self.call("GET", f"/rooms/{quote(room)}")

    def wait_for_event(
        self, room: str, match: Callable[[Mapping[str, Any]], bool], what: str
    ) -> Mapping[str, Any]:
        """The first entry of the room's events (from the start) that ``match``es."""
        position = 0
        seen: list[str] = []
        deadline = time.monotonic() + FEDERATION_WAIT_S
        while time.monotonic() < deadline:
            page = self.call(
                "GET",
                f"/rooms/{quote(room)}/events?from={position}&wait_ms={LONG_POLL_MS}",
                wait_s=LONG_POLL_MS / 1000,
            )
            for entry in page["events"]:
                if match(entry):
                    return dict(entry)
                seen.append(f"{entry['pdu'].get('type')} {entry['event_id']} {entry['outcome']}")
            position = page["next"]
        raise AssertionError(f"no {what} in {room} after {FEDERATION_WAIT_S} s; seen: {seen}")

    def wait_for_edu(self, match: Callable[[Mapping[str, Any]], bool], what: str) -> Any:
        """The first received EDU that ``match``es."""
        return self._wait_feed("/edus", "edus", match, what)

    def wait_for_request(
        self,
        path_prefix: str,
        what: str,
        match: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> Any:
        """The first logged inbound request whose URI, percent-decoded, starts with
        ``path_prefix`` (servers quote room IDs in paths, each in its own way), and that
        ``match`` accepts when given."""
        return self._wait_feed(
            "/requests",
            "requests",
            lambda r: (
                urllib.parse.unquote(str(r["uri"])).startswith(path_prefix)
                and (match is None or match(r))
            ),
            what,
        )

    def _wait_feed(
        self, path: str, key: str, match: Callable[[Mapping[str, Any]], bool], what: str
    ) -> Any:
        position = 0
        deadline = time.monotonic() + FEDERATION_WAIT_S
        while time.monotonic() < deadline:
            page = self.call(
                "GET", f"{path}?from={position}&wait_ms={LONG_POLL_MS}", wait_s=LONG_POLL_MS / 1000
            )
            for entry in page[key]:
                if match(entry):
                    return entry
            position = page["next"]
        raise AssertionError(f"no {what} after {FEDERATION_WAIT_S} s")


class HomeserverUser:
    """One homeserver user's client-server API (the plain client listener)."""

    def __init__(self, env: StubWorld, spec: HomeserverSpec, user_id: str, token: str) -> None:
        self.env = env
        self.user_id = user_id
        self.token = token
        self.base = spec.client_url
        self.server_name = spec.server_name
        self.since: str | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int | None, Any]:
        """One request: (status, JSON body)."""
        answer = http_request(
            self.env.ns,
            method,
            f"{self.base}/_matrix/client/v3{path}",
            body=body,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        return answer.status, answer.body

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        """One request that must answer 200; its body."""
        status, answer = self.call(method, path, body)
        if status != 200:
            raise AssertionError(f"{self.base} {method} {path} -> {status} {answer}")
        return answer

    def create_room(self, version: str, *, preset: str = "public_chat", **extra: Any) -> str:
        """A room of the homeserver's; its ID."""
        body = {"room_version": version, "preset": preset, **extra}
        return str(self.ok("POST", "/createRoom", body)["room_id"])

    def send(self, room_id: str, text: str) -> str:
        """A message; its event ID."""
        txn = f"t{time.monotonic_ns()}-{next(_txn_ids)}"
        body = {"msgtype": "m.text", "body": text}
        answer = self.ok("PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{txn}", body)
        return str(answer["event_id"])

    def joined_members(self, room_id: str) -> dict[str, Any]:
        """``joined_members``: user ID → profile."""
        answer = self.ok("GET", f"/rooms/{quote(room_id)}/joined_members")
        return dict(answer["joined"])

    def event(self, room_id: str, event_id: str) -> Any | None:
        """One event as the user sees it, or None (404: unknown, rejected or soft-failed)."""
        status, answer = self.call("GET", f"/rooms/{quote(room_id)}/event/{quote(event_id)}")
        return answer if status == 200 else None

    def messages(self, room_id: str, limit: int = 50) -> list[Any]:
        """The room's latest events, newest first (``/messages?dir=b``)."""
        answer = self.ok("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit={limit}")
        return list(answer["chunk"])

    def state_event_ids(self, room_id: str) -> set[str]:
        """The event IDs of the room's current state."""
        return {e["event_id"] for e in self.ok("GET", f"/rooms/{quote(room_id)}/state")}

    def sync(self, timeout_ms: int = 1000) -> Any:
        """The next ``/sync``: initial the first time, then from the last ``next_batch``.

        Synapse serves identical initial syncs from a cache (rooms.md, pitfall 21): the
        initial one carries a filter of its own, so it is never one seen before.
        """
        if self.since is None:
            nonce = f"stubserver-test-{time.monotonic_ns()}-{next(_txn_ids)}"
            query = "?filter=" + quote(json.dumps({"account_data": {"not_types": [nonce]}}))
        else:
            query = f"?timeout={timeout_ms}&since={quote(self.since)}"
        answer = self.ok("GET", f"/sync{query}")
        self.since = str(answer["next_batch"])
        return answer
