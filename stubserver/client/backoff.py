"""Per-destination backoff for outbound federation requests, on Synapse's schedule.

After a failure a destination is left alone for a while: the first interval is
:data:`MIN_RETRY_INTERVAL_MS` (10 minutes), each further failure multiplies it by
:data:`RETRY_MULTIPLIER` and by a jitter drawn from U(:data:`JITTER_LOW`,
:data:`JITTER_HIGH`), and it never exceeds :data:`MAX_RETRY_INTERVAL_MS` (7 days). This
is the behaviour of Synapse's ``synapse/util/retryutils.py`` (first interval jittered
too), written here from its description.

What counts as a failure (issue 7): an error before a response (connect errors, TLS,
timeouts, DNS), and the statuses 401, 429 and 5xx. Any other response (2xx, 3xx, other
4xx) is a success and clears the destination's backoff. While a destination is backed
off, :class:`BackoffAgent` fails at once with :class:`DestinationBackedOff`, without I/O.
A valid signed inbound request from a server proves it is up: call
:meth:`DestinationBackoff.reset` with its name (Synapse does the same).

:func:`next_retry_interval_ms` is the pure schedule; :class:`DestinationBackoff` keeps
the state (bounded to :data:`MAX_TRACKED_DESTINATIONS`); :class:`BackoffAgent` wraps any
``IAgent`` whose request URIs name the destination as their host
(``matrix-federation://<server name>/...``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from stubserver.cache import BoundedCache

#: First backoff interval after a failure, in milliseconds (Synapse: 10 minutes).
MIN_RETRY_INTERVAL_MS = 10 * 60 * 1000
#: Each further failure multiplies the interval by this (before jitter).
RETRY_MULTIPLIER = 2
#: Bounds of the uniform jitter factor applied to every interval.
JITTER_LOW = 0.8
JITTER_HIGH = 1.4
#: Longest backoff interval, in milliseconds (7 days).
MAX_RETRY_INTERVAL_MS = 7 * 24 * 3600 * 1000
#: Most destinations whose backoff state is kept (the least recently used is dropped first).
MAX_TRACKED_DESTINATIONS = 100_000
#: Response statuses that count as a failure of the destination (besides every 5xx).
BACKOFF_STATUSES = frozenset({401, 429})
HTTP_SERVER_ERROR = 500
MS_PER_SECOND = 1000


def next_retry_interval_ms(previous_ms: int, rng: random.Random) -> int:
    """The backoff interval after one more failure, given the previous one (0: none)."""
    jitter = rng.uniform(JITTER_LOW, JITTER_HIGH)
    if previous_ms <= 0:
        interval = MIN_RETRY_INTERVAL_MS * jitter
    else:
        interval = previous_ms * RETRY_MULTIPLIER * jitter
    return min(int(interval), MAX_RETRY_INTERVAL_MS)


def is_backoff_status(status: int) -> bool:
    """True when a response with ``status`` counts as a failure of the destination."""
    return status in BACKOFF_STATUSES or status >= HTTP_SERVER_ERROR


class DestinationBackedOff(Exception):
    """A request was not sent: ``destination`` is backed off until ``retry_at_ms``."""

    def __init__(self, destination: str, retry_at_ms: int, failures: int) -> None:
        super().__init__(
            f"not contacting {destination}: backed off after {failures} failure(s)"
            f" until {retry_at_ms} ms"
        )
        self.destination = destination
        self.retry_at_ms = retry_at_ms
        self.failures = failures


@dataclass(frozen=True)
class BackoffState:
    """A destination's backoff: the current interval, until when, after how many failures."""

    interval_ms: int
    retry_at_ms: int
    failures: int


class DestinationBackoff:
    """Backoff state of every destination, on ``clock`` with jitter from ``rng``."""

    def __init__(self, clock: IReactorTime, rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng
        # No time-to-live: a destination's interval keeps growing until it answers.
        self._states: BoundedCache[str, BackoffState] = BoundedCache(
            clock, max_entries=MAX_TRACKED_DESTINATIONS
        )

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * MS_PER_SECOND)

    def state(self, destination: str) -> BackoffState | None:
        """The destination's backoff state, or None when it has none."""
        return self._states.get(destination)

    def check(self, destination: str) -> None:
        """Raise :class:`DestinationBackedOff` when ``destination`` may not be contacted now."""
        state = self._states.get(destination)
        if state is not None and self._now_ms() < state.retry_at_ms:
            raise DestinationBackedOff(destination, state.retry_at_ms, state.failures)

    def record_failure(self, destination: str) -> BackoffState:
        """One more failure: back off for the next interval from now."""
        previous = self._states.pop(destination)
        interval = next_retry_interval_ms(previous.interval_ms if previous else 0, self._rng)
        state = BackoffState(
            interval_ms=interval,
            retry_at_ms=self._now_ms() + interval,
            failures=(previous.failures if previous else 0) + 1,
        )
        self._states.set(destination, state, math.inf)
        return state

    def reset(self, destination: str) -> None:
        """The destination answered (or signed a valid request to us): no more backoff."""
        self._states.pop(destination)


def destination_of(uri: bytes) -> str:
    """The destination a request URI names: its host and port as written (lower-cased)."""
    return urlsplit(uri.decode("ascii", "replace")).netloc.lower()


@implementer(IAgent)
class BackoffAgent:
    """An ``IAgent`` that skips backed-off destinations and records each outcome."""

    def __init__(self, agent: IAgent, backoff: DestinationBackoff) -> None:
        self._agent = agent
        self.backoff = backoff

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        """Send the request unless its destination is backed off; note how it went."""
        destination = destination_of(uri)
        try:
            self.backoff.check(destination)
        except DestinationBackedOff:
            return fail()
        d = self._agent.request(method, uri, headers, bodyProducer)

        def answered(response: IResponse) -> IResponse:
            if is_backoff_status(response.code):
                self.backoff.record_failure(destination)
            else:
                self.backoff.reset(destination)
            return response

        def failed(failure: Failure) -> Failure:
            self.backoff.record_failure(destination)
            return failure

        d.addCallbacks(answered, failed)
        return d

    def connected_target(self, server_name: str) -> Any:
        """The wrapped agent's last connected target for ``server_name`` (None if unknown)."""
        connected = getattr(self._agent, "connected_target", None)
        return connected(server_name) if connected is not None else None
