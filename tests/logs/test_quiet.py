"""The quiet Twisted pieces (stubserver.logs): what they log, without a socket."""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.python import log as legacy_log
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import HTTPConnectionPool
from zope.interface import implementer

from stubserver.logs.legacy import at_debug_level
from stubserver.logs.quiet import QuietHTTPConnectionPool, quiet_udp_reactor
from tests.support import FakeReactor


@implementer(IStreamClientEndpoint)
class StartingEndpoint:
    """An endpoint that starts the factory it is given, as a reactor's connector does, and
    never connects."""

    def __init__(self) -> None:
        self.factories: list[Any] = []

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        self.factories.append(protocolFactory)
        protocolFactory.doStart()
        return Deferred()


def _texts(events: list[dict[str, Any]]) -> list[str]:
    return [str(e.get("log_format", "")) for e in events]


class QuietPoolTests(SynchronousTestCase):
    def _start_one_connection(self, pool: HTTPConnectionPool) -> list[dict[str, Any]]:
        endpoint = StartingEndpoint()
        with capturedLogs() as events:
            pool.getConnection(("https", b"b.test", 443), endpoint)
            endpoint.factories[0].doStop()
        return list(events)

    def test_twisted_pool_logs_each_connection_factory_start_and_stop(self) -> None:
        """Baseline: Twisted's own pool writes "Starting factory" and "Stopping factory"
        for every connection it makes (what issue 24 saw four to six of per request)."""
        pool = HTTPConnectionPool(MemoryReactorClock())  # type: ignore[no-untyped-call]
        texts = _texts(self._start_one_connection(pool))
        assert texts == ["Starting factory {factory!r}", "Stopping factory {factory!r}"]

    def test_quiet_pool_starts_and_stops_connection_factories_without_a_line(self) -> None:
        """QuietHTTPConnectionPool's connection factories start and stop unlogged."""
        pool = QuietHTTPConnectionPool(MemoryReactorClock())  # type: ignore[no-untyped-call]
        assert self._start_one_connection(pool) == []


class LegacyLevelTests(SynchronousTestCase):
    def test_legacy_lines_are_info_by_default(self) -> None:
        """Baseline: a legacy ``log.msg`` line (a port's "starting on") is at info level."""
        with capturedLogs() as events:
            legacy_log.msg("X starting on 1234")
        assert [e["log_level"] for e in events] == [LogLevel.info]

    def test_at_debug_level_writes_legacy_lines_at_debug(self) -> None:
        """Under at_debug_level the same line is at debug level, and the call's result
        comes back."""
        with capturedLogs() as events:
            result = at_debug_level(lambda n: legacy_log.msg(f"X starting on {n}") or n, 1234)
        assert result == 1234
        assert [(e["log_level"], e["log_text"]) for e in events] == [
            (LogLevel.debug, "X starting on 1234")
        ]

    def test_new_style_lines_keep_their_level_under_at_debug_level(self) -> None:
        """A twisted.logger error inside at_debug_level stays an error: only legacy
        ``log.msg`` lines take the context's level."""
        from twisted.logger import Logger

        with capturedLogs() as events:
            at_debug_level(lambda: Logger().error("broken"))
        assert [e["log_level"] for e in events] == [LogLevel.error]


class QuietUdpReactorTests(SynchronousTestCase):
    def test_a_reactor_without_udp_is_given_back_as_it_is(self) -> None:
        """A fake without UDP (MemoryReactorClock) is not wrapped: the resolver fails on it
        as it did before."""
        reactor = MemoryReactorClock()  # type: ignore[no-untyped-call]
        assert quiet_udp_reactor(reactor) is reactor

    def test_a_fake_that_declares_udp_is_given_back_as_it_is(self) -> None:
        """A fake that declares IReactorUDP (tests.support.FakeReactor) is not wrapped
        either: a QuietUDPPort would open a real socket that the fake never polls."""
        reactor = FakeReactor()
        assert quiet_udp_reactor(reactor) is reactor


def test_start_logging_rejects_an_unknown_level() -> None:
    """start_logging names the levels it takes (before touching the global beginner)."""
    import pytest

    from stubserver.logs.output import start_logging

    with pytest.raises(ValueError, match="debug, info, warn, error"):
        start_logging(io.StringIO(), "verbose")


class ResolverConstructionTests(SynchronousTestCase):
    def test_reading_resolv_conf_writes_nothing_at_info(self) -> None:
        """The system resolver reads /etc/resolv.conf ("changed, reparsing", "Resolver
        added ...") at debug level only."""
        from pathlib import Path

        from stubserver.discovery.dns import RESOLV_CONF, build_dns_clients

        if not Path(RESOLV_CONF.decode()).exists():
            raise self.skipTest("no /etc/resolv.conf here")
        with capturedLogs() as events:
            build_dns_clients(FakeReactor(), ())
        assert [e["log_level"] for e in events if e["log_level"] > LogLevel.debug] == []
        assert any("resolv.conf" in str(e.get("log_text")) for e in events)
