"""FederationClient: signs, sends through an IAgent, bounds the body and the time."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from nacl.signing import SigningKey, VerifyKey
from treq.testing import RequestTraversalAgent
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IRequest, IResponse
from zope.interface import implementer
from zope.interface.verify import verifyObject

from stubserver.app.profile import profile_route
from stubserver.auth.authenticator import RequestAuthenticator
from stubserver.auth.filter import XMatrixFilter
from stubserver.auth.xmatrix import parse_authorization_header
from stubserver.config import UserProfile
from stubserver.outbound.signed_request import (
    MAX_RESPONSE_BODY_BYTES,
    REQUEST_TIMEOUT_SECONDS,
    BytesProducer,
    FederationClient,
    FederationIdentity,
    FederationRequestFailed,
    RequestTimedOut,
    ResponseTooLarge,
)
from stubserver.server.router import FederationRouter, JsonResponse, Route, request_annotations
from stubserver.signing.keys import ServerSigningKey
from tests.support import failure_now

ME = "me.test"
THEM = "them.test"
MY_KEY = ServerSigningKey(version="m1", key=SigningKey(b"\x09" * 32))
NOW_S = 1_700_000_000


@dataclass(frozen=True)
class Keys:
    verify_keys: Mapping[str, VerifyKey]
    valid_until_ts: int


class MyKeys:
    """The receiver's key source: knows our key."""

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[Keys]:
        return succeed(Keys({MY_KEY.key_id: MY_KEY.key.verify_key}, NOW_S * 1000 + 10**7))

    fetch = fetch_cached_or_fresh


@implementer(IAgent)
class InMemoryFederationAgent:
    """Serves matrix-federation:// requests from a resource in memory; records them."""

    def __init__(self, router: FederationRouter) -> None:
        self._inner: Any = RequestTraversalAgent(router)  # type: ignore[no-untyped-call]
        self.requests: list[tuple[bytes, bytes, Headers]] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        assert headers is not None
        self.requests.append((method, uri, headers))
        https = uri.replace(b"matrix-federation://", b"https://", 1)
        d: Deferred[IResponse] = self._inner.request(method, https, headers, bodyProducer)
        return d

    def flush(self) -> None:
        self._inner.flush()


@implementer(IAgent)
class SilentAgent:
    """An agent whose requests never complete; records whether they were cancelled.

    With ``cancel_error``, cancelling fails the request with that error instead of
    CancelledError, as Twisted's connector does when cancelled mid-connect.
    """

    def __init__(self, cancel_error: Exception | None = None) -> None:
        self.pending: list[Deferred[IResponse]] = []
        self._cancel_error = cancel_error

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        error = self._cancel_error

        def canceller(d: Deferred[IResponse]) -> None:
            if error is not None:
                d.errback(error)

        d: Deferred[IResponse] = Deferred(canceller if error is not None else None)
        self.pending.append(d)
        return d


@implementer(IAgent)
class RefusingAgent:
    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        failed: Deferred[IResponse] = fail(ConnectionRefusedError("connection refused"))
        return failed


def receiver(extra_routes: list[Route] | None = None) -> tuple[FederationRouter, list[Any]]:
    clock = Clock()
    clock.advance(NOW_S)
    notes: list[Any] = []

    def observe(request: IRequest, status: int, body: Any) -> None:
        notes.append((status, dict(request_annotations(request))))

    router = FederationRouter(
        [profile_route(THEM, {"alice": UserProfile(displayname="Alice")}), *(extra_routes or [])],
        filters=[XMatrixFilter(RequestAuthenticator(THEM, MyKeys(), clock))],
        observers=[observe],
    )
    return router, notes


def client(agent: IAgent, clock: Clock | None = None) -> FederationClient:
    return FederationClient(agent, FederationIdentity(ME, MY_KEY), clock or Clock())


class ClientTests(SynchronousTestCase):
    def test_body_producer_interface(self) -> None:
        """BytesProducer provides IBodyProducer with the body's length."""
        producer = BytesProducer(b"abc")
        assert verifyObject(IBodyProducer, producer)
        assert producer.length == 3

    def test_signed_request_accepted(self) -> None:
        """A request we sign authenticates at a receiver that knows our key."""
        router, notes = receiver()
        agent = InMemoryFederationAgent(router)
        path = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Athem.test"
        d = client(agent).request("GET", THEM, path)
        agent.flush()
        response = self.successResultOf(d)
        assert (response.status, json.loads(response.body)) == (200, {"displayname": "Alice"})
        ((_, seen),) = notes
        assert (seen["origin"], seen["authenticated"]) == (ME, True)
        ((method, uri, headers),) = agent.requests
        assert (method, uri) == (b"GET", b"matrix-federation://them.test" + path.encode())
        (auth,) = headers.getRawHeaders(b"authorization") or []
        parsed = parse_authorization_header(auth)
        assert (parsed.origin, parsed.destination, parsed.key_id) == (ME, THEM, MY_KEY.key_id)

    def test_content_signed_and_sent(self) -> None:
        """A body is sent as JSON and covered by the signature."""
        router, notes = receiver()
        agent = InMemoryFederationAgent(router)
        d = client(agent).request("PUT", THEM, "/_matrix/federation/v1/x/1", {"k": [1, 2]})
        agent.flush()
        assert self.successResultOf(d).status == 404
        ((_, seen),) = notes
        assert (seen["authenticated"], seen["content"]) == (True, {"k": [1, 2]})
        ((_, _, headers),) = agent.requests
        assert headers.getRawHeaders(b"content-type") == [b"application/json"]

    def test_large_body_refused(self) -> None:
        """A response body over MAX_RESPONSE_BODY_BYTES fails with ResponseTooLarge."""

        def big(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            return JsonResponse(200, {"x": "y" * MAX_RESPONSE_BODY_BYTES})

        router, _ = receiver([Route("GET", "/_matrix/federation/v1/big", big)])
        agent = InMemoryFederationAgent(router)
        d = client(agent).request("GET", THEM, "/_matrix/federation/v1/big")
        agent.flush()
        assert isinstance(failure_now(d).value, ResponseTooLarge)

    def test_deadline(self) -> None:
        """No response within REQUEST_TIMEOUT_SECONDS fails with RequestTimedOut and cancels."""
        clock = Clock()
        agent = SilentAgent()
        d = client(agent, clock).request("GET", THEM, "/_matrix/federation/v1/version")
        clock.advance(REQUEST_TIMEOUT_SECONDS)
        error = failure_now(d).value
        assert isinstance(error, RequestTimedOut)
        assert error.temporary
        (pending,) = agent.pending
        assert pending.called  # cancelled

    def test_deadline_whatever_the_cancellation_becomes(self) -> None:
        """A deadline that surfaces as another error (a connector's) is still RequestTimedOut."""
        clock = Clock()
        agent = SilentAgent(cancel_error=RuntimeError("The Connector was not connecting"))
        d = client(agent, clock).request("GET", THEM, "/_matrix/federation/v1/version")
        clock.advance(REQUEST_TIMEOUT_SECONDS)
        error = failure_now(d).value
        assert isinstance(error, RequestTimedOut)
        assert f"within {REQUEST_TIMEOUT_SECONDS} s" in str(error)

    def test_connection_failure(self) -> None:
        """A connection failure is a FederationRequestFailed saying why."""
        d = client(RefusingAgent()).request("GET", THEM, "/_matrix/federation/v1/version")
        error = failure_now(d).value
        assert isinstance(error, FederationRequestFailed)
        assert "refused" in str(error)

    def test_bad_paths(self) -> None:
        """Paths that cannot be signed and sent as given are refused before sending."""
        agent = SilentAgent()
        for path in ("no-slash", "/with space", "/caf\u00e9", "/frag#x"):
            with self.subTest(path=path), pytest.raises(ValueError):
                client(agent).request("GET", THEM, path)
        assert agent.pending == []

    def test_caller_limits(self) -> None:
        """A client made with tighter limits (as ``check`` makes it) keeps to them: a body over
        its ``max_body_bytes`` fails with ResponseTooLarge, and its deadline is its own."""

        def small(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            return JsonResponse(200, {"x": "y" * 100})

        router, _ = receiver([Route("GET", "/_matrix/federation/v1/small", small)])
        agent = InMemoryFederationAgent(router)
        tight = FederationClient(agent, FederationIdentity(ME, MY_KEY), Clock(), max_body_bytes=50)
        d = tight.request("GET", THEM, "/_matrix/federation/v1/small")
        agent.flush()
        error = failure_now(d).value
        assert isinstance(error, ResponseTooLarge)
        assert "larger than 50 bytes" in str(error)

        clock = Clock()
        silent = SilentAgent()
        quick = FederationClient(silent, FederationIdentity(ME, MY_KEY), clock, timeout_seconds=15)
        d = quick.request("GET", THEM, "/_matrix/federation/v1/version")
        clock.advance(15)
        assert isinstance(failure_now(d).value, RequestTimedOut)

    def test_notary_key_ids(self) -> None:
        """An identity's key IDs are its signing key's ID (what a notary returns for us)."""
        assert FederationIdentity(ME, MY_KEY).key_ids == (MY_KEY.key_id,)
