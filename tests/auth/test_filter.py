"""The X-Matrix filter with hostile bodies: every request answered as JSON and observed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from io import BytesIO
from typing import Any

from nacl.signing import SigningKey
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from stubserver.auth.authenticator import RequestAuthenticator
from stubserver.auth.filter import (
    SLICED_PARSE_BYTES,
    XMatrixFilter,
    request_content,
    require_origin,
)
from stubserver.auth.xmatrix import sign_request
from stubserver.server.router import FederationRouter, JsonResponse, Route
from stubserver.signing.keys import ServerSigningKey
from stubserver.slices import SLICE_SECONDS
from tests.auth.test_authenticator import FakeKeySource, Keys
from tests.support import WorkClock, stub_treq

US = "us.test"
ORIGIN = "origin.test"
KEY = ServerSigningKey(version="k1", key=SigningKey(b"\x09" * 32))
PATH = "/_matrix/federation/v1/send/1"


class Source:
    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[Keys]:
        return succeed(Keys({KEY.key_id: KEY.key.verify_key}, 2**52))

    fetch = fetch_cached_or_fresh


class HostileBodyTests(SynchronousTestCase):
    def test_lone_surrogate_body_is_400_and_observed(self) -> None:
        """A signed request whose body holds a lone surrogate escape answers 400 M_BAD_JSON
        (it was a 500 with a traceback, missing from the request log) and is observed."""
        clock = Clock()
        clock.advance(1_700_000_000)
        observed: list[int] = []

        def observe(request: IRequest, status: int, body: Any) -> None:
            observed.append(status)

        auth = RequestAuthenticator(US, Source(), clock)
        router = FederationRouter([], filters=[XMatrixFilter(auth)], observers=[observe])
        treq = stub_treq(router)
        header = sign_request("PUT", PATH, origin=ORIGIN, destination=US, key=KEY, content={})
        d = treq.request(
            "PUT",
            "https://us.test" + PATH,
            headers={b"Authorization": [header]},
            data=b'{"pdus": [], "edus": [{"content": {"x": "\\ud800"}}]}',
        )
        treq.flush()
        response = self.successResultOf(d)
        content = treq.content(response)
        treq.flush()
        body = json.loads(self.successResultOf(content))
        assert (response.code, body["errcode"]) == (400, "M_BAD_JSON")
        assert observed == [400]


class CountingBody(BytesIO):
    """A request body that counts the bytes read out of it."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


#: An 8 MiB body of empty objects, the largest a /send may carry (issue 22, row 1).
BIG_BODY = b'{"pdus": [' + b"{}," * (8 * 1024 * 1024 // 3 - 8) + b"{}]}"


def send_request(body: bytes, authorization: bytes | None) -> tuple[Any, CountingBody]:
    """A ``PUT /send`` with ``body`` and the given Authorization header (None: none)."""
    request: Any = DummyRequest([b"_matrix", b"federation", b"v1", b"send", b"1"])
    request.method = b"PUT"
    request.uri = request.path = PATH.encode("ascii")
    counting = CountingBody(body)
    request.content = counting
    if authorization is not None:
        request.requestHeaders.setRawHeaders(b"Authorization", [authorization])
    return request, counting


class AuthenticationBeforeParsingTests(SynchronousTestCase):
    """Issue 22, row 1: no body is read before its request's credentials could be good."""

    def answer(
        self, request: Any, source: FakeKeySource | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Serve ``request`` with the real filter before a handler that needs an origin and
        then the body (as the rooms routes do); the status and JSON answered."""
        clock = Clock()
        clock.advance(1_700_000_000)
        keys = Keys({KEY.key_id: KEY.key.verify_key}, 2**52)
        auth = RequestAuthenticator(US, source or FakeKeySource({ORIGIN: keys}), clock)

        def handle(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            require_origin(request)
            return JsonResponse(200, {"pdus": len(request_content(request)["pdus"])})

        router = FederationRouter(
            [Route("PUT", "/_matrix/federation/v1/send/{txnId}", handle)],
            filters=[XMatrixFilter(auth)],
        )
        router.render(request)
        assert request.finished
        return request.responseCode, json.loads(b"".join(request.written))

    def test_no_authorization_is_401_without_reading_the_body(self) -> None:
        """An 8 MiB /send without an Authorization header answers 401 having read none of
        its body (it was parsed whole before the header was looked at)."""
        request, body = send_request(BIG_BODY, None)
        status, answer = self.answer(request)
        assert (status, answer["errcode"], body.bytes_read) == (401, "M_UNAUTHORIZED", 0)

    def test_malformed_header_is_400_without_reading_the_body(self) -> None:
        """An X-Matrix header that does not parse answers 400 having read none of the body."""
        request, body = send_request(BIG_BODY, b'X-Matrix origin="a b",key="ed25519:k",sig="s"')
        status, answer = self.answer(request)
        assert (status, answer["errcode"], body.bytes_read) == (400, "M_UNAUTHORIZED", 0)

    def test_unknown_origin_is_401_without_reading_the_body(self) -> None:
        """A well-formed header from an origin whose keys cannot be fetched answers 401
        having read none of the body."""
        header = sign_request("PUT", PATH, origin=ORIGIN, destination=US, key=KEY, content={})
        request, body = send_request(BIG_BODY, header)
        source = FakeKeySource({ORIGIN: ConnectionRefusedError("no such server")})
        status, answer = self.answer(request, source)
        assert (status, answer["errcode"], body.bytes_read) == (401, "M_UNAUTHORIZED", 0)

    def test_unpublished_key_is_401_without_reading_the_body(self) -> None:
        """A header signed with a key its origin does not publish answers 401 having read
        none of the body."""
        other = ServerSigningKey(version="k2", key=SigningKey(b"\x0a" * 32))
        header = sign_request("PUT", PATH, origin=ORIGIN, destination=US, key=other, content={})
        request, body = send_request(BIG_BODY, header)
        status, answer = self.answer(request)
        assert (status, answer["errcode"], body.bytes_read) == (401, "M_UNAUTHORIZED", 0)

    def test_a_good_signature_reads_the_body_once(self) -> None:
        """A correctly signed request has its body read once (plus the one byte that shows
        there is a body), for the signature and the handler both."""
        content: dict[str, Any] = {"pdus": [{}, {}]}
        raw = json.dumps(content).encode()
        header = sign_request("PUT", PATH, origin=ORIGIN, destination=US, key=KEY, content=content)
        request, body = send_request(raw, header)
        status, answer = self.answer(request)
        assert (status, answer, body.bytes_read) == (200, {"pdus": 2}, len(raw) + 1)


class SlicedParseTests(SynchronousTestCase):
    """Issue 22 (/version stall): a large signed body is parsed and its signature checked
    in slices of time when the filter has a clock."""

    def test_a_large_body_is_parsed_and_checked_in_slices(self) -> None:
        """A signed /send over SLICED_PARSE_BYTES, when each element takes a slice's time,
        is authenticated only after a reactor turn per PDU or more, with the body noted as
        parsed; one under the threshold is parsed in one go (a few turns in all)."""
        pdus = [{"n": i, "pad": "x" * 200} for i in range(SLICED_PARSE_BYTES // 200)]
        for content, turns in (
            ({"pdus": pdus}, range(len(pdus), 3 * len(pdus))),
            ({"pdus": pdus[:2]}, range(1, 10)),
        ):
            clock = WorkClock(2 * SLICE_SECONDS)
            clock.advance(1_700_000_000)
            keys = Keys({KEY.key_id: KEY.key.verify_key}, 2**52)
            auth = RequestAuthenticator(US, FakeKeySource({ORIGIN: keys}), clock)
            header = sign_request(
                "PUT", PATH, origin=ORIGIN, destination=US, key=KEY, content=content
            )
            request, _ = send_request(json.dumps(content).encode(), header)
            filtered = XMatrixFilter(auth, clock=clock)(request)
            assert filtered is not None
            turned = 0
            while not filtered.called and turned < 3 * len(pdus):
                clock.advance(0)
                turned += 1
            self.successResultOf(filtered)
            assert turned in turns
            assert request_content(request) == content
            assert require_origin(request) == ORIGIN
