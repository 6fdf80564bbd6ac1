"""Inbound limits (issue 7), driven with raw bytes through an in-memory transport and clock."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from stubserver.server.connections import (
    MAX_CONCURRENT_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    ConnectionCounter,
)
from stubserver.server.limits import (
    ABORT_GRACE_SECONDS,
    HANDLER_DEADLINE_SECONDS,
    IDLE_TIMEOUT_SECONDS,
    MAX_REQUEST_LINE_BYTES,
    REQUEST_READ_DEADLINE_SECONDS,
    HttpDate,
    LimitedHTTPChannel,
    LimitedSite,
    ServerLimits,
)
from stubserver.server.router import (
    MAX_REQUEST_BODY_BYTES,
    SERVER_HEADER,
    FederationRouter,
    JsonResponse,
    Route,
    read_json_body,
)
from tests.support import flush_logged_errors

VERSION_REQUEST = b"GET /version HTTP/1.1\r\nHost: a\r\n\r\n"


def post(body: bytes, *, path: bytes = b"/json", headers: bytes = b"") -> bytes:
    """A POST with a Content-Length."""
    return (
        b"POST "
        + path
        + b" HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n" % len(body)
        + headers
        + b"\r\n"
        + body
    )


def responses(data: bytes) -> list[tuple[int, Any]]:
    """The (status, JSON body) of each HTTP/1.1 response in ``data``."""
    found = []
    rest = data
    while rest.startswith(b"HTTP/1.1 "):
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        length = int(headers.get(b"Content-Length", b"0"))
        body, rest = rest[:length], rest[length:]
        found.append((status, json.loads(body) if body else None))
    assert rest == b"", rest
    return found


class Harness:
    """A LimitedSite with a few routes, and connections to it over StringTransports."""

    def __init__(self, limits: ServerLimits | None = None) -> None:
        self.clock = MemoryReactorClock()  # type: ignore[no-untyped-call]
        self.limits = limits or ServerLimits()
        self.handled: list[bytes] = []
        self.pending: list[Deferred[JsonResponse]] = []
        self.args: list[dict[bytes, list[bytes]]] = []
        router = FederationRouter(
            [
                Route("GET", "/version", self._version),
                Route("POST", "/json", self._json),
                Route("POST", "/form", self._form),
                Route("GET", "/never", self._never),
                Route("PUT", "/_matrix/federation/v1/send/{txnId}", self._json),
            ],
            clock=self.clock,
            handler_deadline_seconds=self.limits.handler_deadline_seconds,
        )
        self.connections = ConnectionCounter(
            self.limits.max_connections, self.limits.max_connections_per_address
        )
        self.site = LimitedSite(router, self.clock, self.limits, self.connections)

    def _version(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        self.handled.append(request.path)
        return JsonResponse(200, {"v": 1})

    def _json(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        self.handled.append(request.path)
        return JsonResponse(200, {"got": read_json_body(request)})

    def _form(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        self.handled.append(request.path)
        self.args.append(dict(request.args))
        return JsonResponse(200, {})

    def _never(self, request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
        self.handled.append(request.path)
        d: Deferred[JsonResponse] = Deferred()
        self.pending.append(d)
        return d

    def connect(self, host: str = "127.0.0.1") -> tuple[LimitedHTTPChannel, StringTransport]:
        """A new connection from ``host``, made."""
        return connect(self.site, host)


def connect(site: LimitedSite, host: str) -> tuple[LimitedHTTPChannel, StringTransport]:
    """A new connection to ``site`` from ``host``, made."""
    peer = IPv4Address("TCP", host, 40000)
    channel = site.buildProtocol(peer)  # type: ignore[no-untyped-call]
    assert isinstance(channel, LimitedHTTPChannel)
    transport = StringTransport(peerAddress=peer)  # type: ignore[no-untyped-call]
    channel.makeConnection(transport)  # type: ignore[no-untyped-call]
    return channel, transport


def sent(transport: StringTransport) -> bytes:
    """Everything written to ``transport`` so far."""
    data: bytes = transport.value()  # type: ignore[no-untyped-call]
    return data


def close(channel: LimitedHTTPChannel) -> None:
    """Deliver connectionLost, as the reactor would once the transport closes."""
    channel.connectionLost(Failure(ConnectionDone()))  # type: ignore[no-untyped-call]


class BodyCapTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.channel, self.transport = self.h.connect()

    def test_declared_length_over_cap_refused_before_body(self) -> None:
        """A Content-Length over 64 KiB gets 413 M_TOO_LARGE as the headers end, no body read."""
        self.channel.dataReceived(
            b"POST /json HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n"
            b"Expect: 100-continue\r\n\r\n" % (MAX_REQUEST_BODY_BYTES + 1)
        )
        [(status, body)] = responses(sent(self.transport))
        assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
        assert self.transport.disconnecting
        assert self.h.handled == []

    def test_body_at_cap_accepted(self) -> None:
        """A JSON body of exactly 64 KiB is read and handled."""
        body = b'"' + b"a" * (MAX_REQUEST_BODY_BYTES - 2) + b'"'
        self.channel.dataReceived(post(body))
        [(status, _)] = responses(sent(self.transport))
        assert status == 200

    def test_chunked_body_cut_at_cap(self) -> None:
        """A chunked body is refused 413 once it passes the cap; the handler never runs."""
        self.channel.dataReceived(
            b"POST /json HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (4096, b"a" * 4096)
        for _ in range(MAX_REQUEST_BODY_BYTES // 4096 + 1):
            self.channel.dataReceived(chunk)
        self.channel.dataReceived(b"0\r\n\r\n")
        [(status, body)] = responses(sent(self.transport))
        assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
        assert self.h.handled == []

    def test_chunked_body_under_cap_handled(self) -> None:
        """A small chunked JSON body is handled as usual."""
        self.channel.dataReceived(
            b"POST /json HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n"
        )
        assert responses(sent(self.transport)) == [(200, {"got": {}})]

    def test_form_bodies_not_parsed(self) -> None:
        """x-www-form-urlencoded and multipart bodies never reach request.args."""
        self.channel.dataReceived(
            post(
                b"b=2",
                path=b"/form?a=1",
                headers=b"Content-Type: application/x-www-form-urlencoded\r\n",
            )
        )
        self.channel.dataReceived(
            post(
                b'--x\r\nContent-Disposition: form-data; name="c"\r\n\r\n3\r\n--x--\r\n',
                path=b"/form",
                headers=b"Content-Type: multipart/form-data; boundary=x\r\n",
            )
        )
        assert [s for s, _ in responses(sent(self.transport))] == [200, 200]
        assert self.h.args == [{b"a": [b"1"]}, {}]


def put_txn(body: bytes, txn: bytes = b"t1") -> bytes:
    """A PUT of a /send transaction with a Content-Length."""
    return (
        b"PUT /_matrix/federation/v1/send/" + txn + b" HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def json_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes."""
    body = b'{"pdus":[],"x":"' + b"a" * (size - 18) + b'"}'
    assert len(body) == size
    return body


class LargeBodyTests(SynchronousTestCase):
    """/send (and send_join, send_leave, invite) bodies may pass 64 KiB, boundedly."""

    def setUp(self) -> None:
        self.h = Harness(ServerLimits(max_large_body_bytes=200_000, max_concurrent_large_bodies=1))

    def test_transaction_over_64_kib_accepted(self) -> None:
        """A 150,000-byte transaction is read and handled (50 PDUs can pass 64 KiB)."""
        channel, transport = self.h.connect()
        channel.dataReceived(put_txn(json_of_size(150_000)))
        [(status, _)] = responses(sent(transport))
        assert status == 200

    def test_other_routes_keep_the_64_kib_cap(self) -> None:
        """The same body on an ordinary route still gets 413."""
        channel, transport = self.h.connect()
        channel.dataReceived(post(json_of_size(MAX_REQUEST_BODY_BYTES + 1)))
        [(status, body)] = responses(sent(transport))
        assert (status, body["errcode"]) == (413, "M_TOO_LARGE")

    def test_transaction_over_its_own_cap_refused(self) -> None:
        """A transaction over the large-body cap gets 413 before it is read."""
        channel, transport = self.h.connect()
        channel.dataReceived(put_txn(json_of_size(200_001))[:200])
        [(status, body)] = responses(sent(transport))
        assert (status, body["errcode"]) == (413, "M_TOO_LARGE")
        assert self.h.handled == []

    def test_large_bodies_at_once_are_bounded(self) -> None:
        """With one large body being received, a second gets 503; once done, one is accepted."""
        first, first_transport = self.h.connect()
        request = put_txn(json_of_size(150_000))
        first.dataReceived(request[:1000])
        second, second_transport = self.h.connect("127.0.0.2")
        second.dataReceived(put_txn(json_of_size(150_000), b"t2")[:1000])
        [(status, body)] = responses(sent(second_transport))
        assert (status, body["errcode"]) == (503, "M_LIMIT_EXCEEDED")
        first.dataReceived(request[1000:])
        [(status, _)] = responses(sent(first_transport))
        assert status == 200
        third, third_transport = self.h.connect("127.0.0.3")
        third.dataReceived(put_txn(json_of_size(150_000), b"t3"))
        [(status, _)] = responses(sent(third_transport))
        assert status == 200

    def test_a_closed_connection_gives_back_its_large_body_place(self) -> None:
        """A client that goes away mid-body frees its place for the next large body."""
        first, _ = self.h.connect()
        first.dataReceived(put_txn(json_of_size(150_000))[:1000])
        close(first)
        second, second_transport = self.h.connect("127.0.0.2")
        second.dataReceived(put_txn(json_of_size(150_000), b"t2"))
        [(status, _)] = responses(sent(second_transport))
        assert status == 200


class HostileJsonTests(SynchronousTestCase):
    CASES: tuple[tuple[bytes, str], ...] = (
        (b"not json", "M_NOT_JSON"),
        (b"", "M_NOT_JSON"),
        (b"{", "M_NOT_JSON"),
        (b"\xff\xfe{}", "M_NOT_JSON"),
        (b'{"a": "\xc3\x28"}', "M_NOT_JSON"),
        (b'{"a": NaN}', "M_BAD_JSON"),
        (b'{"a": Infinity}', "M_BAD_JSON"),
        (b'{"a": -Infinity}', "M_BAD_JSON"),
        (b'{"a": 9007199254740992}', "M_BAD_JSON"),
        (b'{"a": -9007199254740992}', "M_BAD_JSON"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "M_BAD_JSON"),
        (b'{"a": 1, "a": 2}', "M_BAD_JSON"),
        (b"[" * 101 + b"]" * 101, "M_BAD_JSON"),
        (b"[" * 60000, "M_BAD_JSON"),
        (b'{"a":' * 10000 + b"1" + b"}" * 10000, "M_BAD_JSON"),
    )

    def test_hostile_json_is_400(self) -> None:
        """Each hostile body is answered 400 with M_BAD_JSON or M_NOT_JSON, never 500."""
        for body, errcode in self.CASES:
            h = Harness()
            channel, transport = h.connect()
            channel.dataReceived(post(body))
            [(status, answer)] = responses(sent(transport))
            assert (status, answer["errcode"]) == (400, errcode), body[:40]
        assert flush_logged_errors(self) == []

    def test_edges_of_the_integer_range_accepted(self) -> None:
        """+-(2^53-1) and 100 levels of nesting are still accepted."""
        for body in (b"[9007199254740991,-9007199254740991]", b"[" * 100 + b"]" * 100):
            h = Harness()
            channel, transport = h.connect()
            channel.dataReceived(post(body))
            [(status, _)] = responses(sent(transport))
            assert status == 200


class FramingTests(SynchronousTestCase):
    SMUGGLED = VERSION_REQUEST
    ATTACKS: tuple[bytes, ...] = (
        b"Content-Length: 3\r\nContent-Length: 3\r\n",
        b"Content-Length: 3\r\nContent-Length: 40\r\n",
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        b"Content-Length: -3\r\n",
        b"Content-Length: +3\r\n",
        b"Content-Length: 0x3\r\n",
        b"Content-Length: 3 3\r\n",
        b"Content-Length: 3,3\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Content-Length\r\n",
        b"Bad Header: 1\r\n",
    )

    def test_framing_attacks_refused_and_nothing_smuggled(self) -> None:
        """Each ambiguous framing gets one 400 JSON answer, a close, and nothing else served."""
        for attack in self.ATTACKS:
            h = Harness()
            channel, transport = h.connect()
            channel.dataReceived(
                b"POST /json HTTP/1.1\r\nHost: a\r\n" + attack + b"\r\n{}\r\n" + self.SMUGGLED
            )
            [(status, body)] = responses(sent(transport))
            assert (status, body["errcode"]) == (400, "M_UNKNOWN"), attack
            assert transport.disconnecting, attack
            assert h.handled == [], attack

    def test_malformed_chunk_refused(self) -> None:
        """A chunk size that is not hex gets 400 and the handler never runs."""
        h = Harness()
        channel, transport = h.connect()
        channel.dataReceived(
            b"POST /json HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"-2\r\n{}\r\n0\r\n\r\n" + self.SMUGGLED
        )
        assert [s for s, _ in responses(sent(transport))] == [400]
        assert h.handled == []

    def test_refused_client_that_does_not_read_is_aborted(self) -> None:
        """After a refusal, a connection still open after the grace period is aborted."""
        h = Harness()
        channel, transport = h.connect()
        channel.dataReceived(b"POST /json HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
        h.clock.advance(ABORT_GRACE_SECONDS)
        assert transport.disconnected

    def test_pipelined_good_requests_served(self) -> None:
        """Two well-framed pipelined requests are both answered (the checks break nothing)."""
        h = Harness()
        channel, transport = h.connect()
        channel.dataReceived(post(b"[1]") + VERSION_REQUEST)
        assert [s for s, _ in responses(sent(transport))] == [200, 200]


class DeadlineTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()

    def test_slowloris_cut_at_read_deadline(self) -> None:
        """One byte a second: alive at 29 s, answered 408 and closed at 30 s."""
        channel, transport = self.h.connect()
        request = b"GET /version HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 100
        for i in range(int(REQUEST_READ_DEADLINE_SECONDS) - 1):
            channel.dataReceived(request[i : i + 1])
            self.h.clock.advance(1)
        assert not transport.disconnecting
        channel.dataReceived(request[29:30])
        self.h.clock.advance(1)
        [(status, body)] = responses(sent(transport))
        assert (status, body["errcode"]) == (408, "M_UNKNOWN")
        assert transport.disconnecting

    def test_silent_connection_closed_at_read_deadline(self) -> None:
        """A connection that sends nothing is closed, without an answer, at the deadline."""
        _, transport = self.h.connect()
        self.h.clock.advance(REQUEST_READ_DEADLINE_SECONDS)
        assert transport.disconnecting
        assert sent(transport) == b""

    def test_deadline_stops_when_request_complete(self) -> None:
        """A request received in time but handled slowly is not cut by the read deadline."""
        channel, transport = self.h.connect()
        channel.dataReceived(b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n")
        self.h.clock.advance(REQUEST_READ_DEADLINE_SECONDS + 1)
        assert not transport.disconnecting
        assert sent(transport) == b""

    def test_handler_deadline_answers_504(self) -> None:
        """A handler that never answers is cancelled at the handler deadline: 504 M_UNKNOWN."""
        channel, transport = self.h.connect()
        channel.dataReceived(b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n")
        self.h.clock.advance(HANDLER_DEADLINE_SECONDS)
        [(status, body)] = responses(sent(transport))
        assert (status, body["errcode"]) == (504, "M_UNKNOWN")
        assert flush_logged_errors(self) == []

    def test_keep_alive_idle_is_not_the_read_deadline(self) -> None:
        """Between requests the idle timer applies: idle 45 s, then a request is served."""
        channel, transport = self.h.connect()
        channel.dataReceived(VERSION_REQUEST)
        self.h.clock.advance(45)
        assert not transport.disconnecting
        channel.dataReceived(VERSION_REQUEST)
        assert [s for s, _ in responses(sent(transport))] == [200, 200]

    def test_keep_alive_idle_timeout(self) -> None:
        """An idle keep-alive connection is closed after the idle timeout."""
        channel, transport = self.h.connect()
        channel.dataReceived(VERSION_REQUEST)
        self.h.clock.advance(IDLE_TIMEOUT_SECONDS)
        assert transport.disconnecting

    def test_requests_kept_alive_move_one_read_deadline_timer(self) -> None:
        """Ten requests on one kept-alive connection keep the read-deadline timer the
        connection started with, moved for each request, not one made and cancelled per
        request (issue 22: the key endpoint's per-request overhead)."""

        def deadlines() -> list[Any]:
            return [
                call
                for call in self.h.clock.getDelayedCalls()
                if getattr(getattr(call, "func", None), "__name__", "") == "_read_deadline_passed"
            ]

        channel, transport = self.h.connect()
        (first,) = deadlines()
        for _ in range(10):
            channel.dataReceived(VERSION_REQUEST)
        assert [s for s, _ in responses(sent(transport))] == [200] * 10
        assert deadlines() == [first]

    def test_second_request_has_its_own_deadline(self) -> None:
        """A kept-alive connection's next request must arrive within 30 s of its first byte."""
        channel, transport = self.h.connect()
        channel.dataReceived(VERSION_REQUEST)
        self.h.clock.advance(20)
        channel.dataReceived(b"G")
        self.h.clock.advance(REQUEST_READ_DEADLINE_SECONDS - 1)
        assert not transport.disconnecting
        self.h.clock.advance(1)
        assert [s for s, _ in responses(sent(transport))] == [200, 408]

    def test_pipelined_partial_request_is_busy_with_its_own_deadline(self) -> None:
        """A request answered while the next one is partly received (one read): the
        connection stays busy (not evicted at the cap) and the partial request is cut 30 s
        after the answer, with a 408."""
        h = Harness(ServerLimits(max_connections=1))
        channel, transport = h.connect()
        channel.dataReceived(VERSION_REQUEST + b"GET /version HTTP/1.1\r\n")
        assert not h.connections.is_idle(channel)
        _, newcomer = h.connect("198.51.100.1")
        assert newcomer.disconnected
        h.clock.advance(REQUEST_READ_DEADLINE_SECONDS - 1)
        assert not transport.disconnecting
        h.clock.advance(1)
        assert [s for s, _ in responses(sent(transport))] == [200, 408]


class ConnectionCapTests(SynchronousTestCase):
    def test_connection_over_cap_aborted(self) -> None:
        """With a cap of 2 and both busy, a third connection is aborted; a freed place is reused."""
        h = Harness(ServerLimits(max_connections=2))
        first, _ = h.connect()
        second, _ = h.connect()
        first.dataReceived(b"GET /vers")
        second.dataReceived(b"GET /vers")
        third, third_transport = h.connect()
        assert third_transport.disconnected
        close(third)
        close(first)
        channel, transport = h.connect()
        channel.dataReceived(VERSION_REQUEST)
        assert not transport.disconnected
        assert [s for s, _ in responses(sent(transport))] == [200]
        assert h.connections.open == 2

    def test_per_address_cap(self) -> None:
        """With 64 connections from one address, a 65th from it is aborted; others still connect."""
        h = Harness()
        for _ in range(MAX_CONNECTIONS_PER_ADDRESS):
            _, transport = h.connect("192.0.2.7")
            assert not transport.disconnected
        _, over = h.connect("192.0.2.7")
        assert over.disconnected
        channel, transport = h.connect("192.0.2.8")
        channel.dataReceived(VERSION_REQUEST)
        assert [s for s, _ in responses(sent(transport))] == [200]
        assert h.connections.count_for("192.0.2.7") == MAX_CONNECTIONS_PER_ADDRESS

    def test_per_address_place_freed_on_close(self) -> None:
        """Once one of an address's connections closes, that address may connect again."""
        h = Harness(ServerLimits(max_connections_per_address=1))
        first, _ = h.connect("192.0.2.7")
        close(first)
        _, transport = h.connect("192.0.2.7")
        assert not transport.disconnected

    def test_full_cap_evicts_oldest_idle(self) -> None:
        """At the global cap, the connection idle longest is closed so a newcomer is served."""
        h = Harness(ServerLimits(max_connections=3))
        conns = [h.connect(f"192.0.2.{n}") for n in range(1, 4)]
        # The first is used and done after the second: the second is now idle longest.
        conns[0][0].dataReceived(VERSION_REQUEST)
        channel, transport = h.connect("198.51.100.1")
        assert not transport.disconnected
        assert [t.disconnected for _, t in conns] == [False, True, False]
        channel.dataReceived(VERSION_REQUEST)
        assert [s for s, _ in responses(sent(transport))] == [200]
        assert h.connections.open == 3

    def test_full_cap_never_evicts_a_request_in_progress(self) -> None:
        """Connections with a request partly received or being handled are not evicted."""
        h = Harness(ServerLimits(max_connections=2))
        partial, partial_transport = h.connect("192.0.2.1")
        partial.dataReceived(b"GET /version HTTP/1.1\r\n")
        handling, handling_transport = h.connect("192.0.2.2")
        handling.dataReceived(b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n")
        _, newcomer = h.connect("198.51.100.1")
        assert newcomer.disconnected
        assert not partial_transport.disconnected
        assert not handling_transport.disconnected

    def test_idle_sockets_from_one_address_lock_nobody_out(self) -> None:
        """1,024 idle sockets from one address: only 64 are kept and a new client is served."""
        h = Harness()
        for _ in range(MAX_CONCURRENT_CONNECTIONS):
            h.connect("203.0.113.9")
        assert h.connections.open == MAX_CONNECTIONS_PER_ADDRESS
        channel, transport = h.connect("198.51.100.1")
        channel.dataReceived(VERSION_REQUEST)
        assert [s for s, _ in responses(sent(transport))] == [200]


class LineLengthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.channel, self.transport = self.h.connect()

    def test_long_request_line_414_at_once(self) -> None:
        """A request line past 16 KiB (not yet ended) is answered 414 JSON at once and closed."""
        self.channel.dataReceived(b"GET /" + b"a" * MAX_REQUEST_LINE_BYTES)
        [(status, body)] = responses(sent(self.transport))
        assert (status, body["errcode"]) == (414, "M_UNKNOWN")
        assert self.transport.disconnecting
        assert self.h.handled == []

    def test_long_header_line_431_at_once(self) -> None:
        """A header line past 16 KiB is answered 431 JSON at once and closed."""
        self.channel.dataReceived(
            b"GET /version HTTP/1.1\r\nX-Long: " + b"a" * MAX_REQUEST_LINE_BYTES
        )
        [(status, body)] = responses(sent(self.transport))
        assert (status, body["errcode"]) == (431, "M_UNKNOWN")
        assert self.transport.disconnecting

    def test_header_block_too_large_431(self) -> None:
        """Headers of 8 KiB each, together past 16 KiB, are answered 431 JSON."""
        header = b"X-A: " + b"a" * 8192 + b"\r\n"
        self.channel.dataReceived(b"GET /version HTTP/1.1\r\n" + header * 3 + b"\r\n")
        [(status, body)] = responses(sent(self.transport))
        assert (status, body["errcode"]) == (431, "M_UNKNOWN")
        assert self.h.handled == []

    def test_long_request_line_on_a_kept_alive_connection(self) -> None:
        """After a first request, a too-long request line is still 414 (not 431)."""
        self.channel.dataReceived(VERSION_REQUEST + b"GET /" + b"a" * MAX_REQUEST_LINE_BYTES)
        assert [s for s, _ in responses(sent(self.transport))] == [200, 414]


class EveryAnswerIsJsonTests(SynchronousTestCase):
    def test_options_star_is_json(self) -> None:
        """``OPTIONS *`` gets 400 M_UNRECOGNIZED as JSON, not twisted.web's empty 200."""
        h = Harness()
        channel, transport = h.connect()
        channel.dataReceived(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        [(status, body)] = responses(sent(transport))
        assert (status, body["errcode"]) == (400, "M_UNRECOGNIZED")
        assert b"Content-Type: application/json" in sent(transport)

    def test_get_star_is_json(self) -> None:
        """``GET *`` gets the same JSON 400 (twisted.web answers an empty 405)."""
        h = Harness()
        channel, transport = h.connect()
        channel.dataReceived(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n" + VERSION_REQUEST)
        assert [s for s, _ in responses(sent(transport))] == [400, 200]

    def test_exception_outside_the_router_is_json_500(self) -> None:
        """A resource that raises is answered 500 M_UNKNOWN as JSON, not an HTML page."""

        @implementer(IResource)
        class Broken:
            isLeaf = True

            def render(self, request: IRequest) -> bytes:
                raise ValueError("broken")

            def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
                return self

            def putChild(self, path: bytes, child: IResource) -> None:
                raise NotImplementedError

        limits = ServerLimits()
        site = LimitedSite(Broken(), MemoryReactorClock(), limits, ConnectionCounter(10))  # type: ignore[no-untyped-call]
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))  # type: ignore[no-untyped-call]
        transport = StringTransport()  # type: ignore[no-untyped-call]
        channel.makeConnection(transport)
        channel.dataReceived(VERSION_REQUEST)
        [(status, body)] = responses(sent(transport))
        assert (status, body["errcode"]) == (500, "M_UNKNOWN")
        assert b"text/html" not in sent(transport)
        assert len(flush_logged_errors(self, ValueError)) == 1


class RequestProcessingTests(SynchronousTestCase):
    """What ``LimitedRequest.process`` does instead of twisted.web's (issue 22, the key
    endpoint's hot path): the same headers, resources and paths for less work."""

    def test_answers_carry_our_server_header_and_a_date(self) -> None:
        """A routed answer and a refusal of the router carry ``Server: stubserver/...`` and
        an HTTP ``Date`` (the header twisted.web would set, for the same second)."""
        h = Harness()
        channel, transport = h.connect()
        channel.dataReceived(VERSION_REQUEST + b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n")
        heads = [part.split(b"\r\n") for part in sent(transport).split(b"HTTP/1.1 ")[1:]]
        assert [head[0][:3] for head in heads] == [b"200", b"404"]
        for head in heads:
            headers = dict(line.split(b": ", 1) for line in head[1:] if b": " in line)
            assert headers[b"Server"] == SERVER_HEADER
            assert headers[b"Date"].endswith(b" GMT")

    def test_date_is_made_once_a_second(self) -> None:
        """``HttpDate`` gives twisted.web's ``datetimeToString`` of the whole second, the
        same object within a second and a new one the next."""
        http_date = HttpDate()
        first = http_date(1_700_000_000.25)
        assert first == datetimeToString(1_700_000_000)  # type: ignore[no-untyped-call]
        assert http_date(1_700_000_000.9) is first
        assert http_date(1_700_000_001.0) == datetimeToString(1_700_000_001)  # type: ignore[no-untyped-call]

    def test_resources_below_the_root_are_still_found(self) -> None:
        """With a root that is not a leaf, the resource is found by twisted.web's walk
        over ``postpath`` (decoded from the path when first read)."""

        class Child(Resource):
            isLeaf = True

            def render_GET(self, request: IRequest) -> bytes:
                return b'{"child": true}'

        root = Resource()  # type: ignore[no-untyped-call]
        root.putChild(b"a b", Child())  # type: ignore[no-untyped-call]
        site = LimitedSite(root, MemoryReactorClock(), ServerLimits(), ConnectionCounter(10))  # type: ignore[no-untyped-call]
        channel, transport = connect(site, "127.0.0.1")
        channel.dataReceived(b"GET /a%20b HTTP/1.1\r\nHost: a\r\n\r\n")
        assert responses(sent(transport)) == [(200, {"child": True})]
