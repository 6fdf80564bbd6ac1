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

from stubserver.client.agent import FederationConnectError, ResolutionFailed
from stubserver.client.body import describe_failure, raise_if_cancelled, read_body_limited
from stubserver.client.shared_fetch import SharedFetches
from stubserver.discovery.resolution import Target
from stubserver.signing.canonical_json import BadJson, parse_json_bytes
from stubserver.signing.keys import (
    ED25519,
    KEY_VERSION_RE,
    SignatureError,
    decode_verify_key,
    verify_signed_json,
)

#: Largest key response we read, in bytes.
MAX_KEY_RESPONSE_BYTES = 64 * 1024
#: Deadline for the whole key request (resolution, connection, body), in seconds.
KEY_FETCH_TIMEOUT_SECONDS = 10.0
#: Keys are cached until valid_until_ts, but at most this long, in milliseconds.
MAX_KEY_CACHE_MS = 7 * 24 * 3600 * 1000
#: Most servers whose keys we cache at once.
MAX_KEY_CACHE_ENTRIES = 100_000
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
    """A verified key response. ``response`` is the document exactly as received
    (JSON-parsed); ``target`` the target that answered."""

    server_name: str
    verify_keys: Mapping[str, VerifyKey]
    old_verify_keys: Mapping[str, tuple[VerifyKey, int]]
    valid_until_ts: int
    response: dict[str, Any]
    target: Target


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


def check_key_response(document: object, server_name: str, now_ms: int) -> KeyCheck:
    """Validate a ``/_matrix/key/v2/server`` document for ``server_name`` at ``now_ms``."""
    if not isinstance(document, dict):
        return KeyCheck(error=f"the response is a JSON {type(document).__name__}, not an object")
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

    def fault(error: str, *, signature_ok: bool = False) -> KeyCheck:
        return KeyCheck(verify_keys, verify_b64, old, old_json, valid_until, signature_ok, error)

    if named != server_name:
        return fault(f"the response names server {named!r}, not {server_name!r}")
    signatures = document.get("signatures")
    by_server = signatures.get(server_name) if isinstance(signatures, dict) else None
    if not isinstance(by_server, dict):
        return fault(f"the response carries no signature by {server_name}")
    verified = False
    for key_id in by_server:
        key = verify_keys.get(key_id)
        if key is None:
            continue  # e.g. signed by an old key as well
        try:
            verify_signed_json(document, server_name, key_id, key)
        except SignatureError as e:
            return fault(str(e))
        verified = True
    if not verified:
        return fault(f"no signature by {server_name} with a key listed in verify_keys")
    if valid_until is None:
        return fault('"valid_until_ts" is missing or not an integer', signature_ok=True)
    if valid_until <= now_ms:
        return fault(
            f"valid_until_ts {valid_until} is in the past (now {now_ms})", signature_ok=True
        )
    return KeyCheck(verify_keys, verify_b64, old, old_json, valid_until, True, None)


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


@dataclass
class _Cached:
    keys: ServerKeys
    expires_ms: int


class ServerKeyFetcher:
    """Fetches, verifies and caches servers' keys (see the module docstring)."""

    def __init__(self, agent: FederationAgent, clock: IReactorTime) -> None:
        self._agent = agent
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._shared: SharedFetches[KeyFetchReport] = SharedFetches()

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * MS_PER_SECOND)

    def cached(self, server_name: str) -> ServerKeys | None:
        """The cached keys of ``server_name`` while fresh, else None."""
        entry = self._cache.get(server_name)
        if entry is not None and entry.expires_ms > self._now_ms():
            return entry.keys
        return None

    def fetch_report(self, server_name: str) -> Deferred[KeyFetchReport]:
        """Ask ``server_name`` for its keys now; never fails. Shares a fetch in flight."""
        return self._shared.join(server_name, lambda: self._start_fetch(server_name))

    def _start_fetch(self, server_name: str) -> Deferred[KeyFetchReport]:
        fetch = Deferred.fromCoroutine(self._fetch_report(server_name))
        fetch.addTimeout(KEY_FETCH_TIMEOUT_SECONDS, self._clock)
        fetch.addErrback(self._failed, server_name)
        fetch.addCallback(self._store, server_name)
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
            expires = min(report.keys.valid_until_ts, self._now_ms() + MAX_KEY_CACHE_MS)
            if len(self._cache) >= MAX_KEY_CACHE_ENTRIES and server_name not in self._cache:
                now = self._now_ms()
                self._cache = {k: v for k, v in self._cache.items() if v.expires_ms > now}
                if len(self._cache) >= MAX_KEY_CACHE_ENTRIES:
                    self._cache.clear()
            self._cache[server_name] = _Cached(report.keys, expires)
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
            response=document,
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
)
