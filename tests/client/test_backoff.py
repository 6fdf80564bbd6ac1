"""Per-destination backoff: Synapse's schedule, what counts as a failure, the wrapper agent."""

from __future__ import annotations

import random
from typing import cast

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer
from zope.interface.verify import verifyObject

from stubserver.client.backoff import (
    JITTER_HIGH,
    JITTER_LOW,
    MAX_RETRY_INTERVAL_MS,
    MIN_RETRY_INTERVAL_MS,
    BackoffAgent,
    DestinationBackedOff,
    DestinationBackoff,
    destination_of,
    is_backoff_status,
    next_retry_interval_ms,
)
from stubserver.config import FederationSettings
from stubserver.outbound.build import build_federation_client
from tests.support import FakeReactor, failure_now, result_now


class FixedRandom(random.Random):
    """uniform() always returns ``low + fraction * (high - low)``."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + self.fraction * (b - a)


class ScheduleTests(SynchronousTestCase):
    def test_first_interval_ten_minutes_jittered(self) -> None:
        """The first failure backs off 10 min times U(0.8, 1.4)."""
        assert next_retry_interval_ms(0, FixedRandom(0)) == int(MIN_RETRY_INTERVAL_MS * JITTER_LOW)
        assert next_retry_interval_ms(0, FixedRandom(1)) == int(MIN_RETRY_INTERVAL_MS * JITTER_HIGH)

    def test_doubles_with_jitter(self) -> None:
        """Each further failure multiplies the interval by 2 x U(0.8, 1.4)."""
        assert next_retry_interval_ms(1000, FixedRandom(0.5)) == int(1000 * 2 * 1.1)

    def test_capped_at_seven_days(self) -> None:
        """However many failures, the interval stays at most 7 days."""
        interval = 0
        rng = FixedRandom(1)
        for _ in range(40):
            interval = next_retry_interval_ms(interval, rng)
        assert interval == MAX_RETRY_INTERVAL_MS

    def test_statuses(self) -> None:
        """401, 429 and 5xx back off; other 4xx, 2xx and 3xx do not."""
        assert [
            s for s in (200, 301, 400, 401, 403, 404, 429, 500, 502, 599) if is_backoff_status(s)
        ] == [401, 429, 500, 502, 599]

    def test_destination_of(self) -> None:
        """The destination is the URI's host and port."""
        assert destination_of(b"matrix-federation://Beta.test:8448/_matrix/x?y") == "beta.test:8448"


class TrackerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backoff = DestinationBackoff(self.clock, FixedRandom(0.5))

    def test_backed_off_until_interval_passes(self) -> None:
        """After a failure the destination is refused until the interval has passed."""
        state = self.backoff.record_failure("beta.test")
        self.clock.advance(state.interval_ms / 1000 - 1)
        with pytest.raises(DestinationBackedOff):
            self.backoff.check("beta.test")
        self.backoff.check("gamma.test")
        self.clock.advance(1)
        self.backoff.check("beta.test")

    def test_reset_clears(self) -> None:
        """reset (a success, or a valid signed inbound request) ends the backoff at once."""
        self.backoff.record_failure("beta.test")
        self.backoff.reset("beta.test")
        self.backoff.check("beta.test")
        assert self.backoff.state("beta.test") is None

    def test_failures_accumulate(self) -> None:
        """A second failure doubles the (jittered) interval."""
        first = self.backoff.record_failure("beta.test")
        second = self.backoff.record_failure("beta.test")
        assert second.failures == 2
        assert second.interval_ms == int(first.interval_ms * 2 * 1.1)


class FakeResponse:
    """Only ``code`` matters to the backoff agent."""

    def __init__(self, code: int) -> None:
        self.code = code


@implementer(IAgent)
class RecordingAgent:
    """Answers every request with ``outcome`` and records the URIs asked for."""

    def __init__(self) -> None:
        self.uris: list[bytes] = []
        self.outcome: int | Exception = 200

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        self.uris.append(uri)
        if isinstance(self.outcome, Exception):
            d: Deferred[IResponse] = Deferred()
            d.errback(self.outcome)
            return d
        return succeed(cast(IResponse, FakeResponse(self.outcome)))


URI = b"matrix-federation://beta.test/_matrix/federation/v1/version"


class BackoffAgentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.inner = RecordingAgent()
        self.agent = BackoffAgent(self.inner, DestinationBackoff(self.clock, FixedRandom(0.5)))

    def test_interface(self) -> None:
        """BackoffAgent provides IAgent."""
        assert verifyObject(IAgent, self.agent)

    def test_connect_error_backs_off_without_io(self) -> None:
        """After a connect error the next request fails at once, and nothing is sent."""
        self.inner.outcome = ConnectionRefusedError()  # type: ignore[no-untyped-call]
        assert isinstance(
            failure_now(self.agent.request(b"GET", URI)).value, ConnectionRefusedError
        )
        assert isinstance(failure_now(self.agent.request(b"GET", URI)).value, DestinationBackedOff)
        assert len(self.inner.uris) == 1

    def test_other_destinations_unaffected(self) -> None:
        """A backed-off destination does not hold up requests to others."""
        self.inner.outcome = 503
        result_now(self.agent.request(b"GET", URI))
        self.inner.outcome = 200
        other = b"matrix-federation://gamma.test/x"
        assert result_now(self.agent.request(b"GET", other)).code == 200

    def test_statuses_that_back_off(self) -> None:
        """401, 429 and 5xx back off; 403 and 404 do not."""
        for status, backs_off in (
            (401, True),
            (429, True),
            (500, True),
            (403, False),
            (404, False),
        ):
            agent = BackoffAgent(self.inner, DestinationBackoff(self.clock, FixedRandom(0.5)))
            self.inner.outcome = status
            result_now(agent.request(b"GET", URI))
            assert (agent.backoff.state("beta.test") is not None) is backs_off, status

    def test_success_resets(self) -> None:
        """A success after the interval clears the destination's failures."""
        self.inner.outcome = 500
        result_now(self.agent.request(b"GET", URI))
        self.clock.advance(MAX_RETRY_INTERVAL_MS / 1000)
        self.inner.outcome = 200
        result_now(self.agent.request(b"GET", URI))
        assert self.agent.backoff.state("beta.test") is None


class RunWiringTests(SynchronousTestCase):
    def test_key_fetch_ignores_backoff(self) -> None:
        """With a backoff (as in run), a key fetch to a backed-off server is still sent, as
        Synapse's key fetches are (ignore_backoff; issue 12: no lock-outs)."""
        reactor = FakeReactor()
        backoff = DestinationBackoff(reactor, random.Random(0))
        backoff.record_failure("down.test")
        context = build_federation_client(
            reactor, FederationSettings(dns_servers=(("127.0.0.1", 53),)), backoff=backoff
        )
        d = context.key_fetcher.fetch("down.test")
        failure = self.failureResultOf(d)  # type: ignore[no-untyped-call]
        # It got as far as resolving down.test (this fake reactor has no UDP for DNS).
        assert "backed off" not in str(failure.value)
        assert "resolution" in str(failure.value)
