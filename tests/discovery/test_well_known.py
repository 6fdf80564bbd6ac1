""".well-known delegation: cache periods (pure, tables), fetch rules and caching rules."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from stubserver.discovery.well_known import (
    WELL_KNOWN_MAX_BODY_BYTES,
    WellKnownResolver,
    cache_period_from_headers,
    failure_cache_seconds,
    parse_well_known_body,
    well_known_cache_seconds,
)
from tests.support import has_fired

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def headers(**values: str) -> Headers:
    h = Headers()
    for name, value in values.items():
        h.addRawHeader(name.replace("_", "-").encode(), value.encode())
    return h


CACHE_TABLE: list[tuple[dict[str, str], float | None]] = [
    ({}, None),
    ({"cache_control": "max-age=3600"}, 3600.0),
    ({"cache_control": "public, max-age=600"}, 600.0),
    ({"cache_control": 'max-age="120"'}, 120.0),
    ({"cache_control": "no-store"}, 0.0),
    ({"cache_control": "no-store, max-age=3600"}, 0.0),
    ({"cache_control": "max-age=abc"}, None),
    ({"cache_control": "max-age=-5"}, None),
    ({"cache_control": "max-age=abc", "expires": "Tue, 14 Nov 2023 23:13:20 GMT"}, 3600.0),
    ({"cache_control": "max-age=60", "expires": "Tue, 14 Nov 2023 23:13:20 GMT"}, 60.0),
    ({"expires": "Tue, 14 Nov 2023 23:13:20 GMT"}, 3600.0),
    ({"expires": "Mon, 13 Nov 2023 22:13:20 GMT"}, 0.0),
    ({"expires": "0"}, 0.0),
    ({"expires": "not a date"}, 0.0),
    ({"cache_control": "private"}, None),
]


@pytest.mark.parametrize(("values", "expected"), CACHE_TABLE)
def test_cache_period_from_headers(values: dict[str, str], expected: float | None) -> None:
    """Cache-Control no-store/max-age, then Expires; malformed max-age is ignored."""
    assert cache_period_from_headers(headers(**values), NOW) == expected


class MidRng(random.Random):
    """uniform() returns the middle of its range, so jitter is zero."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


CLAMP_TABLE = [(0.0, 300.0), (299.0, 300.0), (3600.0, 3600.0), (10 * 86400.0, 48 * 3600.0)]


@pytest.mark.parametrize(("period", "expected"), CLAMP_TABLE)
def test_cache_period_clamped(period: float, expected: float) -> None:
    """A valid answer's period is clamped to [5 min, 48 h]."""
    assert well_known_cache_seconds(period, MidRng()) == expected


def test_default_period_has_jitter() -> None:
    """Without headers a valid answer is cached 24 h within ±10 %."""
    rng = random.Random(1)
    periods = {well_known_cache_seconds(None, rng) for _ in range(50)}
    assert all(0.9 * 86400 <= p <= 1.1 * 86400 for p in periods)
    assert len(periods) > 1


def test_failure_periods() -> None:
    """Failures are cached 1 h ±10 %, or 2 min after a recent valid answer."""
    assert failure_cache_seconds(False, MidRng()) == 3600.0
    assert failure_cache_seconds(True, MidRng()) == 120.0


BODY_TABLE: list[tuple[bytes, str | None]] = [
    (b'{"m.server": "delta-fed.test"}', None),
    (b'{"m.server": "delta-fed.test:8450"}', None),
    (b'{"m.server": "[::1]:8448"}', None),
    (b'{"m.server": "https://delta-fed.test"}', "not a server name"),
    (b'{"m.server": "delta-fed.test/path"}', "not a server name"),
    (b'{"m.server": "user@delta-fed.test"}', "not a server name"),
    (b'{"m.server": "delta-fed.test:99999"}', "not a server name"),
    (b'{"m.server": 5}', "not a string"),
    (b"{}", 'no "m.server"'),
    (b'["m.server"]', "JSON list, not an object"),
    (b"<html>hello</html>", "not acceptable JSON"),
]


@pytest.mark.parametrize(("body", "problem"), BODY_TABLE)
def test_parse_body(body: bytes, problem: str | None) -> None:
    """m.server must be a valid server name (no scheme, path, userinfo, bad port)."""
    if problem is None:
        assert parse_well_known_body(body)
    else:
        with pytest.raises(ValueError, match=problem):
            parse_well_known_body(body)


Handler = Callable[[Request], bytes]


class Hosts(Resource):
    """Answers by Host header with a handler per host; counts requests."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.handlers: dict[str, Handler] = {}
        self.hits: list[str] = []

    def render_GET(self, request: Request) -> bytes:
        host = (request.getHeader(b"host") or b"").decode()
        self.hits.append(host)
        handler = self.handlers.get(host)
        if handler is None:
            request.setResponseCode(404)
            return b"{}"
        return handler(request)


def json_answer(m_server: str, cache_control: str | None = None) -> Handler:
    def handler(request: Request) -> bytes:
        if cache_control:
            request.setHeader(b"cache-control", cache_control.encode())  # type: ignore[no-untyped-call]
        return json.dumps({"m.server": m_server}).encode()

    return handler


def status(code: int) -> Handler:
    def handler(request: Request) -> bytes:
        request.setResponseCode(code)
        return b"{}"

    return handler


def redirect(location: str) -> Handler:
    def handler(request: Request) -> bytes:
        request.setResponseCode(302)
        request.setHeader(b"location", location.encode())  # type: ignore[no-untyped-call]
        return b""

    return handler


@implementer(IAgent)
class SwitchAgent:
    """Delegates to ``inner`` unless ``failure`` or ``hang`` is set; counts requests."""

    def __init__(self, inner: IAgent) -> None:
        self.inner = inner
        self.failure: Exception | None = None
        self.hang = False
        self.requests: list[bytes] = []
        self.pending: list[Deferred[IResponse]] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        self.requests.append(uri)
        if self.hang:
            d: Deferred[IResponse] = Deferred()
            self.pending.append(d)
            return d
        if self.failure is not None:
            return fail(self.failure)
        return self.inner.request(method, uri, headers, bodyProducer)


class ResolverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.site = Hosts()
        self.agent = SwitchAgent(RequestTraversalAgent(self.site))  # type: ignore[no-untyped-call]
        self.resolver = WellKnownResolver(self.agent, self.clock, MidRng())

    def get(self, host: str = "delta.test") -> Any:
        return self.successResultOf(self.resolver.get_well_known(host))

    def test_delegation(self) -> None:
        """A valid answer gives m.server, its URL and status, cached 24 h by default."""
        self.site.handlers["delta.test"] = json_answer("delta-fed.test")
        result = self.get()
        assert result.m_server == "delta-fed.test"
        assert result.url == "https://delta.test/.well-known/matrix/server"
        assert (result.status, result.error, result.cache_seconds) == (200, None, 86400)

    def test_custom_port_in_url(self) -> None:
        """federation_well_known_port appears in the URL fetched."""
        resolver = WellKnownResolver(self.agent, self.clock, MidRng(), port=8443)
        self.successResultOf(resolver.get_well_known("delta.test"))
        assert self.agent.requests == [b"https://delta.test:8443/.well-known/matrix/server"]

    def test_json_whatever_content_type(self) -> None:
        """The body is parsed as JSON even when served as text/plain."""

        def handler(request: Request) -> bytes:
            request.setHeader(b"content-type", b"text/plain")  # type: ignore[no-untyped-call]
            return b'{"m.server": "delta-fed.test"}'

        self.site.handlers["delta.test"] = handler
        assert self.get().m_server == "delta-fed.test"

    def test_cache_control_respected(self) -> None:
        """max-age sets the cache period; the answer is not fetched again before it ends."""
        self.site.handlers["delta.test"] = json_answer("delta-fed.test", "max-age=3600")
        assert self.get().cache_seconds == 3600
        self.clock.advance(2000)
        assert self.get().m_server == "delta-fed.test"
        assert len(self.site.hits) == 1

    def test_refetch_after_expiry(self) -> None:
        """After the cache period the name is fetched again."""
        self.site.handlers["delta.test"] = json_answer("delta-fed.test", "max-age=600")
        self.get()
        self.clock.advance(601)
        self.site.handlers["delta.test"] = json_answer("other.test", "max-age=600")
        assert self.get().m_server == "other.test"

    def test_refresh_in_last_fifth(self) -> None:
        """In the last 20 % of a valid answer's lifetime it is fetched again."""
        self.site.handlers["delta.test"] = json_answer("delta-fed.test", "max-age=1000")
        self.get()
        self.clock.advance(790)
        self.get()
        assert len(self.site.hits) == 1
        self.clock.advance(20)
        self.site.handlers["delta.test"] = json_answer("new.test", "max-age=1000")
        assert self.get().m_server == "new.test"
        assert len(self.site.hits) == 2

    def test_refresh_keeps_old_value_through_5xx(self) -> None:
        """A refresh answered 503 keeps the still-valid old delegation."""
        self.site.handlers["delta.test"] = json_answer("delta-fed.test", "max-age=1000")
        self.get()
        self.clock.advance(900)
        self.site.handlers["delta.test"] = status(503)
        assert self.get().m_server == "delta-fed.test"

    def test_refresh_keeps_old_value_through_connect_error(self) -> None:
        """A refresh that cannot connect keeps the still-valid old delegation."""
        self.site.handlers["delta.test"] = json_answer("delta-fed.test", "max-age=1000")
        self.get()
        self.clock.advance(900)
        self.agent.failure = ConnectionRefusedError()  # type: ignore[no-untyped-call]
        assert self.get().m_server == "delta-fed.test"

    def test_refresh_replaced_by_definitive_404(self) -> None:
        """A refresh answered 404 ends the delegation (not a temporary failure)."""
        self.site.handlers["delta.test"] = json_answer("delta-fed.test", "max-age=1000")
        self.get()
        self.clock.advance(900)
        self.site.handlers["delta.test"] = status(404)
        assert self.get().m_server is None

    def test_failure_cached_one_hour(self) -> None:
        """A failure is cached for 1 h (jitter zero here)."""
        result = self.get()
        assert (result.status, result.error, result.cache_seconds) == (404, "HTTP 404", 3600)
        self.clock.advance(3599)
        self.get()
        assert len(self.site.hits) == 1
        self.clock.advance(2)
        self.get()
        assert len(self.site.hits) == 2

    def test_failure_after_recent_valid_cached_two_minutes(self) -> None:
        """A failure soon after a valid answer expired is cached only 2 min."""
        self.site.handlers["delta.test"] = json_answer("delta-fed.test", "max-age=600")
        self.get()
        self.clock.advance(601)
        self.site.handlers["delta.test"] = status(404)
        assert self.get().cache_seconds == 120

    def test_failure_long_after_valid_cached_one_hour(self) -> None:
        """More than the period + 2 h after a valid answer, failures get 1 h again."""
        self.site.handlers["delta.test"] = json_answer("delta-fed.test", "max-age=600")
        self.get()
        self.clock.advance(600 + 2 * 3600 + 1)
        self.site.handlers["delta.test"] = status(404)
        assert self.get().cache_seconds == 3600

    def test_one_fetch_in_flight(self) -> None:
        """Concurrent lookups of one name share one fetch."""
        self.agent.hang = True
        first = self.resolver.get_well_known("delta.test")
        second = self.resolver.get_well_known("delta.test")
        assert len(self.agent.requests) == 1
        assert not has_fired(first)
        self.agent.pending[0].errback(ConnectionRefusedError())  # type: ignore[no-untyped-call]
        assert self.successResultOf(first) == self.successResultOf(second)

    def test_deadline(self) -> None:
        """A fetch that never answers gives up after 10 s, as a temporary failure."""
        self.agent.hang = True
        d = self.resolver.get_well_known("delta.test")
        self.clock.advance(9.9)
        assert not has_fired(d)
        self.clock.advance(0.2)
        result = self.successResultOf(d)
        assert "timed out" in (result.error or "")
        assert result.temporary

    def test_redirect_followed(self) -> None:
        """A redirect to another https URL is followed."""
        self.site.handlers["delta.test"] = redirect("https://elsewhere.test/wk")
        self.site.handlers["elsewhere.test"] = json_answer("delta-fed.test")
        result = self.get()
        assert result.m_server == "delta-fed.test"
        assert result.redirects == ("https://elsewhere.test/wk",)

    def test_redirect_loop_bounded(self) -> None:
        """A redirect loop stops after 5 redirects with an error."""
        self.site.handlers["delta.test"] = redirect("https://delta.test/.well-known/matrix/server")
        result = self.get()
        assert "more than 5 redirects" in result.error
        assert len(self.site.hits) == 6

    def test_redirect_to_http_refused(self) -> None:
        """A redirect to plain http is not followed."""
        self.site.handlers["delta.test"] = redirect("http://elsewhere.test/wk")
        assert "non-https" in self.get().error
        assert len(self.site.hits) == 1

    def test_oversize_body(self) -> None:
        """A body over 50 KiB is an error and a temporary failure."""

        def handler(request: Request) -> bytes:
            return b'{"m.server": "x.test", "pad": "' + b"a" * WELL_KNOWN_MAX_BODY_BYTES + b'"}'

        self.site.handlers["delta.test"] = handler
        result = self.get()
        assert "larger than" in result.error
        assert result.temporary

    def test_invalid_m_server_is_no_delegation(self) -> None:
        """An m.server with a scheme is no delegation, with the reason."""
        self.site.handlers["delta.test"] = json_answer("https://delta-fed.test")
        result = self.get()
        assert result.m_server is None
        assert "not a server name" in result.error

    def test_connect_error_is_temporary(self) -> None:
        """A connection failure is reported as a temporary failure."""
        self.agent.failure = ConnectionRefusedError()  # type: ignore[no-untyped-call]
        result = self.get()
        assert "connection refused" in result.error
        assert result.temporary
