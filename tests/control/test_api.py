"""The control API in memory: a real router over a fake RoomControl, reached by StubTreq."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest

from stubserver.app.site import CONTROL_HANDLER_DEADLINE_SECONDS, version_route
from stubserver.control.api import MAX_WAIT_MS, control_routes
from stubserver.control.feed import RequestFeed
from stubserver.rooms.errors import NotAllowed, RemoteRefused, RemoteUnreachable, UnknownRoom
from stubserver.server.router import FederationRouter, MatrixError, request_annotations
from tests.control.fakes import FakeRoomControl
from tests.support import has_fired, result_now, stub_treq

TOKEN = "the-token"
BASE = "http://127.0.0.1:8009/_stubserver/v1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Harness:
    """The control routes over a fake service, and a federation listener feeding requests."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.control = FakeRoomControl()
        self.feed = RequestFeed(self.clock)
        self.router = FederationRouter(
            control_routes(self.control, TOKEN, self.feed),
            clock=self.clock,
            handler_deadline_seconds=CONTROL_HANDLER_DEADLINE_SECONDS,
        )
        self.stub = stub_treq(self.router)

        def annotate(request: Any) -> None:
            request_annotations(request).update(
                origin="b.test", authenticated=True, auth_error=None, content=None
            )

        self.federation = stub_treq(
            FederationRouter([version_route()], filters=[annotate], observers=[self.feed])
        )

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Deferred[Any]:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        return self.stub.request(  # type: ignore[no-any-return]
            method, BASE + path, data=data, headers=AUTH if headers is None else headers
        )

    def answer(self, d: Deferred[Any]) -> tuple[int, Any]:
        self.stub.flush()
        response = result_now(d)
        return response.code, result_now(self.stub.json_content(response))

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return self.answer(self.request(method, path, body, **kwargs))

    def federation_request(self) -> None:
        result_now(self.federation.get("https://a.test/_matrix/federation/v1/version"))


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["none", "wrong", "longer", "not bearer", "no scheme"],
)
def test_requests_without_the_token_are_refused(headers: dict[str, str]) -> None:
    """Without ``Bearer <control_token>`` the answer is 401 M_UNKNOWN_TOKEN and the service
    is not called."""
    h = Harness()
    status, body = h.call("GET", "/status", headers=headers)
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert h.control.calls == []


def test_the_token_opens_every_endpoint() -> None:
    """With the token, status answers what the service says."""
    h = Harness()
    h.control.answers["status"] = {"server_name": "a.test", "room_versions": ["12"], "rooms": []}
    assert h.call("GET", "/status") == (200, h.control.answers["status"])


# --- each endpoint calls the service -----------------------------------------------------------


def test_create_room_passes_every_field() -> None:
    """POST /rooms calls create_room with the body's fields and answers its result."""
    h = Harness()
    h.control.answers["create_room"] = {
        "room_id": "!r:a.test",
        "room_version": "12",
        "event_ids": ["$a"],
    }
    body = {
        "creator": "alice",
        "room_version": "11",
        "preset": "private_chat",
        "alias": "lobby",
        "name": "Lobby",
    }
    assert h.call("POST", "/rooms", body) == (200, h.control.answers["create_room"])
    assert h.control.calls == [
        (
            "create_room",
            ("alice",),
            {"room_version": "11", "preset": "private_chat", "alias": "lobby", "name": "Lobby"},
        )
    ]


def test_room_segments_are_percent_decoded() -> None:
    """An alias sent as %23lobby%3Ab.test reaches the service as #lobby:b.test."""
    h = Harness()
    status, _ = h.call(
        "POST", "/rooms/%23lobby%3Ab.test/join", {"user": "alice", "via": ["b.test"]}
    )
    assert status == 200
    assert h.control.calls == [("join", ("#lobby:b.test", "alice", ["b.test"]), {})]


@pytest.mark.parametrize(
    ("method", "path", "body", "call"),
    [
        ("POST", "/rooms/!r:a.test/join", {"user": "al"}, ("join", ("!r:a.test", "al", []), {})),
        ("POST", "/rooms/!r:a.test/leave", {"user": "al"}, ("leave", ("!r:a.test", "al"), {})),
        (
            "POST",
            "/rooms/!r:a.test/invite",
            {"sender": "al", "user_id": "@b:b.test"},
            ("invite", ("!r:a.test", "al", "@b:b.test"), {}),
        ),
        (
            "POST",
            "/rooms/!r:a.test/edu",
            {"edu_type": "m.typing", "content": {"typing": True}},
            ("send_edu", ("!r:a.test", "m.typing", {"typing": True}), {}),
        ),
        (
            "PUT",
            "/users/alice/devices/D%2F1",
            {"keys": {"k": 1}, "display_name": "phone"},
            ("put_device", ("alice", "D/1"), {"keys": {"k": 1}, "display_name": "phone"}),
        ),
        ("GET", "/rooms/!r:a.test", None, ("room_info", ("!r:a.test",), {})),
        (
            "GET",
            "/rooms/!r:a.test/events?from=3&wait_ms=0",
            None,
            ("events", ("!r:a.test", 3, 0), {}),
        ),
        ("GET", "/edus?from=2", None, ("edus", (2, 0), {})),
        (
            "POST",
            "/rooms/!r:a.test/serving",
            {"event_ids": ["$a", "$b"], "served": False},
            ("set_served", ("!r:a.test", ["$a", "$b"], False), {}),
        ),
        (
            "POST",
            "/rooms/!r:a.test/plant",
            {"sender": "al", "type": "m.room.message", "content_json": '{"x":1.5}'},
            ("plant", ("!r:a.test", "al", "m.room.message", '{"x":1.5}'), {}),
        ),
        (
            "POST",
            "/rooms/!r:a.test/resend",
            {"event_id": "$a", "destinations": ["b.test"]},
            ("resend", ("!r:a.test", "$a", ["b.test"]), {}),
        ),
        (
            "POST",
            "/rooms/!r:a.test/resend",
            {"event_id": "$a"},
            ("resend", ("!r:a.test", "$a", None), {}),
        ),
        (
            "POST",
            "/federation/request",
            {"destination": "b.test", "method": "get", "path": "/_matrix/federation/v1/version"},
            ("federation_request", ("b.test", "GET", "/_matrix/federation/v1/version", None), {}),
        ),
    ],
    ids=[
        "join",
        "leave",
        "invite",
        "edu",
        "device",
        "room",
        "events",
        "edus",
        "serving",
        "plant",
        "resend",
        "resend to all",
        "federation request",
    ],
)
def test_endpoints_call_the_service(
    method: str, path: str, body: Any, call: tuple[Any, ...]
) -> None:
    """Each endpoint calls its service method with the body's and query's values."""
    h = Harness()
    status, answer = h.call(method, path, body)
    assert status == 200, answer
    assert h.control.calls == [call]


def test_send_passes_the_negative_test_overrides() -> None:
    """POST send carries state_key, prev_events, auth_events, origin_server_ts and tamper."""
    h = Harness()
    body = {
        "sender": "al",
        "type": "m.room.name",
        "content": {"name": "x"},
        "state_key": "",
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "origin_server_ts": 5,
        "tamper": "signature",
    }
    assert h.call("POST", "/rooms/!r:a.test/send", body)[0] == 200
    assert h.control.calls == [
        (
            "send",
            ("!r:a.test", "al", "m.room.name", {"name": "x"}),
            {
                "state_key": "",
                "prev_events": ["$p"],
                "auth_events": ["$a"],
                "origin_server_ts": 5,
                "tamper": "signature",
            },
        )
    ]


def test_send_passes_destinations() -> None:
    """POST send carries destinations (an empty list withholds the event)."""
    h = Harness()
    body = {"sender": "al", "type": "m.room.message", "content": {}, "destinations": []}
    assert h.call("POST", "/rooms/!r:a.test/send", body)[0] == 200
    assert h.control.calls == [
        (
            "send",
            ("!r:a.test", "al", "m.room.message", {}),
            {
                "state_key": None,
                "prev_events": None,
                "auth_events": None,
                "origin_server_ts": None,
                "tamper": None,
                "destinations": [],
            },
        )
    ]


def test_send_join_extra_state_passes_its_event_and_tamper() -> None:
    """POST send_join_extra_state carries sender, type, content, state_key (empty too)
    and each tamper kind, including the two ``send`` does not take."""
    h = Harness()
    for tamper in ("unsigned", "unknown_key", "signature", "content", None):
        body = {"sender": "al", "type": "m.room.name", "content": {"name": "x"}, "state_key": ""}
        if tamper is not None:
            body["tamper"] = tamper
        assert h.call("POST", "/rooms/!r:a.test/send_join_extra_state", body)[0] == 200
    assert h.control.calls[0] == (
        "send_join_extra_state",
        ("!r:a.test", "al", "m.room.name", {"name": "x"}),
        {"state_key": "", "tamper": "unsigned"},
    )
    assert [c[2]["tamper"] for c in h.control.calls] == [
        "unsigned",
        "unknown_key",
        "signature",
        "content",
        None,
    ]


def test_wait_ms_is_clamped() -> None:
    """A wait_ms above the bound reaches the service as MAX_WAIT_MS."""
    h = Harness()
    h.call("GET", "/edus?wait_ms=999999999")
    assert h.control.calls == [("edus", (0, MAX_WAIT_MS), {})]


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "errcode", "words"),
    [
        ("/rooms", b"not json", "M_NOT_JSON", ""),
        ("/rooms", [], "M_BAD_JSON", "JSON object"),
        ("/rooms", {}, "M_MISSING_PARAM", "'creator'"),
        ("/rooms", {"creator": 5}, "M_INVALID_PARAM", "'creator'"),
        ("/rooms", {"creator": "a", "preset": "secret"}, "M_INVALID_PARAM", "'preset'"),
        ("/rooms", {"creator": "a", "colour": "red"}, "M_BAD_JSON", "'colour'"),
        ("/rooms/!r:a.test/join", {"user": "a", "via": "b.test"}, "M_INVALID_PARAM", "'via'"),
        (
            "/rooms/!r:a.test/invite",
            {"sender": "a", "user_id": "bob"},
            "M_INVALID_PARAM",
            "'user_id'",
        ),
        ("/rooms/!r:a.test/send", {"sender": "a", "type": "t"}, "M_MISSING_PARAM", "'content'"),
        (
            "/rooms/!r:a.test/send",
            {"sender": "a", "type": "t", "content": []},
            "M_INVALID_PARAM",
            "'content'",
        ),
        (
            "/rooms/!r:a.test/send",
            {"sender": "a", "type": "t", "content": {}, "tamper": "x"},
            "M_INVALID_PARAM",
            "'tamper'",
        ),
        (
            "/rooms/!r:a.test/send",
            {"sender": "a", "type": "t", "content": {}, "tamper": "unsigned"},
            "M_INVALID_PARAM",
            "'tamper'",
        ),
        (
            "/rooms/!r:a.test/send_join_extra_state",
            {"sender": "a", "type": "t", "content": {}, "state_key": "", "tamper": "x"},
            "M_INVALID_PARAM",
            "'tamper'",
        ),
        (
            "/rooms/!r:a.test/send_join_extra_state",
            {"sender": "a", "type": "t", "content": {}},
            "M_INVALID_PARAM",
            "'state_key'",
        ),
        (
            "/rooms/!r:a.test/send_join_extra_state",
            {"sender": "a", "type": "t", "content": {}, "state_key": "", "prev_events": []},
            "M_BAD_JSON",
            "'prev_events'",
        ),
        (
            "/rooms/!r:a.test/send",
            {"sender": "a", "type": "t", "content": {}, "origin_server_ts": True},
            "M_INVALID_PARAM",
            "'origin_server_ts'",
        ),
        (
            "/rooms/!r:a.test/send",
            {"sender": "a", "type": "t", "content": {}, "state_key": 1},
            "M_INVALID_PARAM",
            "'state_key'",
        ),
        (
            "/rooms/!r:a.test/send",
            {"sender": "a", "type": "t", "content": {}, "prev_events": ["$x"] * 101},
            "M_INVALID_PARAM",
            "'prev_events'",
        ),
        ("/rooms/r/leave", {"user": "a"}, "M_INVALID_PARAM", "ROOM"),
        ("/rooms/!r:a.test/serving", {"served": False}, "M_MISSING_PARAM", "'event_ids'"),
        (
            "/rooms/!r:a.test/serving",
            {"event_ids": ["$a"], "served": "no"},
            "M_INVALID_PARAM",
            "'served'",
        ),
        (
            "/rooms/!r:a.test/plant",
            {"sender": "a", "type": "t", "content_json": {"x": 1}},
            "M_INVALID_PARAM",
            "'content_json'",
        ),
        ("/rooms/!r:a.test/resend", {}, "M_MISSING_PARAM", "'event_id'"),
        (
            "/federation/request",
            {"destination": "b", "method": "BREW", "path": "/"},
            "M_INVALID_PARAM",
            "'method'",
        ),
        (
            "/federation/request",
            {"destination": "b", "method": "GET", "path": "x"},
            "M_INVALID_PARAM",
            "'path'",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_key(path: str, body: Any, errcode: str, words: str) -> None:
    """A bad body is answered 400 with the errcode and a message naming the key; the
    service is not called."""
    h = Harness()
    status, answer = h.call("POST", path, body)
    assert (status, answer["errcode"]) == (400, errcode), answer
    assert words in answer["error"]
    assert h.control.calls == []


@pytest.mark.parametrize("query", ["from=-1", "from=x", "wait_ms=1.5", "from=" + "9" * 17])
def test_bad_query_parameters_are_400(query: str) -> None:
    """from and wait_ms must be non-negative integers."""
    h = Harness()
    status, answer = h.call("GET", f"/edus?{query}")
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")


# --- errors from the service -------------------------------------------------------------------


def test_matrix_errors_pass_through() -> None:
    """A MatrixError from the service is answered as it is, raised or failed."""
    h = Harness()
    h.control.answers["room_info"] = MatrixError(404, "M_NOT_FOUND", "no such room")
    h.control.answers["leave"] = (MatrixError(403, "M_FORBIDDEN", "not in room"),)
    assert h.call("GET", "/rooms/!r:a.test") == (
        404,
        {"errcode": "M_NOT_FOUND", "error": "no such room"},
    )
    assert h.call("POST", "/rooms/!r:a.test/leave", {"user": "a"}) == (
        403,
        {"errcode": "M_FORBIDDEN", "error": "not in room"},
    )


def test_room_refusals_are_answered_through_the_one_mapping() -> None:
    """A typed room refusal from the service (raised or failed) is answered with the
    status and errcode of rooms.http_errors, its text the message."""
    h = Harness()
    h.control.answers["room_info"] = UnknownRoom("Unknown room '!r:a.test'")
    h.control.answers["leave"] = (NotAllowed("not in room"),)
    assert h.call("GET", "/rooms/!r:a.test") == (
        404,
        {"errcode": "M_NOT_FOUND", "error": "Unknown room '!r:a.test'"},
    )
    assert h.call("POST", "/rooms/!r:a.test/leave", {"user": "a"}) == (
        403,
        {"errcode": "M_FORBIDDEN", "error": "not in room"},
    )


def test_a_remote_refusal_is_502_with_its_answer() -> None:
    """RemoteRefused is 502 with remote_status and remote_body."""
    h = Harness()
    refusal = {"errcode": "M_FORBIDDEN", "error": "You are not invited to this room."}
    h.control.answers["join"] = (RemoteRefused("b.test", 403, refusal, "make_join"),)
    status, body = h.call("POST", "/rooms/!r:b.test/join", {"user": "a", "via": ["b.test"]})
    assert status == 502
    assert (body["errcode"], body["remote_status"], body["remote_body"]) == (
        "M_UNKNOWN",
        403,
        refusal,
    )
    assert "b.test refused make_join" in body["error"]


def test_an_unreachable_remote_is_502_without_remote_fields() -> None:
    """RemoteUnreachable is 502 M_UNKNOWN naming the server, with no remote fields."""
    h = Harness()
    h.control.answers["invite"] = RemoteUnreachable("b.test", "connection refused")
    status, body = h.call(
        "POST", "/rooms/!r:a.test/invite", {"sender": "a", "user_id": "@b:b.test"}
    )
    assert status == 502
    assert body == {
        "errcode": "M_UNKNOWN",
        "error": "b.test could not be reached: connection refused",
    }


# --- the request feed ---------------------------------------------------------------------------


def test_requests_lists_inbound_federation_requests_as_logged() -> None:
    """GET /requests answers the request log's objects of the federation listener."""
    h = Harness()
    h.federation_request()
    status, body = h.call("GET", "/requests")
    assert status == 200
    assert body["next"] == 1
    assert body["requests"] == [
        {
            "ts": 1_000_000,
            "method": "GET",
            "uri": "/_matrix/federation/v1/version",
            "origin": "b.test",
            "authenticated": True,
            "auth_error": None,
            "status": 200,
            "content": None,
        }
    ]
    assert h.call("GET", "/requests?from=1")[1] == {"requests": [], "next": 1}


def test_requests_long_poll_answers_when_one_arrives() -> None:
    """A read with wait_ms waits, and answers as soon as a request is observed."""
    h = Harness()
    d = h.request("GET", "/requests?from=0&wait_ms=5000")
    h.stub.flush()
    assert not has_fired(d)
    h.federation_request()
    status, body = h.answer(d)
    assert (status, len(body["requests"]), body["next"]) == (200, 1, 1)


def test_requests_long_poll_answers_empty_at_its_deadline() -> None:
    """With nothing new, the read answers empty when wait_ms pass on the clock."""
    h = Harness()
    d = h.request("GET", "/requests?from=0&wait_ms=5000")
    h.clock.advance(4.9)
    h.stub.flush()
    assert not has_fired(d)
    h.clock.advance(0.1)
    assert h.answer(d) == (200, {"requests": [], "next": 0})


def test_a_client_going_away_leaves_no_waiter() -> None:
    """When the client disconnects during a long poll, its waiter and timer are gone."""
    h = Harness()
    request: Any = DummyRequest([b""])
    request.path = b"/_stubserver/v1/requests"
    request.uri = b"/_stubserver/v1/requests?wait_ms=5000"
    request.addArg(b"wait_ms", b"5000")
    request.requestHeaders.addRawHeader(b"authorization", f"Bearer {TOKEN}".encode())
    h.router.render(request)
    assert h.feed.feed.waiting == 1
    request.processingFailed(Failure(ConnectionDone()))  # type: ignore[no-untyped-call]
    assert h.feed.feed.waiting == 0
    poll_deadline = h.clock.seconds() + 5
    assert [c for c in h.clock.getDelayedCalls() if c.getTime() == poll_deadline] == []


def test_a_device_whose_keys_are_not_an_object_is_refused() -> None:
    """put_device: ``keys`` that are not an object are 400 M_INVALID_PARAM, an unknown key
    M_BAD_JSON, and the service is not called."""
    h = Harness()
    status, answer = h.call("PUT", "/users/alice/devices/D1", {"keys": ["k"]})
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    status, answer = h.call("PUT", "/users/alice/devices/D1", {"key": {}})
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    assert h.control.calls == []
