"""The ``report`` listener resource: the federation tester's API, served by ``stubserver run``.

- ``GET /api/report?server_name=NAME``: the ``check --json`` report (the tester's fields
  and ours), with the tester's CORS header so that web pages can read it.
- ``GET /api/federation-ok?server_name=NAME``: plain text ``GOOD`` when ``FederationOK``,
  else ``BAD`` (``Content-Type: text/plain``), as both testers answer it: scripts compare
  it as text.
- The Rust tester's paths, ``/api/federation/report`` and ``/api/federation/federation-ok``,
  answer the same.
- ``GET /``: the report page for people (:mod:`stubserver.check.page`).

Each report makes outbound requests for whoever asks, so they go through the config's
``ip_range_blocklist`` (Synapse's private ranges by default): the endpoint must not become
a proxy into private networks. Listeners serving ``report`` bind to loopback by default.
At most :data:`MAX_CONCURRENT_REPORTS` reports run at once; more answer 429. A report whose
client disconnects, or that passes the listener's handler deadline, is cancelled (the
router cancels the handler's Deferred): its slot is freed at once and its work stopped.
The checks sign with the server's own identity, so the way back is "can NAME reach this
server".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.web.iweb import IRequest

from stubserver.check.checker import FederationChecker
from stubserver.check.page import page_route
from stubserver.check.report import CheckReport
from stubserver.config import Config
from stubserver.outbound.signed_request import FederationIdentity
from stubserver.reactor import IReactor
from stubserver.server.router import JsonResponse, MatrixError, Route, query_arg

#: Most reports computed at the same time; a further request answers 429.
MAX_CONCURRENT_REPORTS = 4
#: The tester's CORS headers (its HandleReport), so browser tools can call us.
CORS_HEADERS: Mapping[str, str] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, OPTIONS",
    "Access-Control-Allow-Headers": "Origin, X-Requested-With, Content-Type, Accept",
}
REPORT_PATH = "/api/report"
FEDERATION_OK_PATH = "/api/federation-ok"
#: The same answers at the Rust federation tester's paths (MTRNord/rust-federation-tester).
RUST_REPORT_PATH = "/api/federation/report"
RUST_FEDERATION_OK_PATH = "/api/federation/federation-ok"
#: The plain-text verdicts' type.
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


class Checker(Protocol):
    """Anything that makes a report for a server name (the FederationChecker)."""

    def check(self, server_name: str) -> Deferred[CheckReport]:
        """The report; never fails."""


class ReportService:
    """Runs reports with a bounded concurrency; a new checker per report, so that no
    cached .well-known or SRV answer makes a report stale."""

    def __init__(
        self,
        make_checker: Callable[[], Checker],
        max_concurrent: int = MAX_CONCURRENT_REPORTS,
    ) -> None:
        self._make_checker = make_checker
        self._max_concurrent = max_concurrent
        self._running = 0

    @property
    def running(self) -> int:
        """How many reports are running now."""
        return self._running

    def report(self, server_name: str) -> Deferred[CheckReport]:
        """The report for ``server_name``; MatrixError 429 when too many are running."""
        if self._running >= self._max_concurrent:
            raise MatrixError(
                429, "M_LIMIT_EXCEEDED", f"{self._max_concurrent} reports are already running"
            )
        self._running += 1
        freed = False

        def free() -> None:
            nonlocal freed
            if not freed:
                freed = True
                self._running -= 1

        work = self._make_checker().check(server_name)

        def cancel(_: Deferred[CheckReport]) -> None:
            # The client went away or the handler deadline passed (the router cancels us):
            # free the slot now and stop the work, whether or not it stops at once.
            free()
            work.cancel()

        answer: Deferred[CheckReport] = Deferred(cancel)

        def done(result: Any) -> None:
            free()
            if not answer.called:
                answer.callback(result)  # a Failure errbacks

        work.addBoth(done)
        return answer


def _server_name(request: IRequest) -> str:
    name = query_arg(request, "server_name")
    if not name:
        raise MatrixError(400, "M_MISSING_PARAM", "the server_name query parameter is required")
    return name


def report_routes(service: ReportService) -> list[Route]:
    """``GET /api/report``, ``GET /api/federation-ok`` and the page at ``GET /``."""

    def report(request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
        d = service.report(_server_name(request))
        return d.addCallback(lambda r: JsonResponse(200, r.to_json(), CORS_HEADERS))

    def federation_ok(request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
        d = service.report(_server_name(request))
        return d.addCallback(lambda r: federation_ok_response(r.federation_ok))

    return [
        Route("GET", REPORT_PATH, report),
        Route("GET", FEDERATION_OK_PATH, federation_ok),
        Route("GET", RUST_REPORT_PATH, report),
        Route("GET", RUST_FEDERATION_OK_PATH, federation_ok),
        page_route(),
    ]


def federation_ok_response(ok: bool) -> JsonResponse:
    """The plain-text verdict: ``GOOD`` or ``BAD`` (the router sends ``encoded`` as is, and
    our ``Content-Type`` replaces its JSON one)."""
    text = "GOOD" if ok else "BAD"
    headers = {**CORS_HEADERS, "Content-Type": TEXT_CONTENT_TYPE}
    return JsonResponse(200, text, headers, encoded=text.encode("ascii"))


def report_routes_for(reactor: IReactor, config: Config) -> list[Route]:
    """The report routes of ``stubserver run``: checks with the config's federation
    settings (its IP blocklist included) and its identity."""
    identity = FederationIdentity(config.server_name, config.signing_key)
    service = ReportService(lambda: FederationChecker(reactor, config.federation, identity))
    return report_routes(service)
