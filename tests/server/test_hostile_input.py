"""Issue 12, row 6: ordinary hostile input never gets a non-JSON answer or loses a log line.

Raw bytes go through a real ``LimitedSite`` and ``FederationRouter`` over a StringTransport,
with the request log as the router's observer (its writer a synchronous fake thread).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from stubserver.server.connections import ConnectionCounter
from stubserver.server.limits import (
    LimitedHTTPChannel,
    LimitedSite,
    ServerLimits,
)
from stubserver.server.request_log import RequestLog
from stubserver.server.router import (
    FederationRouter,
    JsonResponse,
    Route,
    query_arg,
    read_json_body,
    request_annotations,
)
from tests.support import flush_logged_errors

#: Within this long of the answer a line must be in the file (issue 12), in seconds.
LOG_LATENCY_BOUND_SECONDS = 0.05


def run_now(f: Callable[[], None]) -> Deferred[None]:
    """A thread runner that runs the write at once (a fake for the worker thread)."""
    f()
    return succeed(None)


def echo_key_id(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
    """Echoes a key ID from the path, as a key endpoint would in an error."""
    return JsonResponse(404, {"errcode": "M_NOT_FOUND", "error": f"no key {params['keyId']}"})


def echo_body(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
    """Echoes the JSON body (and leaves it for the log, as the X-Matrix filter does)."""
    body = read_json_body(request)
    request_annotations(request)["content"] = body
    return JsonResponse(200, {"echo": body})


def parse_ts(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
    """Parses an integer query parameter naively (int() raises on a Unicode digit)."""
    raw = query_arg(request, "minimum_valid_until_ts") or "0"
    return JsonResponse(200, {"ts": int(raw) if raw.isdigit() else 0})


def fail_later(request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
    """An asynchronous handler whose Deferred fails with an unexpected exception."""
    return fail(ValueError("later"))


def echo_header(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
    """Answers with a header value outside latin-1 (from the query)."""
    return JsonResponse(200, {}, {"X-Echo": query_arg(request, "v") or ""})


class Harness:
    """A site with the routes above and the request log observing it."""

    def __init__(self, filters: tuple[Any, ...] = ()) -> None:
        self.clock = MemoryReactorClock()  # type: ignore[no-untyped-call]
        self.path = Path(tempfile.mkdtemp()) / "requests.jsonl"
        self.log = RequestLog(self.path, self.clock, run_now)
        router = FederationRouter(
            [
                Route("GET", "/_matrix/key/v2/server/{keyId}", echo_key_id),
                Route("POST", "/_matrix/echo", echo_body),
                Route("GET", "/_matrix/key/v2/query/x", parse_ts),
                Route("GET", "/_matrix/later", fail_later),
                Route("GET", "/_matrix/header", echo_header),
            ],
            filters=filters,
            observers=[self.log],
            clock=self.clock,
            handler_deadline_seconds=60,
        )
        self.site = LimitedSite(router, self.clock, ServerLimits(), ConnectionCounter(10))

    def exchange(self, data: bytes) -> tuple[int, bytes, Any]:
        """Send ``data`` on a new connection: the status, the raw head and the JSON body."""
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))  # type: ignore[no-untyped-call]
        assert isinstance(channel, LimitedHTTPChannel)
        transport = StringTransport()  # type: ignore[no-untyped-call]
        channel.makeConnection(transport)  # type: ignore[no-untyped-call]
        channel.dataReceived(data)
        raw: bytes = transport.value()  # type: ignore[no-untyped-call]
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), head, json.loads(body)

    def lines(self) -> list[dict[str, Any]]:
        """The request log's lines so far (after the flush delay)."""
        self.clock.advance(LOG_LATENCY_BOUND_SECONDS)
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_bytes().splitlines()]


def post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


class HostileInputTests(SynchronousTestCase):
    CASES: tuple[tuple[str, bytes, int], ...] = (
        (
            "lone surrogate escaped in a path",
            b"GET /_matrix/key/v2/server/%ED%A0%80 HTTP/1.1\r\n\r\n",
            400,
        ),
        (
            "lone surrogate raw in a path",
            b"GET /_matrix/key/v2/server/\xed\xa0\x80 HTTP/1.1\r\n\r\n",
            400,
        ),
        (
            "key ID with an escaped surrogate pair half",
            b"GET /_matrix/key/v2/server/ed25519:%ED%B0%80 HTTP/1.1\r\n\r\n",
            400,
        ),
        (
            "lone surrogate in a query",
            b"GET /_matrix/key/v2/query/x?minimum_valid_until_ts=%ED%A0%80 HTTP/1.1\r\n\r\n",
            400,
        ),
        (
            # A handler with a naive int(): the safety net answers JSON 500 and logs it
            # (the notary's own parser answers 400, tests/server/test_federation.py).
            "a Unicode digit in an integer",
            b"GET /_matrix/key/v2/query/x?minimum_valid_until_ts=%C2%B2 HTTP/1.1\r\n\r\n",
            500,
        ),
        (
            "lone surrogate escape in a body (refused by the strict parser)",
            post(b"/_matrix/echo", b'{"a":"\\ud800"}'),
            400,
        ),
        ("a failing asynchronous handler", b"GET /_matrix/later HTTP/1.1\r\n\r\n", 500),
        (
            "a header value outside latin-1",
            b"GET /_matrix/header?v=%E2%82%AC HTTP/1.1\r\n\r\n",
            500,
        ),
        ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\n\r\n", 400),
    )

    def test_every_answer_is_json_and_logged(self) -> None:
        """Each hostile request gets a JSON answer with its status; each /_matrix/ one is logged.

        (Raw non-ASCII bytes in the request line are refused by the HTTP parser, 400 before
        any request exists, like every framing error: nothing to log.)

        An unexpected exception is 500 ``M_UNKNOWN`` (JSON, never Twisted's HTML page); its
        log line carries the status sent.
        """
        h = Harness()
        logged = 0
        for name, data, expected in self.CASES:
            status, head, body = h.exchange(data)
            assert status == expected, name
            assert b"Content-Type: application/json" in head, name
            assert set(body) == {"errcode", "error"}, name
            if expected == 500:
                assert body["errcode"] == "M_UNKNOWN", name
            if b" /_matrix/" in data and b"\xed" not in data:
                logged += 1
                lines = h.lines()
                assert len(lines) == logged, name
                assert lines[-1]["status"] == expected, name
        flush_logged_errors(self, ValueError, UnicodeEncodeError)

    def test_surrogate_in_a_body_is_refused_and_logged(self) -> None:
        """A body with a lone surrogate is refused 400 M_BAD_JSON, and its line is not dropped.

        (Content the log cannot encode is escaped, not dropped: test_request_log.py.)
        """
        h = Harness()
        status, _, body = h.exchange(post(b"/_matrix/echo", b'{"a":"\\ud800"}'))
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")
        (line,) = h.lines()
        assert line["status"] == 400

    def test_filter_that_raises_is_json_500_and_logged(self) -> None:
        """A filter raising an unexpected exception: JSON 500 M_UNKNOWN, and the line logged."""

        def broken(request: IRequest) -> None:
            raise KeyError("filter")

        h = Harness(filters=(broken,))
        status, _, body = h.exchange(b"GET /_matrix/later HTTP/1.1\r\n\r\n")
        assert (status, body["errcode"]) == (500, "M_UNKNOWN")
        assert [line["status"] for line in h.lines()] == [500]
        assert len(flush_logged_errors(self, KeyError)) == 1

    def test_log_line_within_the_bound(self) -> None:
        """Under light load the line is in the file once the clock passes 50 ms (not 200 ms)."""
        h = Harness()
        h.exchange(b"GET /_matrix/key/v2/query/x HTTP/1.1\r\n\r\n")
        assert not h.path.exists()
        h.clock.advance(LOG_LATENCY_BOUND_SECONDS)
        assert h.path.read_bytes().count(b"\n") == 1
