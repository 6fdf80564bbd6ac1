"""Fetching and verifying a server's own keys (spec: Server-Server API, "Retrieving server
keys", ``GET /_matrix/key/v2/server``).

:class:`ServerKeyFetcher` (built by :func:`stubserver.client.build.build_federation_client`):

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

Bounded work per document (issue 12, row 2): a document with more than
:data:`MAX_VERIFY_KEYS` verify keys, :data:`MAX_OLD_VERIFY_KEYS` old keys or
:data:`MAX_SIGNATURES` signatures in all is refused before any cryptography; only the
server's own signatures by keys in ``verify_keys`` are checked, and the document is
encoded once for all of them.

Bounded memory (row 3): the cache keeps, per server, the verify keys, the old verify keys,
``valid_until_ts`` and the body's bytes (the notary countersigns the document as
received), weighed by :func:`estimate_weight`; the cache holds at most
:data:`MAX_KEY_CACHE_BYTES` of them (least recently used dropped first).

Every outcome is an answer (row 5): whatever goes wrong in a fetch (bad JSON, a float
that overflows, a lone surrogate, an error of our own) becomes a failed report, so
callers waiting on a shared fetch are always answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nacl.signing import VerifyKey
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from stubserver.client.agent import FederationConnectError, ResolutionFailed
from stubserver.client.body import describe_failure, raise_if_cancelled, read_body_limited
from stubserver.client.cache import BoundedCache
from stubserver.client.shared_fetch import SharedFetches
from stubserver.discovery.resolution import Target
from stubserver.signing.canonical_json import BadJson, parse_json_bytes
from stubserver.signing.keys import (
    ED25519,
    KEY_VERSION_RE,
    SignatureError,
    decode_verify_key,
    signable_bytes,
    verify_signatures,
)

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
#: Most ``verify_keys`` entries a document may have; more is refused (servers publish 1-2).
MAX_VERIFY_KEYS = 16
#: Most ``old_verify_keys`` entries a document may have; more is refused.
MAX_OLD_VERIFY_KEYS = 256
#: Most signatures a document may carry, all servers together; more is refused (a
#: server's own document carries one per current key, a notary's adds one or two).
MAX_SIGNATURES = 64
KEY_PATH = "/_matrix/key/v2/server"
MS_PER_SECOND = 1000
HTTP_OK = 200
HTTP_SERVER_ERROR = 500


class FederationAgent(Protocol):
    """What the fetcher needs of :class:`stubserver.client.agent.MatrixFederationAgent`."""

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
    :attr:`response` parses it again without fault); ``target`` the target that answered.
    """

    server_name: str
    verify_keys: Mapping[str, VerifyKey]
    old_verify_keys: Mapping[str, tuple[VerifyKey, int]]
    valid_until_ts: int
    response_bytes: bytes
    target: Target

    @property
    def response(self) -> dict[str, Any]:
        """The document as received, parsed (a new dict at each call)."""
        document: dict[str, Any] = parse_json_bytes(self.response_bytes)
        return document


def estimate_weight(keys: ServerKeys) -> int:
    """Estimated bytes ``keys`` holds in memory (the key cache's weight)."""
    return (
        SERVER_ENTRY_WEIGHT_BYTES
        + len(keys.response_bytes)
        + KEY_ENTRY_WEIGHT_BYTES * (len(keys.verify_keys) + len(keys.old_verify_keys))
    )


@dataclass(frozen=True)
class KeyCheck:
    """What :func:`check_key_response` found in a document; ``error`` is the first fault."""

    verify_keys: Mapping[str, VerifyKey] = field(default_factory=dict)
    verify_keys_base64: Mapping[str, str] = field(default_factory=dict)
    old_verify_keys: Mapping[str, tuple[VerifyKey, int]] = field(default_factory=dict)
    old_verify_keys_json: Mapping[str, Any] = field(default_factory=dict)
    valid_until_ts: int | None = None
    signature_ok: bool = False
    error: str | None = None
    #: How many signatures were checked (at most MAX_VERIFY_KEYS).
    signatures_checked: int = 0


def count_signatures(document: Mapping[str, Any]) -> int:
    """How many signatures ``document`` carries, all servers together (no cryptography)."""
    signatures = document.get("signatures")
    if not isinstance(signatures, dict):
        return 0
    return sum(len(v) if isinstance(v, dict) else 1 for v in signatures.values())


def _absurd_counts(document: Mapping[str, Any]) -> str | None:
    for name, limit in (("verify_keys", MAX_VERIFY_KEYS), ("old_verify_keys", MAX_OLD_VERIFY_KEYS)):
        entries = document.get(name)
        if isinstance(entries, dict) and len(entries) > limit:
            return f'"{name}" has {len(entries)} entries; at most {limit} are accepted'
    signatures = count_signatures(document)
    if signatures > MAX_SIGNATURES:
        return f"the response carries {signatures} signatures; at most {MAX_SIGNATURES} accepted"
    return None


def check_key_response(
    document: object,
    server_name: str,
    now_ms: int,
    *,
    encode: Callable[[Mapping[str, Any]], bytes] = signable_bytes,
) -> KeyCheck:
    """Validate a ``/_matrix/key/v2/server`` document for ``server_name`` at ``now_ms``.

    ``encode`` makes the signed bytes (replaceable to count encodings: at most one).
    """
    if not isinstance(document, dict):
        return KeyCheck(error=f"the response is a JSON {type(document).__name__}, not an object")
    absurd = _absurd_counts(document)
    if absurd is not None:
        return KeyCheck(error=absurd)
    named = document.get("server_name")
    verify_keys: dict[str, VerifyKey] = {}
    verify_b64: dict[str, str] = {}
    raw_keys = document.get("verify_keys")
    if not isinstance(raw_keys, dict):
        return KeyCheck(error='"verify_keys" is missing or not an object')
    for key_id, entry in raw_keys.items():
        algorithm, _, version = key_id.partition(":")
        if algorithm != ED25519:
            continue  # unknown algorithms are ignored
        if not KEY_VERSION_RE.match(version):
            return KeyCheck(error=f"verify key ID {key_id!r} is malformed")
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            return KeyCheck(error=f'verify key {key_id} has no "key" string')
        try:
            verify_keys[key_id] = decode_verify_key(entry["key"])
        except ValueError as e:
            return KeyCheck(error=f"verify key {key_id}: {e}")
        verify_b64[key_id] = entry["key"]
    old: dict[str, tuple[VerifyKey, int]] = {}
    old_json: dict[str, Any] = {}
    raw_old = document.get("old_verify_keys", {})
    if not isinstance(raw_old, dict):
        return KeyCheck(error='"old_verify_keys" is not an object')
    for key_id, entry in raw_old.items():
        algorithm, _, version = key_id.partition(":")
        if algorithm != ED25519:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            return KeyCheck(error=f'old verify key {key_id} has no "key" string')
        expired = entry.get("expired_ts")
        if isinstance(expired, bool) or not isinstance(expired, int):
            return KeyCheck(error=f'old verify key {key_id} has no integer "expired_ts"')
        try:
            old[key_id] = (decode_verify_key(entry["key"]), expired)
        except ValueError as e:
            return KeyCheck(error=f"old verify key {key_id}: {e}")
        old_json[key_id] = entry
    valid_until = document.get("valid_until_ts")
    if isinstance(valid_until, bool) or not isinstance(valid_until, int):
        valid_until = None

    checked = 0

    def fault(error: str, *, signature_ok: bool = False) -> KeyCheck:
        return KeyCheck(
            verify_keys, verify_b64, old, old_json, valid_until, signature_ok, error, checked
        )

    if named != server_name:
        return fault(f"the response names server {named!r}, not {server_name!r}")
    signatures = document.get("signatures")
    by_server = signatures.get(server_name) if isinstance(signatures, dict) else None
    if not isinstance(by_server, dict):
        return fault(f"the response carries no signature by {server_name}")
    # As Synapse: every signature by the server with a key in verify_keys must verify
    # (others, e.g. by an old key, are ignored), and at least one must be there. Looping
    # over verify_keys (at most MAX_VERIFY_KEYS) bounds the work whatever "signatures" holds.
    to_check = {key_id: key for key_id, key in verify_keys.items() if key_id in by_server}
    if not to_check:
        return fault(f"no signature by {server_name} with a key listed in verify_keys")
    checked = len(to_check)
    try:
        verify_signatures(document, server_name, to_check, encode=encode)
    except SignatureError as e:
        return fault(str(e))
    if valid_until is None:
        return fault('"valid_until_ts" is missing or not an integer', signature_ok=True)
    if valid_until <= now_ms:
        return fault(
            f"valid_until_ts {valid_until} is in the past (now {now_ms})", signature_ok=True
        )
    return KeyCheck(verify_keys, verify_b64, old, old_json, valid_until, True, None, len(to_check))


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
        assert target is not None and check.valid_until_ts is not None
        keys = ServerKeys(
            server_name=server_name,
            verify_keys=check.verify_keys,
            old_verify_keys=check.old_verify_keys,
            valid_until_ts=check.valid_until_ts,
            response_bytes=body,
            target=target,
        )
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
    "KeyCheck",
    "KeyFetchError",
    "KeyFetchReport",
    "KeyNotFound",
    "ServerKeyFetcher",
    "ServerKeys",
    "check_key_response",
    "estimate_weight",
)
