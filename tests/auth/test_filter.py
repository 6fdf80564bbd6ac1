"""The X-Matrix filter with hostile bodies: every request answered as JSON and observed."""

from __future__ import annotations

import json
from typing import Any

from nacl.signing import SigningKey
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest

from stubserver.auth.authenticator import RequestAuthenticator
from stubserver.auth.filter import XMatrixFilter
from stubserver.auth.xmatrix import sign_request
from stubserver.server.router import FederationRouter
from stubserver.signing.keys import ServerSigningKey
from tests.auth.test_authenticator import Keys
from tests.support import stub_treq

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
