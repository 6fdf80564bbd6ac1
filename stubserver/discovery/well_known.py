"""``/.well-known/matrix/server`` delegation (spec: Server-Server API, "Resolving server
names", step 3), with Synapse's caching rules.

- :func:`cache_period_from_headers` (pure): seconds from ``Cache-Control`` (``no-store``,
  ``max-age``) and ``Expires``; None when neither says anything usable.
- :func:`well_known_cache_seconds` (pure): the period actually used for a valid answer,
  clamped to [5 min, 48 h]; 24 h ±10 % when the headers say nothing.
- :func:`failure_cache_seconds` (pure): 1 h ±10 %, or 2 min when the name had a valid
  answer within its last cache period + 2 h (a flapping server recovers quickly).
- :class:`WellKnownResolver`: fetches through an injected ``IAgent`` (the blocklisting
  HTTPS agent of :mod:`stubserver.outbound.agent`), follows at most 5 https-only redirects, reads
  at most 50 KiB, gives up after 10 s, parses JSON whatever the Content-Type, validates
  ``m.server`` as a server name, caches, refreshes in the last 20 % of a valid answer's
  lifetime while keeping it through temporary failures, and keeps one fetch in flight
  per name. Any failure means "no delegation": the caller goes on with SRV (step 4).
"""

from __future__ import annotations

import dataclasses
import email.utils
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from stubserver.cache import BoundedCache
from stubserver.client.body import (
    DiscardBody,
    deliver_body,
    describe_failure,
    raise_if_cancelled,
    read_body_limited,
)
from stubserver.client.shared_fetch import SharedFetches
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.signing.canonical_json import BadJson, parse_json_bytes

#: Largest .well-known body we read, in bytes.
WELL_KNOWN_MAX_BODY_BYTES = 50 * 1024
#: Deadline for the whole fetch (every redirect and the body), in seconds.
WELL_KNOWN_TIMEOUT_SECONDS = 10.0
#: Most redirects followed.
WELL_KNOWN_MAX_REDIRECTS = 5
#: Cache period of a valid answer whose headers say nothing, in seconds (±jitter).
WELL_KNOWN_DEFAULT_CACHE_SECONDS = 24 * 3600.0
#: Relative jitter applied to default periods (so caches do not expire in step).
WELL_KNOWN_CACHE_JITTER = 0.1
#: Bounds on a valid answer's cache period, in seconds.
WELL_KNOWN_MIN_CACHE_SECONDS = 5 * 60.0
WELL_KNOWN_MAX_CACHE_SECONDS = 48 * 3600.0
#: Cache period of a failed lookup, in seconds (±jitter).
WELL_KNOWN_FAILURE_CACHE_SECONDS = 3600.0
#: Cache period of a failed lookup for a name that recently had a valid answer, in seconds.
WELL_KNOWN_RECENT_VALID_FAILURE_CACHE_SECONDS = 2 * 60.0
#: How long past a valid answer's period we remember that the name had one, in seconds.
WELL_KNOWN_REMEMBER_VALID_SECONDS = 2 * 3600.0
#: Fraction of a valid answer's lifetime, at its end, in which we fetch it again.
WELL_KNOWN_REFRESH_FRACTION = 0.2
#: Most names cached at once.
WELL_KNOWN_MAX_CACHE_ENTRIES = 100_000
WELL_KNOWN_PATH = "/.well-known/matrix/server"
HTTPS_PORT = 443
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTTP_OK = 200
HTTP_SERVER_ERROR = 500

log = Logger()


def cache_period_from_headers(headers: Headers, now: float) -> float | None:
    """Seconds a response may be cached per its headers, or None if they do not say.

    ``Cache-Control: no-store`` → 0; ``max-age=N`` → N; else ``Expires`` (an HTTP date;
    ``0`` or any malformed date means "already expired" as RFC 9111 says) → seconds from
    ``now``, at least 0. A malformed ``max-age`` is ignored.
    """
    directives: dict[bytes, bytes | None] = {}
    for raw in headers.getRawHeaders(b"cache-control") or []:
        for part in raw.split(b","):
            name, sep, value = part.strip().partition(b"=")
            if name:
                directives[name.strip().lower()] = value.strip().strip(b'"') if sep else None
    if b"no-store" in directives:
        return 0.0
    max_age = directives.get(b"max-age")
    if max_age is not None and max_age.isdigit():
        return float(int(max_age))
    expires = headers.getRawHeaders(b"expires")
    if expires:
        try:
            parsed = email.utils.parsedate_to_datetime(expires[-1].decode("latin-1"))
        except (TypeError, ValueError, IndexError):
            return 0.0
        return max(0.0, parsed.timestamp() - now)
    return None


def _jittered(seconds: float, rng: random.Random) -> float:
    return seconds * rng.uniform(1 - WELL_KNOWN_CACHE_JITTER, 1 + WELL_KNOWN_CACHE_JITTER)


def well_known_cache_seconds(from_headers: float | None, rng: random.Random) -> float:
    """Cache period of a valid answer: the headers' period clamped to [5 min, 48 h], or
    24 h ±10 % when the headers say nothing."""
    if from_headers is None:
        return _jittered(WELL_KNOWN_DEFAULT_CACHE_SECONDS, rng)
    return min(max(from_headers, WELL_KNOWN_MIN_CACHE_SECONDS), WELL_KNOWN_MAX_CACHE_SECONDS)


def failure_cache_seconds(had_recent_valid: bool, rng: random.Random) -> float:
    """Cache period of a failed lookup: 2 min after a recent valid answer, else 1 h ±10 %."""
    if had_recent_valid:
        return WELL_KNOWN_RECENT_VALID_FAILURE_CACHE_SECONDS
    return _jittered(WELL_KNOWN_FAILURE_CACHE_SECONDS, rng)


def well_known_url(host: str, port: int) -> str:
    """The URL fetched for ``host`` (the port shown only when it is not 443)."""
    netloc = host if port == HTTPS_PORT else f"{host}:{port}"
    return f"https://{netloc}{WELL_KNOWN_PATH}"


def parse_well_known_body(body: bytes) -> str:
    """The validated ``m.server`` of a body, or ValueError saying what is wrong."""
    try:
        document = parse_json_bytes(body)
    except BadJson as e:
        raise ValueError(f"the body is not acceptable JSON: {e}") from None
    if not isinstance(document, dict):
        raise ValueError(f"the body is a JSON {type(document).__name__}, not an object")
    m_server = document.get("m.server")
    if m_server is None:
        raise ValueError('the body has no "m.server"')
    if not isinstance(m_server, str):
        raise ValueError('"m.server" is not a string')
    try:
        parse_server_name(m_server)
    except InvalidServerName as e:
        raise ValueError(f'"m.server" is not a server name: {e}') from None
    return m_server


@dataclass(frozen=True)
class WellKnownResult:
    """One .well-known outcome: a delegated name (``m_server``) or an ``error``.

    ``status`` is the final HTTP status (None if no response); ``cache_seconds`` how long
    the outcome is cached from when it was fetched; ``temporary`` whether the failure may
    go away (5xx, connect error, timeout, oversize); ``cached`` whether this answer came
    from the cache; ``redirects`` the URLs followed.
    """

    url: str
    status: int | None
    m_server: str | None
    error: str | None
    cache_seconds: float
    temporary: bool = False
    cached: bool = False
    redirects: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """As ``resolve --json``'s ``well_known`` object."""
        return {
            "url": self.url,
            "status": self.status,
            "m.server": self.m_server,
            "error": self.error,
            "cache_seconds": round(self.cache_seconds),
        }


@dataclass(frozen=True)
class _Entry:
    """A cached outcome. It is fresh (served without a fetch) until ``refresh_at``, and
    retained in the cache until ``expires`` or ``had_valid_until``, whichever is later:
    long enough to stand in for a failed refresh and to remember that the name recently
    had a valid answer (which shortens the failure cache period)."""

    result: WellKnownResult
    fetched: float
    expires: float
    refresh_at: float
    had_valid_until: float


class WellKnownResolver:
    """Fetches and caches .well-known delegation (see the module docstring)."""

    def __init__(
        self,
        agent: IAgent,
        clock: IReactorTime,
        rng: random.Random,
        *,
        port: int = HTTPS_PORT,
    ) -> None:
        self._agent = agent
        self._clock = clock
        self._rng = rng
        self._port = port
        self._cache: BoundedCache[str, _Entry] = BoundedCache(
            clock, max_entries=WELL_KNOWN_MAX_CACHE_ENTRIES
        )
        self._shared: SharedFetches[WellKnownResult] = SharedFetches()

    def get_well_known(self, host: str) -> Deferred[WellKnownResult]:
        """The delegation of ``host`` (a hostname without port), from cache or fetched.

        Never fails: every failure is a result with ``m_server=None`` and ``error`` set.
        """
        key = host.lower()
        now = self._clock.seconds()
        entry = self._cache.get(key)
        if entry is not None:
            return _succeed(self._from_cache(entry, now))
        return self._shared_fetch(key, host)

    def _from_cache(self, entry: _Entry, now: float) -> WellKnownResult:
        remaining = max(0.0, entry.expires - now)
        return _replace(entry.result, cached=True, cache_seconds=remaining)

    def _shared_fetch(self, key: str, host: str) -> Deferred[WellKnownResult]:
        def start() -> Deferred[WellKnownResult]:
            fetch = Deferred.fromCoroutine(self._fetch_and_store(key, host))
            fetch.addTimeout(WELL_KNOWN_TIMEOUT_SECONDS + 1, self._clock)
            fetch.addErrback(self._internal_error, host)
            return fetch

        return self._shared.join(key, start)

    def _internal_error(self, failure: Failure, host: str) -> WellKnownResult:
        log.failure("well-known lookup of {host} failed unexpectedly", failure, host=host)
        return WellKnownResult(
            url=well_known_url(host, self._port),
            status=None,
            m_server=None,
            error="internal error",
            cache_seconds=0.0,
            temporary=True,
        )

    async def _fetch_and_store(self, key: str, host: str) -> WellKnownResult:
        fetch = Deferred.fromCoroutine(self._fetch(host))
        fetch.addTimeout(WELL_KNOWN_TIMEOUT_SECONDS, self._clock)
        url = well_known_url(host, self._port)
        try:
            result, header_period = await fetch
        except CancelledError:
            raise
        except TimeoutError:
            result = WellKnownResult(
                url,
                None,
                None,
                f"timed out after {WELL_KNOWN_TIMEOUT_SECONDS:g} s",
                0.0,
                temporary=True,
            )
            header_period = None
        now = self._clock.seconds()
        old = self._cache.get_stale(key)
        if result.m_server is not None:
            period = well_known_cache_seconds(header_period, self._rng)
            result = _replace(result, cache_seconds=period)
            self._store(
                key,
                _Entry(
                    result,
                    now,
                    now + period,
                    now + period * (1 - WELL_KNOWN_REFRESH_FRACTION),
                    now + period + WELL_KNOWN_REMEMBER_VALID_SECONDS,
                ),
                now,
            )
            return result
        if (
            result.temporary
            and old is not None
            and old.result.m_server is not None
            and now < old.expires
        ):
            # A refresh of a still-valid answer failed for now: keep the old answer.
            log.info(
                "well-known refresh of {host} failed ({error}); keeping {m_server}",
                host=host,
                error=result.error,
                m_server=old.result.m_server,
            )
            return self._from_cache(old, now)
        had_valid_until = old.had_valid_until if old is not None else 0.0
        period = failure_cache_seconds(had_valid_until > now, self._rng)
        result = _replace(result, cache_seconds=period)
        self._store(key, _Entry(result, now, now + period, now + period, had_valid_until), now)
        return result

    def _store(self, key: str, entry: _Entry, now: float) -> None:
        self._cache.set(
            key,
            entry,
            entry.refresh_at - now,
            retain_seconds=max(entry.expires, entry.had_valid_until) - now,
        )

    async def _fetch(self, host: str) -> tuple[WellKnownResult, float | None]:
        first_url = well_known_url(host, self._port)
        url = first_url
        redirects: list[str] = []

        def fail(
            error: str, status: int | None = None, *, temporary: bool = False
        ) -> tuple[WellKnownResult, float | None]:
            return (
                WellKnownResult(
                    first_url, status, None, error, 0.0, temporary, redirects=tuple(redirects)
                ),
                None,
            )

        for _hop in range(WELL_KNOWN_MAX_REDIRECTS + 1):
            try:
                response = await self._agent.request(
                    b"GET", url.encode("ascii"), Headers({b"User-Agent": [b"stubserver"]})
                )
            except CancelledError:
                raise
            except Exception as e:
                raise_if_cancelled(e)
                text, temporary = describe_failure(e)
                where = "" if url == first_url else f" (after redirect to {url})"
                return fail(f"{text}{where}", temporary=temporary)
            status = response.code
            if status in REDIRECT_STATUSES:
                deliver_body(response, DiscardBody())
                locations = response.headers.getRawHeaders(b"location")
                if not locations:
                    return fail(f"HTTP {status} redirect without a Location", status)
                try:
                    target = urljoin(url, locations[0].decode("ascii"))
                    parts = urlsplit(target)
                except (UnicodeDecodeError, ValueError):
                    return fail(f"HTTP {status} redirect to a malformed Location", status)
                if parts.scheme != "https" or not parts.hostname:
                    return fail(f"redirect to a non-https URL ({target[:200]})", status)
                redirects.append(target)
                url = target
                continue
            if status != HTTP_OK:
                deliver_body(response, DiscardBody())
                return fail(f"HTTP {status}", status, temporary=status >= HTTP_SERVER_ERROR)
            try:
                body = await read_body_limited(response, WELL_KNOWN_MAX_BODY_BYTES)
            except CancelledError:
                raise
            except Exception as e:
                raise_if_cancelled(e)
                text, temporary = describe_failure(e)
                return fail(text, status, temporary=temporary)
            try:
                m_server = parse_well_known_body(body)
            except ValueError as e:
                return fail(str(e), status)
            period = cache_period_from_headers(response.headers, self._clock.seconds())
            return (
                WellKnownResult(first_url, status, m_server, None, 0.0, redirects=tuple(redirects)),
                period,
            )
        return fail(f"more than {WELL_KNOWN_MAX_REDIRECTS} redirects", temporary=False)


def _succeed(value: WellKnownResult) -> Deferred[WellKnownResult]:
    d: Deferred[WellKnownResult] = Deferred()
    d.callback(value)
    return d


def _replace(result: WellKnownResult, **changes: Any) -> WellKnownResult:
    return dataclasses.replace(result, **changes)


__all__ = (
    "WellKnownResolver",
    "WellKnownResult",
    "cache_period_from_headers",
    "failure_cache_seconds",
    "parse_well_known_body",
    "well_known_cache_seconds",
    "well_known_url",
)
