"""Each listener's site, through StubTreq: keys, version, .well-known, unknown paths."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import signedjson.key
import signedjson.sign
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from stubserver import __version__
from stubserver.app.federation import key_document_source
from stubserver.app.site import WELL_KNOWN_MAX_AGE_SECONDS, ListenerSite, build_site
from stubserver.config import Config, ListenerConfig
from stubserver.control.api import control_routes
from stubserver.control.feed import RequestFeed
from stubserver.server.connections import MAX_CONNECTIONS_PER_ADDRESS
from stubserver.server.router import JsonResponse, Route
from stubserver.signing.keys import ServerSigningKey
from tests.control.fakes import FakeRoomControl
from tests.server.test_limits import connect, responses, sent
from tests.support import result_now, stub_treq

KEY = ServerSigningKey.generate("a_site")


def listener(*resources: str) -> ListenerConfig:
    """A listener serving ``resources`` (certificate paths unused here)."""
    return ListenerConfig(
        port=0,
        bind_addresses=("127.0.0.1",),
        resources=frozenset(resources),
        tls_certificate_path=Path("unused.crt"),
        tls_private_key_path=Path("unused.key"),
    )


def config(*listeners: ListenerConfig, wellknown: str | None = None) -> Config:
    """A config for beta.test with ``listeners``."""
    return Config(
        server_name="beta.test",
        signing_keys=(KEY,),
        listeners=listeners,
        serve_server_wellknown=wellknown,
    )


def fetch(site: ListenerSite, path: str, method: str = "GET") -> tuple[int, Mapping[str, Any], Any]:
    """Status, headers (lower-case name -> first value) and JSON body of one request."""
    stub = stub_treq(site.router)
    response = result_now(stub.request(method, "https://beta.test" + path))
    headers = {k.decode().lower(): v[0].decode() for k, v in response.headers.getAllRawHeaders()}
    return response.code, headers, result_now(stub.json_content(response))


class SiteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        cfg = config(
            listener("federation"),
            listener("well_known"),
            listener("federation", "well_known"),
            wellknown="beta-fed.test:8448",
        )
        federation, well_known, both = build_site(
            cfg, self.clock, keys=key_document_source(cfg, self.clock)
        )
        self.federation, self.well_known, self.both = federation, well_known, both

    def test_routers_provide_iresource(self) -> None:
        """Every listener's router provides IResource."""
        for site in (self.federation, self.well_known, self.both):
            assert verifyObject(IResource, site.router)

    def test_version(self) -> None:
        """The version endpoint names stubserver and its version."""
        status, headers, body = fetch(self.federation, "/_matrix/federation/v1/version")
        assert (status, body) == (200, {"server": {"name": "stubserver", "version": __version__}})
        assert headers["content-type"] == "application/json"

    def test_key_document(self) -> None:
        """The key endpoint serves our signed document, valid for a day from now."""
        status, _, body = fetch(self.federation, "/_matrix/key/v2/server")
        assert status == 200
        assert body["server_name"] == "beta.test"
        assert body["valid_until_ts"] == 1_700_000_000_000 + 86_400_000
        verify_key = signedjson.key.decode_verify_key_base64(
            "ed25519", "a_site", body["verify_keys"]["ed25519:a_site"]["key"]
        )
        signedjson.sign.verify_signed_json(body, "beta.test", verify_key)

    def test_listeners_share_one_key_document(self) -> None:
        """Two federation listeners serve the same document."""
        assert fetch(self.federation, "/_matrix/key/v2/server") == fetch(
            self.both, "/_matrix/key/v2/server"
        )

    def test_well_known(self) -> None:
        """A well_known listener answers m.server with a Cache-Control max-age."""
        status, headers, body = fetch(self.well_known, "/.well-known/matrix/server")
        assert (status, body) == (200, {"m.server": "beta-fed.test:8448"})
        assert headers["cache-control"] == f"max-age={WELL_KNOWN_MAX_AGE_SECONDS}"
        assert 300 <= WELL_KNOWN_MAX_AGE_SECONDS <= 172_800

    def test_resources_are_separate(self) -> None:
        """A listener answers only its resources' paths; others are JSON 404."""
        assert fetch(self.well_known, "/_matrix/key/v2/server")[0] == 404
        status, _, body = fetch(self.federation, "/.well-known/matrix/server")
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
        assert fetch(self.both, "/.well-known/matrix/server")[0] == 200
        assert fetch(self.both, "/_matrix/federation/v1/version")[0] == 200

    def test_unknown_matrix_path(self) -> None:
        """An unknown /_matrix path is 404 M_UNRECOGNIZED."""
        status, headers, body = fetch(self.federation, "/_matrix/federation/v1/nope")
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
        assert headers["content-type"] == "application/json"

    def test_wrong_method(self) -> None:
        """A known path with the wrong method is 405 M_UNRECOGNIZED."""
        status, _, body = fetch(self.federation, "/_matrix/key/v2/server", method="POST")
        assert (status, body["errcode"]) == (405, "M_UNRECOGNIZED")

    def test_other_paths_are_json_404(self) -> None:
        """Paths outside /_matrix and /.well-known are JSON 404 too."""
        status, headers, body = fetch(self.federation, "/")
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")
        assert headers["content-type"] == "application/json"


class WellKnownUnconfiguredTests(SynchronousTestCase):
    def test_not_found(self) -> None:
        """Without serve_server_wellknown, /.well-known/matrix/server is 404 M_NOT_FOUND."""
        cfg, clock = config(listener("well_known")), Clock()
        (site,) = build_site(cfg, clock, keys=key_document_source(cfg, clock))
        status, _, body = fetch(site, "/.well-known/matrix/server")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


class ExtensionTests(SynchronousTestCase):
    def test_extra_routes_join_federation_listeners(self) -> None:
        """extra_routes are served by federation listeners only; observers see responses."""

        def profile(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            return JsonResponse(200, {"displayname": "Alice"})

        seen: list[int] = []
        cfg, clock = config(listener("federation"), listener("well_known")), Clock()
        federation, well_known = build_site(
            cfg,
            clock,
            keys=key_document_source(cfg, clock),
            extra_routes=[Route("GET", "/_matrix/federation/v1/query/profile", profile)],
            observers=[lambda request, status, body: seen.append(status)],
        )
        assert fetch(federation, "/_matrix/federation/v1/query/profile")[0] == 200
        assert fetch(well_known, "/_matrix/federation/v1/query/profile")[0] == 404
        assert seen == [200, 404]

    def test_routes_by_resource(self) -> None:
        """routes_by_resource adds routes to listeners serving that resource."""

        def report(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
            return JsonResponse(200, {"FederationOK": True})

        cfg, clock = config(listener("federation"), listener("report")), Clock()
        federation, reporting = build_site(
            cfg,
            clock,
            keys=key_document_source(cfg, clock),
            routes_by_resource={"report": [Route("GET", "/api/report", report)]},
        )
        assert fetch(reporting, "/api/report")[0] == 200
        assert fetch(federation, "/api/report")[0] == 404


class ConnectionBudgetTests(SynchronousTestCase):
    def test_control_long_polls_from_one_address_have_their_own_budget(self) -> None:
        """Issue 22, row 10: 300 long polls on the control API from one address are all
        held and answered (with one budget for every listener, the 65th was aborted),
        while the federation listener still aborts the 65th connection from one address."""
        clock = Clock()
        cfg = config(listener("federation"), listener("control"))
        feed = RequestFeed(clock)
        federation, control = build_site(
            cfg,
            clock,
            keys=key_document_source(cfg, clock),
            routes_by_resource={"control": control_routes(FakeRoomControl(), "t", feed)},
        )
        poll = (
            b"GET /_stubserver/v1/requests?from=0&wait_ms=60000 HTTP/1.1\r\n"
            b"Host: a\r\nAuthorization: Bearer t\r\n\r\n"
        )
        polls = [connect(control.site, "127.0.0.1") for _ in range(300)]
        for channel, _ in polls:
            channel.dataReceived(poll)
        assert [t.disconnected for _, t in polls].count(True) == 0
        assert feed.feed.waiting == 300
        version = b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: a\r\n\r\n"
        request: Any = DummyRequest([b"_matrix", b"federation", b"v1", b"version"])
        request.path = request.uri = b"/_matrix/federation/v1/version"
        feed(request, 200, {})
        answered = [responses(sent(t)) for _, t in polls]
        assert [[status for status, _ in a] for a in answered] == [[200]] * 300
        fed = [connect(federation.site, "127.0.0.1") for _ in range(MAX_CONNECTIONS_PER_ADDRESS)]
        assert [t.disconnected for _, t in fed].count(True) == 0
        _, over = connect(federation.site, "127.0.0.1")
        assert over.disconnected
        fed[0][0].dataReceived(version)
        assert [s for s, _ in responses(sent(fed[0][1]))] == [200]
