"""Fault injection (stubserver.server.faults, issue 23): the pure decision, and each mode on
a LimitedSite driven with raw bytes through in-memory transports and a clock."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from stubserver.control.feed import RequestFeed
from stubserver.server.connections import ConnectionCounter
from stubserver.server.faults import (
    NO_FAULTS,
    FailRule,
    FaultSettings,
    ListenerReopenFailed,
    RequestFault,
    ServerFaults,
    decide,
)
from stubserver.server.limits import LimitedHTTPChannel, LimitedSite, ServerLimits
from stubserver.server.router import (
    CLIENT_CLOSED_REQUEST,
    FederationRouter,
    JsonResponse,
    Route,
    request_annotations,
)
from tests.server.test_limits import close, connect, responses, sent
from tests.support import failure_now, has_fired, result_now

SEND = "/_matrix/federation/v1/send/t1"
VERSION = "/_matrix/federation/v1/version"
SEND_GLOB = "/_matrix/federation/v1/send/*"


def never() -> float:
    raise AssertionError("no draw expected")


# --- the decision (pure) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "path", "draws", "fault"),
    [
        (NO_FAULTS, SEND, [], RequestFault()),
        (FaultSettings(down=True), SEND, [], RequestFault(outcome="refused")),
        (FaultSettings(down="reset", latency_ms=5), SEND, [], RequestFault(outcome="refused")),
        (FaultSettings(latency_ms=250), SEND, [], RequestFault(250)),
        (FaultSettings(drop_share=1.0), SEND, [], RequestFault(0, "dropped")),
        (FaultSettings(drop_share=0.3), SEND, [0.29], RequestFault(0, "dropped")),
        (FaultSettings(drop_share=0.3), SEND, [0.3], RequestFault()),
        (FaultSettings(fail=FailRule(502, (SEND_GLOB,))), SEND, [], RequestFault(0, "failed", 502)),
        (FaultSettings(fail=FailRule(502, (SEND_GLOB,))), VERSION, [], RequestFault()),
        (FaultSettings(fail=FailRule(500)), VERSION, [], RequestFault(0, "failed", 500)),
        (FaultSettings(fail=FailRule(503, share=0.5)), SEND, [0.7], RequestFault()),
        (FaultSettings(fail=FailRule(503, share=0.5)), SEND, [0.1], RequestFault(0, "failed", 503)),
        (FaultSettings(fail=FailRule(500, share=0.0)), SEND, [], RequestFault()),
        # Dropped wins over failed; the latency comes with either.
        (
            FaultSettings(latency_ms=9, drop_share=0.5, fail=FailRule(500)),
            SEND,
            [0.4],
            RequestFault(9, "dropped"),
        ),
        (
            FaultSettings(latency_ms=9, drop_share=0.5, fail=FailRule(500)),
            SEND,
            [0.6],
            RequestFault(9, "failed", 500),
        ),
    ],
)
def test_decide(
    settings: FaultSettings, path: str, draws: list[float], fault: RequestFault
) -> None:
    """What the faults do to one request: down refuses it; otherwise it is dropped with the
    drop share, else failed when a fail rule's glob covers its path and its share is drawn,
    delayed by the latency either way; a share of 0 or 1 draws nothing."""
    left = list(draws)
    assert decide(settings, path, lambda: left.pop(0) if left else never()) == fault
    assert left == []


@pytest.mark.parametrize(
    ("routes", "path", "covered"),
    [
        ((), "/_matrix/anything", True),
        ((SEND_GLOB,), SEND, True),
        ((SEND_GLOB,), "/_matrix/federation/v1/send/a/b", True),
        ((SEND_GLOB,), "/_matrix/federation/v1/sendx", False),
        (
            ("/_matrix/federation/v1/make_join/*", "/_matrix/federation/v?/send_join/*"),
            "/_matrix/federation/v2/send_join/!r/$e",
            True,
        ),
        (("/_matrix/key/v2/server",), "/_matrix/key/v2/server/extra", False),
    ],
)
def test_fail_rule_globs(routes: tuple[str, ...], path: str, covered: bool) -> None:
    """A fail rule covers the paths one of its fnmatch globs matches whole (``*`` crosses
    ``/``); without globs it covers every path."""
    assert FailRule(500, routes).matches(path) is covered


def test_settings_as_json() -> None:
    """The settings show every fault, the fail rule without routes when it has none."""
    assert NO_FAULTS.to_json() == {"down": False, "latency_ms": 0, "drop_share": 0.0, "fail": None}
    assert FaultSettings(down="reset", fail=FailRule(502, (SEND_GLOB,), 0.5)).to_json() == {
        "down": "reset",
        "latency_ms": 0,
        "drop_share": 0.0,
        "fail": {"status": 502, "routes": [SEND_GLOB], "share": 0.5},
    }
    assert FailRule(500).to_json() == {"status": 500, "share": 1.0}


# --- the modes, on a site ----------------------------------------------------------------------


def get(path: str) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n"


class FakeListeners:
    """A ListenerControl that records what it is asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.closing: Deferred[None] = Deferred()
        self.reopen_fails = False

    def close(self) -> Deferred[None]:
        self.calls.append("close")
        return self.closing

    def reopen(self) -> None:
        self.calls.append("reopen")
        if self.reopen_fails:
            raise ListenerReopenFailed("cannot listen again on 127.0.0.1:8448: in use")


class Harness:
    """A LimitedSite serving a few federation routes through the faults' gate, observed by
    a request feed, and its faults with a seeded RNG."""

    def __init__(self, *, own_site: bool = True) -> None:
        self.clock = MemoryReactorClock()  # type: ignore[no-untyped-call]
        self.faults = ServerFaults(self.clock, random.Random(7))
        self.feed = RequestFeed(self.clock)
        self.handled: list[bytes] = []

        def origin(request: IRequest) -> None:
            request_annotations(request).update(origin="a.test", authenticated=True)

        router = FederationRouter(
            [
                Route("GET", VERSION, self._answer),
                Route("GET", "/_matrix/federation/v1/send/{txn}", self._answer),
                Route("GET", "/other", self._answer),
            ],
            filters=[origin, self.faults.gate],
            observers=[self.feed],
            clock=self.clock,
            handler_deadline_seconds=60.0,
        )
        limits = ServerLimits()
        self.site = LimitedSite(router, self.clock, limits, ConnectionCounter(64, 64))
        if own_site:
            self.faults.attach_sites([self.site])

    def _answer(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        self.handled.append(request.path)
        return JsonResponse(200, {"ok": True})

    def set(self, settings: FaultSettings) -> None:
        result_now(self.faults.apply(settings))

    def request(self, path: str) -> tuple[LimitedHTTPChannel, StringTransport]:
        channel, transport = connect(self.site, "127.0.0.1")
        channel.dataReceived(get(path))
        return channel, transport

    def logged(self) -> list[dict[str, Any]]:
        return list(result_now(self.feed.read(0, 0))["requests"])


class GateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()

    def test_no_faults_serve_as_usual(self) -> None:
        """Without faults a request is served and logged without a ``fault`` field."""
        _, transport = self.h.request(VERSION)
        assert responses(sent(transport)) == [(200, {"ok": True})]
        (entry,) = self.h.logged()
        assert "fault" not in entry
        assert "delay_ms" not in entry

    def test_latency_delays_the_answer_on_the_clock(self) -> None:
        """With a latency the request is handled only once that time has passed on the
        clock; it is logged as delayed, with the delay, and counted."""
        self.h.set(FaultSettings(latency_ms=500))
        _, transport = self.h.request(VERSION)
        self.h.clock.advance(0.499)
        assert sent(transport) == b""
        assert self.h.handled == []
        self.h.clock.advance(0.001)
        assert responses(sent(transport)) == [(200, {"ok": True})]
        (entry,) = self.h.logged()
        assert (entry["fault"], entry["delay_ms"], entry["status"]) == ("delayed", 500, 200)
        assert self.h.faults.counters.requests_delayed == 1

    def test_failing_routes_answer_the_status(self) -> None:
        """A fail rule answers its status with the injected-fault error on the paths its
        globs cover (never reaching the handler), and serves the others; the failed ones
        are logged as failed, with who sent them, and counted."""
        self.h.set(FaultSettings(fail=FailRule(502, (SEND_GLOB,))))
        _, failed = self.h.request(SEND)
        _, served = self.h.request(VERSION)
        assert responses(sent(failed)) == [
            (502, {"errcode": "M_UNKNOWN", "error": "injected fault"})
        ]
        assert responses(sent(served)) == [(200, {"ok": True})]
        assert self.h.handled == [VERSION.encode()]
        first, second = self.h.logged()
        assert (first["fault"], first["status"], first["origin"]) == ("failed", 502, "a.test")
        assert "fault" not in second
        assert self.h.faults.counters.requests_failed == 1

    def test_failing_routes_answer_a_client_error_with_its_errcode(self) -> None:
        """A fail rule with a 4xx status and an errcode answers exactly that (a server
        that does not know the room: 404 ``M_NOT_FOUND``), logged as failed and counted."""
        self.h.set(FaultSettings(fail=FailRule(404, (SEND_GLOB,), errcode="M_NOT_FOUND")))
        _, failed = self.h.request(SEND)
        assert responses(sent(failed)) == [
            (404, {"errcode": "M_NOT_FOUND", "error": "injected fault"})
        ]
        assert self.h.handled == []
        (entry,) = self.h.logged()
        assert (entry["fault"], entry["status"]) == ("failed", 404)
        assert self.h.faults.counters.requests_failed == 1

    def test_paths_outside_the_federation_api_are_never_touched(self) -> None:
        """Faults act on /_matrix/ paths only."""
        self.h.set(FaultSettings(fail=FailRule(500), drop_share=1.0))
        _, transport = self.h.request("/other")
        assert responses(sent(transport)) == [(200, {"ok": True})]

    def test_dropped_request_is_reset_without_an_answer(self) -> None:
        """A dropped request's connection is aborted with nothing written; once it is
        lost the request is logged as dropped (status 499: no answer) and counted."""
        self.h.set(FaultSettings(drop_share=1.0))
        channel, transport = self.h.request(SEND)
        assert transport.disconnected
        assert sent(transport) == b""
        assert self.h.handled == []
        close(channel)
        (entry,) = self.h.logged()
        assert (entry["fault"], entry["status"]) == ("dropped", CLIENT_CLOSED_REQUEST)
        assert self.h.faults.counters.requests_dropped == 1

    def test_dropped_after_the_latency(self) -> None:
        """With a latency too, a dropped request is reset only once the latency passed."""
        self.h.set(FaultSettings(drop_share=1.0, latency_ms=100))
        channel, transport = self.h.request(SEND)
        assert not transport.disconnected
        self.h.clock.advance(0.1)
        assert transport.disconnected
        close(channel)
        (entry,) = self.h.logged()
        assert (entry["fault"], entry["delay_ms"]) == ("dropped", 100)

    def test_client_gone_during_the_latency_cancels_the_timer(self) -> None:
        """A client that goes away while its request waits out the latency leaves no timer
        behind, and the request is logged as closed by the client."""
        self.h.set(FaultSettings(latency_ms=1000))
        channel, _ = self.h.request(VERSION)
        assert self.h.clock.getDelayedCalls() != []
        close(channel)
        self.h.clock.advance(1)
        assert self.h.handled == []
        (entry,) = self.h.logged()
        assert entry["status"] == CLIENT_CLOSED_REQUEST
        pending = [c for c in self.h.clock.getDelayedCalls() if c.active()]
        assert all(c.getTime() > self.h.clock.seconds() + 1 for c in pending)

    def test_seeded_shares_are_deterministic(self) -> None:
        """With a seed, the same requests are dropped every run, and about the share of them."""

        def dropped_after_seed() -> list[int]:
            self.h.faults.seed(1234)
            self.h.set(FaultSettings(drop_share=0.3))
            found = []
            for i in range(200):
                channel, transport = self.h.request(VERSION)
                if transport.disconnected:
                    found.append(i)
                close(channel)
            return found

        first = dropped_after_seed()
        assert dropped_after_seed() == first
        assert 40 <= len(first) <= 80


class DownTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.listeners = FakeListeners()

    def test_reset_mode_resets_each_connection_as_accepted(self) -> None:
        """Down with "reset": every new connection is aborted before anything is read (no
        request, nothing logged) and counted; after recovery connections are served again."""
        self.h.set(FaultSettings(down="reset"))
        channel, transport = self.h.request(VERSION)
        assert transport.disconnected
        assert sent(transport) == b""
        close(channel)
        assert self.h.handled == []
        assert self.h.logged() == []
        assert self.h.faults.counters.connections_refused == 1
        assert self.h.site.connections.open == 0
        self.h.set(NO_FAULTS)
        _, transport = self.h.request(VERSION)
        assert responses(sent(transport)) == [(200, {"ok": True})]

    def test_without_own_listeners_down_resets(self) -> None:
        """A server without listeners of its own (shared ones) is down by reset."""
        self.h.set(FaultSettings(down=True))
        _, transport = self.h.request(VERSION)
        assert transport.disconnected
        assert self.h.faults.counters.connections_refused == 1
        assert self.h.faults.to_json()["listening"] is True

    def test_going_down_closes_open_connections(self) -> None:
        """Going down closes the connections already open (counted): nothing sent on
        them afterwards is served."""
        channel, transport = connect(self.h.site, "127.0.0.1")
        self.h.set(FaultSettings(down="reset"))
        assert transport.disconnected
        assert self.h.faults.counters.connections_closed == 1
        channel.dataReceived(get(VERSION))
        assert self.h.handled == []

    def test_request_to_a_down_server_on_a_shared_site_is_reset(self) -> None:
        """On a site the server does not own (shared listeners: its connections are not
        reset as they are accepted), a request that reaches a down server is reset without
        an answer, logged as refused and counted as a refused connection."""
        h = Harness(own_site=False)
        h.set(FaultSettings(down=True))
        channel, transport = h.request(SEND)
        assert transport.disconnected
        assert sent(transport) == b""
        close(channel)
        assert h.handled == []
        (entry,) = h.logged()
        assert (entry["fault"], entry["status"]) == ("refused", CLIENT_CLOSED_REQUEST)
        assert h.faults.counters.connections_refused == 1

    def test_own_listeners_close_while_down_and_reopen_after(self) -> None:
        """With listeners of its own, down closes them (the switch completes once they
        are closed) and recovery listens again; "reset" leaves them listening."""
        self.h.faults.attach_listeners(self.listeners)
        switching = self.h.faults.apply(FaultSettings(down=True))
        assert self.listeners.calls == ["close"]
        assert not has_fired(switching)
        self.listeners.closing.callback(None)
        assert has_fired(switching)
        assert self.h.faults.to_json()["listening"] is False
        self.h.set(FaultSettings(down=True, latency_ms=5))
        assert self.listeners.calls == ["close"]
        self.h.set(FaultSettings(down="reset"))
        assert self.listeners.calls == ["close", "reopen"]
        assert self.h.faults.to_json()["listening"] is True
        self.h.set(NO_FAULTS)
        assert self.listeners.calls == ["close", "reopen"]

    def test_switches_run_in_order(self) -> None:
        """A switch asked while the listeners are still closing waits for that, so that
        recovery never races the close."""
        self.h.faults.attach_listeners(self.listeners)
        down = self.h.faults.apply(FaultSettings(down=True))
        up = self.h.faults.apply(NO_FAULTS)
        assert self.listeners.calls == ["close"]
        self.listeners.closing.callback(None)
        assert has_fired(down) and has_fired(up)
        assert self.listeners.calls == ["close", "reopen"]

    def test_failed_reopen_stays_down(self) -> None:
        """When the listeners cannot listen again the switch fails and the server stays
        down, with its settings."""
        self.h.faults.attach_listeners(self.listeners)
        self.listeners.closing = succeed(None)
        self.h.set(FaultSettings(down=True))
        self.listeners.reopen_fails = True
        failure = failure_now(self.h.faults.apply(NO_FAULTS))
        assert isinstance(failure.value, ListenerReopenFailed)
        assert self.h.faults.settings == FaultSettings(down=True)
        assert self.h.faults.to_json()["listening"] is False
