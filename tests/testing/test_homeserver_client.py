"""``stubserver.testing.Homeserver`` against a tiny fake homeserver on loopback.

The fake (a ``ThreadingHTTPServer``) answers from a table and records every request, so
each test states what the client sent: the shared-secret MAC, the registration stages,
the ``since`` tokens of successive syncs.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from stubserver.testing import (
    Homeserver,
    HomeserverError,
    HomeserverUser,
    WaitTimeout,
    registration_mac,
)
from stubserver.testing._homeserver import choose_auth_flow, room_events

#: A reply: (status, JSON body).
Reply = tuple[int, Any]


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None


@dataclass
class FakeHomeserver:
    """Answers with ``answer(seen)``; records every request in ``seen``."""

    answer: Callable[[Seen], Reply]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def fake() -> Iterator[FakeHomeserver]:
    """A fake homeserver whose ``answer`` the test sets."""
    state = FakeHomeserver(answer=lambda seen: (404, {"errcode": "M_UNRECOGNIZED"}))

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            seen = Seen(
                self.command,
                parts.path,
                parse_qs(parts.query),
                _parsed(raw, self.headers.get("Content-Type")),
                self.headers.get("Authorization"),
            )
            state.seen.append(seen)
            status, body = state.answer(seen)
            raw_answer = isinstance(body, bytes)
            data = body if raw_answer else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "image/png" if raw_answer else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _parsed(raw: bytes, content_type: str | None) -> Any:
    """A request body: JSON parsed, other types (media) as bytes."""
    if not raw:
        return None
    return json.loads(raw) if content_type == "application/json" else raw


def test_exchange_sends_and_answers_raw_bytes(fake: FakeHomeserver) -> None:
    """``exchange`` sends the bytes as they are with their content type and the token, and
    answers the status, the headers (names lower-cased) and the body's bytes."""
    fake.answer = lambda seen: (201, b"\x89PNG\x00\xff")
    answer = Homeserver(fake.url, allow_plain_http=True).exchange(
        "POST", "/upload", b"\x00\xff", content_type="image/png", access_token="tok"
    )
    assert (answer.status, answer.data) == (201, b"\x89PNG\x00\xff")
    assert answer.headers["content-type"] == "image/png"
    assert (fake.seen[0].body, fake.seen[0].authorization) == (b"\x00\xff", "Bearer tok")


def test_registration_mac_is_synapses_hmac_sha1() -> None:
    """HMAC-SHA1 over nonce, user, password and admin flag, NUL-separated (vectors: openssl)."""
    assert registration_mac("shh", "abcdef", "alice", "secret-pw") == (
        "7089cb762885037025226bffc008d3571cf0fd75"
    )
    assert registration_mac("shh", "abcdef", "alice", "secret-pw", admin=True) == (
        "62b111ef29fe963a908ad48b3475c37ee0e43154"
    )


def test_shared_secret_registration_fetches_a_nonce_and_signs_it(fake: FakeHomeserver) -> None:
    """GET the nonce, then POST it with the MAC; the answer's user is the new user."""

    def answer(seen: Seen) -> Reply:
        if seen.method == "GET":
            return 200, {"nonce": "abcdef"}
        return 200, {"user_id": "@alice:hs.test", "access_token": "tok", "device_id": "D"}

    fake.answer = answer
    homeserver = Homeserver(fake.url)
    user = homeserver.register_with_shared_secret("shh", "alice", "secret-pw")
    assert [(s.method, s.path) for s in fake.seen] == [
        ("GET", "/_synapse/admin/v1/register"),
        ("POST", "/_synapse/admin/v1/register"),
    ]
    assert fake.seen[1].body == {
        "nonce": "abcdef",
        "username": "alice",
        "password": "secret-pw",
        "admin": False,
        "mac": "7089cb762885037025226bffc008d3571cf0fd75",
    }
    assert (user.user_id, user.access_token, user.device_id) == ("@alice:hs.test", "tok", "D")
    assert homeserver.server_name == "hs.test"


def test_registration_completes_the_token_stage_of_the_session(fake: FakeHomeserver) -> None:
    """A 401 offering m.login.registration_token: the retry carries the token and session."""

    def answer(seen: Seen) -> Reply:
        auth = (seen.body or {}).get("auth")
        if auth is None:
            return 401, {
                "session": "S1",
                "flows": [
                    {"stages": ["m.login.email.identity"]},
                    {"stages": ["m.login.registration_token"]},
                ],
            }
        return 200, {"user_id": "@bob:hs.test", "access_token": "t2"}

    fake.answer = answer
    user = Homeserver(fake.url).register("bob", "pw", registration_token="letmein")
    assert fake.seen[1].body["auth"] == {
        "type": "m.login.registration_token",
        "session": "S1",
        "token": "letmein",
    }
    assert fake.seen[1].body["username"] == "bob"
    assert user.user_id == "@bob:hs.test"


def test_registration_closed_raises_the_homeservers_answer(fake: FakeHomeserver) -> None:
    """A 403 M_FORBIDDEN from /register is a HomeserverError carrying the errcode."""
    fake.answer = lambda seen: (403, {"errcode": "M_FORBIDDEN", "error": "closed"})
    with pytest.raises(HomeserverError) as caught:
        Homeserver(fake.url).register()
    assert (caught.value.status, caught.value.errcode) == (403, "M_FORBIDDEN")


def test_sync_remembers_next_batch_per_user(fake: FakeHomeserver) -> None:
    """Each sync continues from the last one's next_batch; users keep their own tokens."""

    def answer(seen: Seen) -> Reply:
        if seen.path.endswith("/whoami"):
            return 200, {"user_id": f"@{seen.authorization[-1]}:hs.test"}  # type: ignore[index]
        since = seen.query.get("since", ["s0"])[0]
        return 200, {"next_batch": f"{since}+", "rooms": {}}

    fake.answer = answer
    homeserver = Homeserver(fake.url, server_name="hs.test")
    one, two = homeserver.user_with_token("tok-a"), homeserver.user_with_token("tok-b")
    one.sync()
    one.sync()
    two.sync()
    one.sync(since="x")
    syncs = [(s.authorization, s.query.get("since")) for s in fake.seen if s.path.endswith("/sync")]
    assert syncs == [
        ("Bearer tok-a", None),
        ("Bearer tok-a", ["s0+"]),
        ("Bearer tok-b", None),
        ("Bearer tok-a", ["x"]),
    ]
    assert (one.since, two.since) == ("x+", "s0+")


def test_wait_for_event_finds_it_in_a_later_sync(fake: FakeHomeserver) -> None:
    """The client syncs until the event shows up in the room's timeline."""
    timeline = [{"event_id": "$1", "type": "m.room.message", "sender": "@x:b"}]

    def answer(seen: Seen) -> Reply:
        if "since" not in seen.query:
            return 200, {"next_batch": "s1", "rooms": {}}
        room = {"timeline": {"events": timeline}}
        return 200, {"next_batch": "s2", "rooms": {"join": {"!r:hs": room}}}

    fake.answer = answer
    user = HomeserverUser(Homeserver(fake.url, server_name="hs"), "@u:hs", "t", None)
    assert user.wait_for_event("!r:hs", type="m.room.message", timeout=10)["event_id"] == "$1"


def test_wait_for_event_timeout_lists_what_came(fake: FakeHomeserver) -> None:
    """On timeout, the error lists the room's events that did arrive."""
    other = {"event_id": "$other", "type": "m.room.topic", "sender": "@x:b"}
    fake.answer = lambda seen: (
        200,
        {"next_batch": "s", "rooms": {"join": {"!r:hs": {"timeline": {"events": [other]}}}}},
    )
    user = HomeserverUser(Homeserver(fake.url, server_name="hs"), "@u:hs", "t", None)
    with pytest.raises(WaitTimeout) as caught:
        user.wait_for_event("!r:hs", type="m.room.message", timeout=0.2)
    assert "$other m.room.topic from @x:b" in str(caught.value)


def test_join_sends_via_and_server_name(fake: FakeHomeserver) -> None:
    """A join through other servers names them as ``via`` (and the older ``server_name``)."""
    fake.answer = lambda seen: (200, {"room_id": "!r:a.test"})
    user = HomeserverUser(Homeserver(fake.url, server_name="hs"), "@u:hs", "t", None)
    assert user.join("#room:a.test", via=["a.test:8448"]) == "!r:a.test"
    assert fake.seen[0].path == "/_matrix/client/v3/join/%23room%3Aa.test"
    assert fake.seen[0].query == {"via": ["a.test:8448"], "server_name": ["a.test:8448"]}


def test_plain_http_is_refused_beyond_loopback() -> None:
    """Access tokens do not cross the network in clear: http:// is for loopback only."""
    with pytest.raises(ValueError, match="loopback"):
        Homeserver("http://hs.example.org:8008")
    assert Homeserver("http://localhost:8008").endpoint.tls is None
    assert Homeserver("https://hs.example.org").endpoint.tls is not None


def test_choose_auth_flow_skips_flows_with_stages_we_cannot_do() -> None:
    """Only flows made of dummy and registration-token stages are chosen."""
    flows = [{"stages": ["m.login.recaptcha", "m.login.dummy"]}, {"stages": ["m.login.dummy"]}]
    assert choose_auth_flow(flows) == ["m.login.dummy"]
    assert choose_auth_flow([{"stages": ["m.login.email.identity"]}]) is None


def test_room_events_reads_state_timeline_and_invites() -> None:
    """A room's events are found in join and leave sections, and invite_state."""
    answer = {
        "rooms": {
            "join": {
                "!r": {
                    "state": {"events": [{"event_id": "$s"}]},
                    "timeline": {"events": [{"event_id": "$t"}]},
                }
            },
            "invite": {"!r": {"invite_state": {"events": [{"event_id": "$i"}]}}},
        }
    }
    assert [e["event_id"] for e in room_events(answer, "!r")] == ["$s", "$t", "$i"]
    assert room_events(answer, "!other") == []
