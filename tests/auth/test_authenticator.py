"""RequestAuthenticator: inbound X-Matrix verification against fetched keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey, VerifyKey
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from stubserver.auth.authenticator import (
    KEY_FETCH_TIMEOUT_SECONDS,
    NEGATIVE_CACHE_SECONDS,
    UNKNOWN_KEY_REFETCH_SECONDS,
    AuthResult,
    BadRequestTarget,
    BadSignature,
    KeyFetchFailed,
    RequestAuthenticator,
    UnknownKey,
    WrongDestination,
)
from stubserver.auth.xmatrix import (
    AuthenticationFailed,
    MalformedAuthorization,
    MissingAuthorization,
    sign_request,
)
from stubserver.server_keys.refetch_limit import RefetchLimit
from stubserver.signing.keys import ServerSigningKey
from stubserver.slices import SLICE_SECONDS

ORIGIN = "origin.test"
US = "us.test"
KEY = ServerSigningKey(version="k1", key=SigningKey(b"\x02" * 32))
OTHER_KEY = ServerSigningKey(version="k1", key=SigningKey(b"\x03" * 32))
NOW_S = 1_700_000_000.0
VALID_UNTIL = int(NOW_S * 1000) + 3_600_000


@dataclass(frozen=True)
class Keys:
    verify_keys: Mapping[str, VerifyKey]
    valid_until_ts: int


@dataclass
class FakeKeySource:
    """Answers from ``results`` (cached-or-fresh) and ``fresh`` (fresh fetches, falling
    back to ``results``); records every fetch."""

    results: dict[str, Any] = field(default_factory=dict)
    fresh: dict[str, Any] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    fresh_fetched: list[str] = field(default_factory=list)

    @staticmethod
    def _answer(result: Any) -> Deferred[Keys]:
        if isinstance(result, Deferred):
            return result
        if isinstance(result, Exception):
            failed: Deferred[Keys] = fail(result)
            return failed
        return succeed(result)

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[Keys]:
        self.fetched.append(server_name)
        return self._answer(self.results[server_name])

    def fetch(self, server_name: str) -> Deferred[Keys]:
        self.fresh_fetched.append(server_name)
        return self._answer(self.fresh.get(server_name, self.results[server_name]))


def no_body() -> None:
    """The body of a request without one."""
    return None


def failure_of(d: Deferred[Any], kind: type[BaseException] = Exception) -> Failure:
    """The failure ``d`` has already failed with, which must be a ``kind``."""
    box: list[Failure] = []
    d.addErrback(box.append)
    assert box, f"{d!r} has not failed"
    assert isinstance(box[0].value, kind), box[0]
    return box[0]


def good_keys() -> Keys:
    return Keys({KEY.key_id: KEY.key.verify_key}, VALID_UNTIL)


def make(
    source: FakeKeySource | None = None,
) -> tuple[RequestAuthenticator[Keys], FakeKeySource, Clock]:
    clock = Clock()
    clock.advance(NOW_S)
    source = source or FakeKeySource({ORIGIN: good_keys()})
    return RequestAuthenticator(US, source, clock), source, clock


def headers(*values: bytes) -> Headers:
    h = Headers()
    for v in values:
        h.addRawHeader(b"Authorization", v)
    return h


def signed(
    method: str = "GET",
    uri: str = "/_matrix/federation/v1/query/profile?user_id=%40a%3Aus.test",
    *,
    content: Any = None,
    destination: str = US,
    key: ServerSigningKey = KEY,
    origin: str = ORIGIN,
) -> bytes:
    return sign_request(
        method, uri, origin=origin, destination=destination, key=key, content=content
    )


class AuthenticateTests(SynchronousTestCase):
    def authenticate(
        self,
        auth: RequestAuthenticator[Keys],
        hdrs: Headers,
        method: bytes = b"GET",
        uri: bytes = b"/_matrix/federation/v1/query/profile?user_id=%40a%3Aus.test",
        content: Any = None,
    ) -> Deferred[AuthResult]:
        return auth.authenticate(method, uri, hdrs, lambda: content)

    def assert_fails(
        self, d: Deferred[AuthResult], kind: type[AuthenticationFailed], status: int, words: str
    ) -> None:
        e = failure_of(d, kind).value
        assert isinstance(e, AuthenticationFailed)
        assert (e.status, e.errcode) == (status, "M_UNAUTHORIZED")
        assert words in e.message

    def test_valid_request(self) -> None:
        """A correctly signed request authenticates as its origin and key."""
        auth, _, _ = make()
        result = self.successResultOf(self.authenticate(auth, headers(signed())))
        assert result == (AuthResult(ORIGIN, KEY.key_id))

    def test_valid_request_with_content(self) -> None:
        """The parsed body is part of what is verified."""
        auth, _, _ = make()
        h = headers(signed("PUT", "/_matrix/federation/v1/send/1", content={"pdus": []}))
        d = self.authenticate(auth, h, b"PUT", b"/_matrix/federation/v1/send/1", {"pdus": []})
        assert self.successResultOf(d).origin == ORIGIN

    def test_a_body_that_takes_a_slice_to_parse_is_checked_on_the_next_turn(self) -> None:
        """Issue 22 (/version stall): when parsing the body takes a slice's time, the
        reactor is handed back (one callLater(0)) before the signature check, which
        then passes."""
        auth, _, clock = make()
        h = headers(signed("PUT", "/_matrix/federation/v1/send/1", content={"pdus": []}))

        def slow_parse() -> Any:
            clock.advance(2 * SLICE_SECONDS)
            return {"pdus": []}

        d = auth.authenticate(b"PUT", b"/_matrix/federation/v1/send/1", h, slow_parse)
        assert not d.called
        clock.advance(0)
        assert self.successResultOf(d).origin == ORIGIN

    def test_the_signature_check_of_a_sliced_body_has_a_turn_of_its_own(self) -> None:
        """Issue 22 (/version stall): after a body parsed and encoded in slices, the
        signature check (ed25519 hashes the body whole, ~10-15 ms for 3.5 MB) starts a
        reactor turn of its own: two callLater(0) in all, the parse's pause and this one,
        and the request then authenticates."""

        class CountingClock(Clock):
            turns = 0

            def callLater(
                self, delay: float, callable: Callable[..., object], *args: object, **kw: object
            ) -> IDelayedCall:
                self.turns += delay == 0
                return super().callLater(delay, callable, *args, **kw)

        clock = CountingClock()
        clock.advance(NOW_S)
        auth = RequestAuthenticator(US, FakeKeySource({ORIGIN: good_keys()}), clock)
        content: dict[str, Any] = {"pdus": [{}, {}]}
        h = headers(signed("PUT", "/_matrix/federation/v1/send/1", content=content))

        def slow_parse() -> Any:
            clock.advance(2 * SLICE_SECONDS)
            return content

        d = auth.authenticate(b"PUT", b"/_matrix/federation/v1/send/1", h, slow_parse)
        clock.advance(0)
        assert self.successResultOf(d).origin == ORIGIN
        assert clock.turns == 2

    def test_content_changed(self) -> None:
        """A body other than the one signed is a 401 bad signature."""
        auth, _, _ = make()
        h = headers(signed("PUT", "/_matrix/federation/v1/send/1", content={"pdus": []}))
        d = self.authenticate(auth, h, b"PUT", b"/_matrix/federation/v1/send/1", {"pdus": [1]})
        self.assert_fails(d, BadSignature, 401, "Invalid signature for server origin.test")

    def test_float_in_content_has_no_signature(self) -> None:
        """A body holding a float (parse_json_bytes lets finite floats through) has no
        canonical form, so no signature over it verifies: 401, whatever the header says
        (issue 22: the check now runs on the encoded bytes, not by a walk). A float inside
        a string is no float."""
        auth, _, _ = make()
        h = headers(signed("PUT", "/_matrix/federation/v1/send/1", content={"pdus": []}))
        floats: list[dict[str, Any]] = [{"pdus": [], "x": 1.5}, {"pdus": [{"depth": 1e3}]}]
        for content in floats:
            d = self.authenticate(auth, h, b"PUT", b"/_matrix/federation/v1/send/1", content)
            self.assert_fails(d, BadSignature, 401, "no canonical form")
        text = {"pdus": [], "x": "1.5e3"}
        h = headers(signed("PUT", "/_matrix/federation/v1/send/1", content=text))
        d = self.authenticate(auth, h, b"PUT", b"/_matrix/federation/v1/send/1", text)
        assert self.successResultOf(d).origin == ORIGIN

    def test_uri_as_received_not_reencoded(self) -> None:
        """The raw request-target is verified: a re-encoded form of it does not verify."""
        auth, _, _ = make()
        h = headers(signed(uri="/_matrix/federation/v1/query/profile?user_id=@a:us.test"))
        d = self.authenticate(
            auth, h, uri=b"/_matrix/federation/v1/query/profile?user_id=@a:us.test"
        )
        assert self.successResultOf(d).origin == ORIGIN
        d = self.authenticate(auth, h)  # same target, percent-encoded
        failure_of(d, BadSignature)

    def test_method_changed(self) -> None:
        """A request signed for GET does not verify as POST."""
        auth, _, _ = make()
        failure_of(self.authenticate(auth, headers(signed()), method=b"POST"), BadSignature)

    def test_missing_header(self) -> None:
        """No Authorization header is 401 M_UNAUTHORIZED, and no key is fetched."""
        auth, source, _ = make()
        self.assert_fails(self.authenticate(auth, Headers()), MissingAuthorization, 401, "Missing")
        assert source.fetched == []

    def test_malformed_header(self) -> None:
        """A malformed header is 400 M_UNAUTHORIZED (as Synapse)."""
        auth, _, _ = make()
        d = self.authenticate(auth, headers(b'X-Matrix origin="a b",key="ed25519:k",sig="s"'))
        self.assert_fails(d, MalformedAuthorization, 400, "origin is not a valid server name")

    def test_wrong_destination(self) -> None:
        """A destination other than our server name is 401, without fetching keys."""
        auth, source, _ = make()
        d = self.authenticate(auth, headers(signed(destination="elsewhere.test")))
        self.assert_fails(d, WrongDestination, 401, "'elsewhere.test'")
        assert source.fetched == []

    def test_no_destination_accepted(self) -> None:
        """A header without destination (older servers) verifies against our name."""
        auth, _, _ = make()
        header = signed().replace(b',destination="us.test"', b"")
        assert (self.successResultOf(self.authenticate(auth, headers(header))).origin) == ORIGIN

    def test_unknown_key(self) -> None:
        """A key ID the origin does not publish is 401 naming the keys."""
        auth, _, _ = make()
        other = ServerSigningKey(version="k2", key=KEY.key)
        d = self.authenticate(auth, headers(signed(key=other)))
        self.assert_fails(d, UnknownKey, 401, "ed25519:k2")

    def test_rotated_key_refetched(self) -> None:
        """A key ID missing from the cached keys makes one fresh fetch (key rotation)."""
        new = ServerSigningKey(version="k2", key=OTHER_KEY.key)
        source = FakeKeySource(
            {ORIGIN: good_keys()},
            fresh={ORIGIN: Keys({new.key_id: new.key.verify_key}, VALID_UNTIL)},
        )
        auth, _, _ = make(source)
        result = self.successResultOf(self.authenticate(auth, headers(signed(key=new))))
        assert result == AuthResult(ORIGIN, new.key_id)
        assert source.fresh_fetched == [ORIGIN]

    def test_unknown_key_refetch_rate_limited(self) -> None:
        """Requests naming unknown key IDs refetch an origin at most once a minute."""
        auth, source, clock = make()
        other = ServerSigningKey(version="k9", key=KEY.key)
        for _ in range(3):
            failure_of(self.authenticate(auth, headers(signed(key=other))), UnknownKey)
        assert source.fresh_fetched == [ORIGIN]
        clock.advance(UNKNOWN_KEY_REFETCH_SECONDS)
        failure_of(self.authenticate(auth, headers(signed(key=other))), UnknownKey)
        assert source.fresh_fetched == [ORIGIN, ORIGIN]

    def test_unknown_key_refetch_shares_a_limit_passed_in(self) -> None:
        """Issue 22 row 6: with a refetch limit shared with the room signature checks,
        a turn those took for the origin leaves the X-Matrix path no refetch within the
        minute (one refetch a minute per server, whatever asks)."""
        clock = Clock()
        clock.advance(NOW_S)
        source = FakeKeySource({ORIGIN: good_keys()})
        shared = RefetchLimit(clock)
        auth = RequestAuthenticator(US, source, clock, refetch_limit=shared)
        assert shared.allow(ORIGIN)  # the rooms' turn
        other = ServerSigningKey(version="k9", key=KEY.key)
        failure_of(self.authenticate(auth, headers(signed(key=other))), UnknownKey)
        assert source.fresh_fetched == []

    def test_bad_signature(self) -> None:
        """A signature by another key under a published key ID is 401 bad signature."""
        auth, _, _ = make()
        d = self.authenticate(auth, headers(signed(key=OTHER_KEY)))
        self.assert_fails(d, BadSignature, 401, "does not verify")

    def test_expired_keys(self) -> None:
        """Keys whose valid_until_ts has passed do not authenticate requests."""
        auth, _, _ = make(FakeKeySource({ORIGIN: Keys({KEY.key_id: KEY.key.verify_key}, 1)}))
        self.assert_fails(
            self.authenticate(auth, headers(signed())), KeyFetchFailed, 401, "valid only until"
        )

    def test_one_bad_signature_among_good_rejects(self) -> None:
        """As Synapse: every signature by a known key must verify."""
        auth, _, _ = make()
        d = self.authenticate(auth, headers(signed(), signed(key=OTHER_KEY)))
        failure_of(d, BadSignature)

    def test_non_utf8_target(self) -> None:
        """A request-target that is not UTF-8 is 400: it cannot have been signed."""
        auth, _, _ = make()
        d = self.authenticate(auth, headers(signed()), uri=b"/_matrix/\xff")
        self.assert_fails(d, BadRequestTarget, 400, "not UTF-8")


class NegativeCacheTests(SynchronousTestCase):
    def test_failing_origin_not_refetched(self) -> None:
        """After a failed key fetch, the origin is not fetched again for a while."""
        auth, source, _ = make(FakeKeySource({ORIGIN: ConnectionRefusedError("refused")}))
        d1 = auth.authenticate(b"GET", b"/x", headers(signed(uri="/x")), no_body)
        e1 = failure_of(d1, KeyFetchFailed).value
        assert "ConnectionRefusedError" in str(e1)
        d2 = auth.authenticate(b"GET", b"/x", headers(signed(uri="/x")), no_body)
        e2 = failure_of(d2, KeyFetchFailed).value
        assert "not retrying" in str(e2)
        assert source.fetched == [ORIGIN]

    def test_failing_origin_retried_after_period(self) -> None:
        """After NEGATIVE_CACHE_SECONDS, a failed origin is fetched again."""
        source = FakeKeySource({ORIGIN: ConnectionRefusedError("refused")})
        auth, _, clock = make(source)
        failure_of(auth.authenticate(b"GET", b"/x", headers(signed(uri="/x")), no_body))
        clock.advance(NEGATIVE_CACHE_SECONDS)
        source.results[ORIGIN] = good_keys()
        d = auth.authenticate(b"GET", b"/x", headers(signed(uri="/x")), no_body)
        assert self.successResultOf(d).origin == ORIGIN
        assert source.fetched == [ORIGIN, ORIGIN]

    def test_fetch_timeout(self) -> None:
        """A key fetch that hangs fails after KEY_FETCH_TIMEOUT_SECONDS and is cancelled."""
        pending: Deferred[Keys] = Deferred()
        auth, _, clock = make(FakeKeySource({ORIGIN: pending}))
        d = auth.authenticate(b"GET", b"/x", headers(signed(uri="/x")), no_body)
        assert not d.called
        clock.advance(KEY_FETCH_TIMEOUT_SECONDS)
        assert "TimeoutError" in str(failure_of(d, KeyFetchFailed).value)
        assert pending.called  # cancelled by the timeout


class BlockedOriginTests(SynchronousTestCase):
    def test_blocked_origin_never_dialled(self) -> None:
        """A request claiming an origin at a blocked address makes no outbound connection."""
        from stubserver.config import FederationSettings
        from stubserver.outbound.build import build_federation_client
        from tests.support import FakeReactor

        reactor = FakeReactor()
        reactor.advance(NOW_S)
        context = build_federation_client(reactor, FederationSettings())
        auth = RequestAuthenticator(US, context.key_fetcher, reactor)
        for origin in ("127.0.0.1:8448", "10.1.2.3", "[::1]:8448", "169.254.169.254"):
            with self.subTest(origin=origin):
                d = auth.authenticate(
                    b"GET", b"/x", headers(signed(uri="/x", origin=origin)), no_body
                )
                reactor.advance(1)
                error = failure_of(d, KeyFetchFailed).value
                assert "ip_range_blocklist" in str(error) or "blocked" in str(error), error
        assert reactor.tcpClients == []
        assert reactor.sslClients == []


class NoLockOutTests(SynchronousTestCase):
    """Issue 12: a peer that was down once is not locked out (Synapse remembers no failures)."""

    def test_failure_remembered_seconds_not_minutes(self) -> None:
        """A key-fetch failure is remembered for at most 5 s (was 5 minutes)."""
        assert NEGATIVE_CACHE_SECONDS <= 5

    def test_peer_back_is_accepted_within_seconds(self) -> None:
        """Through a real key fetcher: the origin's key endpoint fails when its first signed
        request arrives (401), comes back, and its next request 5 s later is accepted."""
        import json

        from stubserver.server_keys.fetcher import ServerKeyFetcher
        from stubserver.server_keys.key_document import build_key_document
        from tests.server_keys.test_fetcher import FakeFederationAgent, KeyResource

        clock = Clock()
        clock.advance(NOW_S)
        peer = KeyResource()
        peer.body = json.dumps(build_key_document(ORIGIN, [KEY], {}, VALID_UNTIL)).encode()
        peer.code = 503  # down (its proxy answers)
        fetcher = ServerKeyFetcher(FakeFederationAgent(peer), clock)
        auth = RequestAuthenticator(US, fetcher, clock)
        uri = "/x"
        failure_of(auth.authenticate(b"GET", uri.encode(), headers(signed(uri=uri)), no_body))
        peer.code = 200  # back
        clock.advance(5)
        d = auth.authenticate(b"GET", uri.encode(), headers(signed(uri=uri)), no_body)
        assert self.successResultOf(d).origin == ORIGIN
        assert peer.hits == 2

    def test_requests_share_the_fetch_in_flight(self) -> None:
        """Requests arriving while the origin's keys are being fetched wait for that fetch
        (one fetch), and are all answered when it ends."""
        from stubserver.server_keys.fetcher import ServerKeyFetcher
        from tests.server_keys.test_fetcher import FakeFederationAgent, KeyResource

        clock = Clock()
        clock.advance(NOW_S)
        agent = FakeFederationAgent(KeyResource())
        agent.hang = True
        fetcher = ServerKeyFetcher(agent, clock)
        auth = RequestAuthenticator(US, fetcher, clock)
        waiting = [
            auth.authenticate(b"GET", b"/x", headers(signed(uri="/x")), no_body) for _ in range(5)
        ]
        assert len(agent.uris) == 1
        clock.advance(KEY_FETCH_TIMEOUT_SECONDS)
        for d in waiting:
            failure_of(d, KeyFetchFailed)
