"""Fetching and verifying a server's own keys (spec: Server-Server API, "Retrieving server
keys", ``GET /_matrix/key/v2/server``).

:class:`ServerKeyFetcher` (built by :func:`stubserver.outbound.build.build_federation_client`):

- ``fetch(server_name) -> Deferred[ServerKeys]``: always asks the server (through the
  federation agent, so resolution and TLS are the spec's), verifies, caches; fails with
  :class:`KeyFetchError` (``temporary`` says whether a retry may help).
- ``fetch_cached_or_fresh(server_name) -> Deferred[ServerKeys]``: the cached keys while
  they are fresh (until ``min(valid_until_ts, fetched + 7 days)``), else ``fetch``.
- ``get_key(server_name, key_id) -> Deferred[VerifyKey]``: a current verify key; uses
  the cache, fetches when the cache is stale or lacks ``key_id`` (a server may have
  rotated keys); fails with :class:`KeyNotFound` (a KeyFetchError) when the fresh
  response does not list it. Only ``verify_keys`` count, not ``old_verify_keys``:
  callers that accept old keys read ``ServerKeys.old_verify_keys`` themselves.
- ``fetch_report(server_name) -> Deferred[KeyFetchReport]``: never fails; everything
  ``stubserver keys`` and ``stubserver check`` show, valid or not.

Concurrent fetches for one server share one request. A response is accepted when its
``server_name`` is the one asked, every signature by the server with a key listed in
``verify_keys`` verifies and there is at least one, and ``valid_until_ts`` is in the
future; keys of unknown algorithms are ignored, malformed base64 rejects the response
(as Synapse). Limits: 10 s for the whole request, 64 KiB body, ``Content-Type`` must be
``application/json``.

Bounded work per document (issue 12, row 2): see
:mod:`~stubserver.server_keys.key_response_check`, which holds the document's check.

Bounded memory (row 3): the cache keeps, per server, the verify keys, the old verify keys,
``valid_until_ts`` and the body's bytes (the notary countersigns the document as
received), weighed by :func:`estimate_weight`; the cache holds at most
:data:`MAX_KEY_CACHE_BYTES` of them (least recently used dropped first).

Every outcome is an answer (row 5): whatever goes wrong in a fetch (bad JSON, a float
that overflows, a lone surrogate, an error of our own) becomes a failed report, so
callers waiting on a shared fetch are always answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nacl.signing import VerifyKey
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from stubserver.cache import BoundedCache
from stubserver.client.body import describe_failure, raise_if_cancelled, read_body_limited
from stubserver.client.shared_fetch import SharedFetches
from stubserver.discovery.resolution import Target
from stubserver.discovery.unreachable import FederationConnectError, ResolutionFailed
from stubserver.server_keys.key_response_check import KeyCheck, check_key_response
from stubserver.signing.canonical_json import BadJson, parse_json_bytes

#: Largest key response we read, in bytes.
MAX_KEY_RESPONSE_BYTES = 64 * 1024
#: Deadline for the whole key request (resolution, connection, body), in seconds.
KEY_FETCH_TIMEOUT_SECONDS = 10.0
#: Keys are cached until valid_until_ts, but at most this long, in milliseconds.
MAX_KEY_CACHE_MS = 7 * 24 * 3600 * 1000
#: Most servers whose keys we cache at once.
MAX_KEY_CACHE_ENTRIES = 100_000
#: Most estimated bytes the key cache holds (issue 12 row 3: 500 documents of 60 KB took
#: 500 MB when whole parsed documents were kept). 16 MiB holds over ten thousand ordinary
#: (1 KB) servers' keys, or about 250 of the largest (64 KiB) documents we accept.
MAX_KEY_CACHE_BYTES = 16 * 1024 * 1024
#: Estimated bytes per cached key (a VerifyKey object, its ID string and dict slots).
KEY_ENTRY_WEIGHT_BYTES = 400
#: Estimated fixed bytes per cached server (the record, its dicts, the cache entry).
SERVER_ENTRY_WEIGHT_BYTES = 1024
KEY_PATH = "/_matrix/key/v2/server"
MS_PER_SECOND = 1000
HTTP_OK = 200
HTTP_SERVER_ERROR = 500


class FederationAgent(Protocol):
    """What the fetcher needs of :class:`stubserver.outbound.agent.MatrixFederationAgent`."""

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        """``IAgent.request`` for ``matrix-federation://`` URIs."""

    def connected_target(self, server_name: str) -> Target | None:
        """The target the last connection to ``server_name`` went to."""


class KeyFetchError(Exception):
    """Keys could not be fetched or did not verify. ``temporary``: a retry may help."""

    def __init__(self, message: str, *, temporary: bool, report: KeyFetchReport | None = None):
        super().__init__(message)
        self.temporary = temporary
        self.report = report


class KeyNotFound(KeyFetchError):
    """The server's fresh key response does not list the key ID asked for."""


@dataclass(frozen=True)
class ServerKeys:
    """A verified key response: what is kept of it in the cache.

    ``response_bytes`` is the body exactly as received (already parsed once, strictly, so
    :attr:`response` parses it again without fault); ``target`` the target that answered
    (None for a server of this process, whose keys are known without a request:
    :mod:`stubserver.server_keys.local_keys`).
    """

    server_name: str
    verify_keys: Mapping[str, VerifyKey]
    old_verify_keys: Mapping[str, tuple[VerifyKey, int]]
    valid_until_ts: int
    response_bytes: bytes
    target: Target | None

    @property
    def response(self) -> dict[str, Any]:
        """The document as received, parsed (a new dict at each call)."""
        document: dict[str, Any] = parse_json_bytes(self.response_bytes)
        return document


def keys_of_check(
    server_name: str, check: KeyCheck, body: bytes, target: Target | None
) -> ServerKeys:
    """The keys of a document that passed ``check`` (``body``: its bytes; pure)."""
    assert check.error is None and check.valid_until_ts is not None
    return ServerKeys(
        server_name=server_name,
        verify_keys=check.verify_keys,
        old_verify_keys=check.old_verify_keys,
        valid_until_ts=check.valid_until_ts,
        response_bytes=body,
        target=target,
    )


def estimate_weight(keys: ServerKeys) -> int:
    """Estimated bytes ``keys`` holds in memory (the key cache's weight)."""
    return (
        SERVER_ENTRY_WEIGHT_BYTES
        + len(keys.response_bytes)
        + KEY_ENTRY_WEIGHT_BYTES * (len(keys.verify_keys) + len(keys.old_verify_keys))
    )


@dataclass(frozen=True)
class KeyFetchReport:
    """Everything about one key fetch, valid or not (``keys --json``)."""

    server_name: str
    target: Target | None = None
    status: int | None = None
    response: Any = None
    check: KeyCheck = field(default_factory=KeyCheck)
    error: str | None = None
    temporary: bool = False
    keys: ServerKeys | None = None

    @property
    def ok(self) -> bool:
        """True when the keys verified."""
        return self.keys is not None

    def to_json(self) -> dict[str, Any]:
        """Exactly ``keys --json`` (DESIGN.md)."""
        return {
            "server_name": self.server_name,
            "target": None if self.target is None else self.target.to_json(),
            "valid_until_ts": self.check.valid_until_ts,
            "verify_keys": dict(self.check.verify_keys_base64),
            "old_verify_keys": dict(self.check.old_verify_keys_json),
            "signature_ok": self.check.signature_ok,
            "response": self.response,
            "error": self.error,
        }


def _is_json_content_type(headers: Headers) -> bool:
    values = headers.getRawHeaders(b"content-type") or []
    if len(values) != 1:
        return False
    media = values[0].split(b";", 1)[0].strip().lower()
    return media == b"application/json"


class ServerKeyFetcher:
    """Fetches, verifies and caches servers' keys (see the module docstring)."""

    def __init__(self, agent: FederationAgent, clock: IReactorTime) -> None:
        self._agent = agent
        self._clock = clock
        self._cache: BoundedCache[str, ServerKeys] = BoundedCache(
            clock,
            max_entries=MAX_KEY_CACHE_ENTRIES,
            max_weight=MAX_KEY_CACHE_BYTES,
            weigh=estimate_weight,
        )
        self._shared: SharedFetches[KeyFetchReport] = SharedFetches()

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * MS_PER_SECOND)

    def cached(self, server_name: str) -> ServerKeys | None:
        """The cached keys of ``server_name`` while fresh, else None."""
        return self._cache.get(server_name)

    @property
    def cache_weight(self) -> int:
        """The key cache's estimated weight in bytes (at most MAX_KEY_CACHE_BYTES)."""
        return self._cache.weight

    def fetch_report(self, server_name: str) -> Deferred[KeyFetchReport]:
        """Ask ``server_name`` for its keys now; never fails. Shares a fetch in flight."""
        return self._shared.join(server_name, lambda: self._start_fetch(server_name))

    def _start_fetch(self, server_name: str) -> Deferred[KeyFetchReport]:
        fetch = Deferred.fromCoroutine(self._fetch_report(server_name))
        fetch.addTimeout(KEY_FETCH_TIMEOUT_SECONDS, self._clock)
        fetch.addErrback(self._failed, server_name)
        fetch.addCallback(self._store, server_name)
        # Last resort: SharedFetches needs a Deferred that never fails, or every caller
        # waiting for this server would wait for ever (issue 12 row 5).
        fetch.addErrback(_last_resort_report, server_name)
        return fetch

    def _failed(self, failure: Failure, server_name: str) -> KeyFetchReport:
        if failure.check(TimeoutError):  # type: ignore[no-untyped-call]
            error = f"timed out after {KEY_FETCH_TIMEOUT_SECONDS:g} s"
        else:
            error = describe_failure(failure.value or Exception("unknown failure"))[0]
        return KeyFetchReport(
            server_name,
            target=self._agent.connected_target(server_name),
            error=error,
            temporary=True,
        )

    def _store(self, report: KeyFetchReport, server_name: str) -> KeyFetchReport:
        if report.keys is not None:
            now_ms = self._now_ms()
            expires = min(report.keys.valid_until_ts, now_ms + MAX_KEY_CACHE_MS)
            self._cache.set(server_name, report.keys, (expires - now_ms) / MS_PER_SECOND)
        return report

    async def _fetch_report(self, server_name: str) -> KeyFetchReport:
        uri = f"matrix-federation://{server_name}{KEY_PATH}".encode("ascii", "replace")
        try:
            response = await self._agent.request(
                b"GET", uri, Headers({b"User-Agent": [b"stubserver"]})
            )
        except CancelledError:
            raise
        except ResolutionFailed as e:
            return KeyFetchReport(
                server_name, error=f"resolution: {e.resolution.error}", temporary=e.temporary
            )
        except FederationConnectError as e:
            return KeyFetchReport(server_name, error=str(e), temporary=e.temporary)
        except Exception as e:
            raise_if_cancelled(e)
            text, temporary = describe_failure(e)
            return KeyFetchReport(
                server_name,
                target=self._agent.connected_target(server_name),
                error=text,
                temporary=temporary,
            )
        target = self._agent.connected_target(server_name)
        status = response.code
        try:
            body = await read_body_limited(response, MAX_KEY_RESPONSE_BYTES)
        except CancelledError:
            raise
        except Exception as e:
            raise_if_cancelled(e)
            text, temporary = describe_failure(e)
            return KeyFetchReport(server_name, target, status, error=text, temporary=temporary)
        try:
            document = parse_json_bytes(body)
        except BadJson as e:
            return KeyFetchReport(
                server_name,
                target,
                status,
                error=f"HTTP {status}: the body is not acceptable JSON: {e}",
                temporary=status >= HTTP_SERVER_ERROR,
            )
        if status != HTTP_OK:
            return KeyFetchReport(
                server_name,
                target,
                status,
                response=document,
                error=f"HTTP {status}",
                temporary=status >= HTTP_SERVER_ERROR,
            )
        check = check_key_response(document, server_name, self._now_ms())
        if not _is_json_content_type(response.headers):
            found = b", ".join(response.headers.getRawHeaders(b"content-type") or [b"none"])
            return KeyFetchReport(
                server_name,
                target,
                status,
                document,
                check,
                error=f"Content-Type is {found.decode('latin-1')!r}, not application/json",
            )
        if check.error is not None:
            return KeyFetchReport(server_name, target, status, document, check, error=check.error)
        assert target is not None
        keys = keys_of_check(server_name, check, body, target)
        return KeyFetchReport(server_name, target, status, document, check, keys=keys)

    def fetch(self, server_name: str) -> Deferred[ServerKeys]:
        """Fetch ``server_name``'s keys now; :class:`KeyFetchError` when they do not verify."""
        return self.fetch_report(server_name).addCallback(_keys_or_raise)

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[ServerKeys]:
        """The cached keys while fresh, else :meth:`fetch`."""
        cached = self.cached(server_name)
        if cached is not None:
            d: Deferred[ServerKeys] = Deferred()
            d.callback(cached)
            return d
        return self.fetch(server_name)

    def get_key(self, server_name: str, key_id: str) -> Deferred[VerifyKey]:
        """The current verify key ``key_id`` of ``server_name`` (cache, else fetched)."""
        cached = self.cached(server_name)
        if cached is not None and key_id in cached.verify_keys:
            d: Deferred[VerifyKey] = Deferred()
            d.callback(cached.verify_keys[key_id])
            return d

        def pick(keys: ServerKeys) -> VerifyKey:
            key = keys.verify_keys.get(key_id)
            if key is None:
                raise KeyNotFound(
                    f"{server_name} does not list key {key_id} in verify_keys", temporary=False
                )
            return key

        return self.fetch(server_name).addCallback(pick)


def _last_resort_report(failure: Failure, server_name: str) -> KeyFetchReport:
    # Pure: nothing here may raise (see ServerKeyFetcher._start_fetch).
    return KeyFetchReport(
        server_name, error=f"internal error: {type(failure.value).__name__}", temporary=True
    )


def _keys_or_raise(report: KeyFetchReport) -> ServerKeys:
    if report.keys is None:
        raise KeyFetchError(
            f"keys of {report.server_name}: {report.error}",
            temporary=report.temporary,
            report=report,
        )
    return report.keys


__all__ = (
    "KeyFetchError",
    "KeyFetchReport",
    "KeyNotFound",
    "ServerKeyFetcher",
    "ServerKeys",
    "estimate_weight",
    "keys_of_check",
)
