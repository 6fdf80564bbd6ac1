"""A report stops when nobody waits for it any more (issue 12, row 11).

When the HTTP client disconnects, or the listener's handler deadline passes, the report's
Deferred is cancelled: its work stops and its slot among the MAX_CONCURRENT_REPORTS is
freed, so that clients that go away cannot lock the report service. In-process: the real
router and report routes, a checker that never finishes on its own, DummyRequests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from stubserver.check.api import ReportService, report_routes
from stubserver.check.checker import FederationChecker
from stubserver.check.report import CheckReport
from stubserver.config import FederationSettings
from stubserver.discovery.dns import DnsClients
from stubserver.outbound.signed_request import FederationIdentity
from stubserver.server.router import FederationRouter
from stubserver.signing.keys import ServerSigningKey
from tests.check.test_prober import FakeAddresses, FakeSrv
from tests.support import FakeReactor, failure_now, has_fired

DEADLINE_SECONDS = 60.0


class NeverEndingChecker:
    """A check that never finishes on its own and, like a check whose step turned the
    cancellation into a failure, carries on after being cancelled (to its next step, which
    never ends). Records each cancellation of the step it was waiting on."""

    def __init__(self, cancelled: list[str]) -> None:
        self._cancelled = cancelled

    def check(self, server_name: str) -> Deferred[CheckReport]:
        return Deferred.fromCoroutine(self._check(server_name))

    async def _check(self, server_name: str) -> CheckReport:
        try:
            await Deferred()
        except CancelledError:
            self._cancelled.append(server_name)
        await Deferred()  # the next step: never ends
        return CheckReport(server_name)


class ReportCancellationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cancelled: list[str] = []
        self.clock = Clock()
        self.service = ReportService(lambda: NeverEndingChecker(self.cancelled), max_concurrent=1)
        self.router = FederationRouter(
            report_routes(self.service),
            clock=self.clock,
            handler_deadline_seconds=DEADLINE_SECONDS,
        )

    def _start(self, name: str) -> Any:
        request: Any = DummyRequest([b"api", b"report"])
        request.path = b"/api/report"
        request.uri = b"/api/report?server_name=" + name.encode()
        request.addArg(b"server_name", name.encode())
        self.router.render(request)
        return request

    def _status(self, request: Any) -> Any:
        return request.responseCode

    def test_client_gone_cancels_the_report_and_frees_its_slot(self) -> None:
        """A client that disconnects cancels its report; the next report is accepted."""
        first = self._start("a.test")
        assert self.service.running == 1
        gone = Failure(ConnectionError("the client went away"))  # type: ignore[no-untyped-call]
        first.processingFailed(gone)
        assert self.cancelled == ["a.test"]
        assert self.service.running == 0
        second = self._start("b.test")
        assert self._status(second) != 429
        assert self.service.running == 1

    def test_deadline_cancels_the_report_and_frees_its_slot(self) -> None:
        """A report not done by the handler deadline is cancelled (504) and its slot freed."""
        first = self._start("a.test")
        self.clock.advance(DEADLINE_SECONDS)
        assert self.cancelled == ["a.test"]
        assert self._status(first) == 504
        assert self.service.running == 0
        second = self._start("b.test")
        assert self._status(second) != 429


class FailingConnector:
    """What ``clientConnectionFailed`` is given; a MemoryReactor connector stand-in."""

    def stopConnecting(self) -> None:
        """Nothing to stop."""


class CheckerCancellationTests(SynchronousTestCase):
    def test_cancel_stops_the_check(self) -> None:
        """Cancelling a FederationChecker's check fails it with CancelledError at once, and
        no further step starts, even when the step under way turns its cancelled connect
        into an ordinary failure (as a real reactor's ConnectingCancelledError does)."""
        reactor = FakeReactor()
        dns = DnsClients(srv=FakeSrv(), addresses=FakeAddresses(("127.0.0.1",)))
        settings = FederationSettings(ip_range_allowlist=("127.0.0.0/8",))
        identity = FederationIdentity("us.test", ServerSigningKey.generate("k1"))
        checker = FederationChecker(reactor, settings, identity, dns=dns)
        d = checker.check("a.test")
        handled = 0
        hung: Any = None
        # Refuse every connection until the first key probe (port 8448), which hangs.
        while hung is None:
            assert handled < len(reactor.tcpClients), "the check stopped dialling early"
            factory: Any
            _host, port, factory, *_ = reactor.tcpClients[handled]
            handled += 1
            if port == 8448:
                hung = factory
            else:
                refused = Failure(ConnectionRefusedError())  # type: ignore[no-untyped-call]
                factory.clientConnectionFailed(FailingConnector(), refused)
        assert not has_fired(d)
        d.cancel()
        assert isinstance(failure_now(d).value, CancelledError)
        dialled = len(reactor.tcpClients)
        cancelled = Failure(ConnectingCancelledError(None))  # type: ignore[no-untyped-call]
        hung.clientConnectionFailed(FailingConnector(), cancelled)
        reactor.advance(60)
        assert len(reactor.tcpClients) == dialled  # no version, no signed request, no way back
