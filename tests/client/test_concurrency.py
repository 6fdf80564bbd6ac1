"""The cap on concurrent outbound requests (issue 12, row 13), with fakes: no sockets."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from stubserver.client.blocklist import IPBlocklist
from stubserver.client.concurrency import OutboundBusy, OutboundLimiter
from stubserver.discovery.resolution import Resolution, Target
from stubserver.outbound.agent import MatrixFederationAgent
from stubserver.tls.certificates import make_ca
from stubserver.tls.client import FederationTlsPolicy
from tests.support import FakeReactor, failure_now, has_fired

ALLOW_ALL = IPBlocklist.from_settings((), ("0.0.0.0/0",))


class FakeResolver:
    """Resolves every name to one documentation address."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def resolve(self, server_name: str) -> Deferred[Resolution]:
        self.names.append(server_name)
        target = Target("192.0.2.1", 8448, ("192.0.2.1",), server_name, server_name, "srv")
        return succeed(Resolution(server_name, targets=(target,)))


def refuse(reactor: MemoryReactorClock, index: int) -> None:
    factory = reactor.tcpClients[index][2]
    factory.clientConnectionFailed(
        reactor.connectors[index],
        Failure(ConnectionRefusedError()),  # type: ignore[no-untyped-call]
    )


class LimiterTests(SynchronousTestCase):
    def test_total_cap(self) -> None:
        """Past the total cap a request waits; a release hands its slot to the first waiter."""
        limiter = OutboundLimiter(max_total=2, max_per_destination=2, max_queued=10)
        first, second = limiter.acquire("a"), limiter.acquire("b")
        third = limiter.acquire("c")
        assert has_fired(first) and has_fired(second)
        assert not has_fired(third)
        limiter.release("a")
        assert has_fired(third)
        assert (limiter.in_flight, limiter.waiting) == (2, 0)

    def test_per_destination_cap(self) -> None:
        """A destination at its cap waits while other destinations still get slots."""
        limiter = OutboundLimiter(max_total=10, max_per_destination=1, max_queued=10)
        limiter.acquire("a")
        waiting = limiter.acquire("a")
        other = limiter.acquire("b")
        assert not has_fired(waiting)
        assert has_fired(other)
        limiter.release("b")
        assert not has_fired(waiting)
        limiter.release("a")
        assert has_fired(waiting)

    def test_full_queue_fails_fast(self) -> None:
        """With the queue full a request fails at once with a temporary OutboundBusy."""
        limiter = OutboundLimiter(max_total=1, max_per_destination=1, max_queued=1)
        limiter.acquire("a")
        limiter.acquire("a")
        failure = failure_now(limiter.acquire("b"))
        assert isinstance(failure.value, OutboundBusy)
        assert failure.value.temporary

    def test_cancelled_waiter_leaves_the_queue(self) -> None:
        """Cancelling a waiting request frees its place in the queue."""
        limiter = OutboundLimiter(max_total=1, max_per_destination=1, max_queued=1)
        limiter.acquire("a")
        waiting = limiter.acquire("a")
        waiting.cancel()
        failure_now(waiting)
        assert limiter.waiting == 0


class AgentCapTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        ca_file = Path(folder.name) / "ca.crt"
        ca_file.write_bytes(make_ca("cap test CA").cert_pem)
        self.tls = FederationTlsPolicy([ca_file])

    def agent(self, limiter: OutboundLimiter) -> MatrixFederationAgent:
        resolver: Any = FakeResolver()
        return MatrixFederationAgent(self.reactor, resolver, self.tls, ALLOW_ALL, limiter=limiter)

    def test_request_past_the_total_cap_connects_only_after_one_finishes(self) -> None:
        """With a cap of N, the N+1th request does not dial until one of the N finishes."""
        agent = self.agent(OutboundLimiter(max_total=3, max_per_destination=3, max_queued=10))
        requests = [
            agent.request(b"GET", f"matrix-federation://s{i}.test/x".encode()) for i in range(4)
        ]
        assert len(self.reactor.tcpClients) == 3
        refuse(self.reactor, 0)
        failure_now(requests[0])
        assert len(self.reactor.tcpClients) == 4
        assert not has_fired(requests[3])

    def test_request_past_the_destination_cap_waits(self) -> None:
        """Past the per-destination cap a request to that destination waits; others go."""
        agent = self.agent(OutboundLimiter(max_total=10, max_per_destination=2, max_queued=10))
        same = [agent.request(b"GET", b"matrix-federation://s.test/x") for _ in range(3)]
        assert len(self.reactor.tcpClients) == 2
        agent.request(b"GET", b"matrix-federation://other.test/x")
        assert len(self.reactor.tcpClients) == 3
        refuse(self.reactor, 1)
        failure_now(same[1])
        assert len(self.reactor.tcpClients) == 4
