"""Authenticating inbound federation requests (spec: Server-Server API, "Request Authentication").

:class:`RequestAuthenticator` parses the X-Matrix headers (:mod:`stubserver.auth.xmatrix`),
checks the destination, fetches the origin's keys through a key source (the key fetcher,
which caches) and verifies the signature over the request exactly as received: the method,
the raw request-target bytes (never re-encoded), our server name and the parsed body.

The body is parsed last (issue 22, row 1): only once the header is well formed, names us,
and names a key the origin publishes. A request with a malformed header, for another
destination, from an origin whose keys cannot be had, or signed with a key the origin does
not publish is refused without its body being read, so that a body of megabytes costs
nothing until a server with a real key has signed it (the signature covers the body, so
verifying it needs the parse; the listener's body caps bound that parse).

Failures are :class:`stubserver.auth.xmatrix.AuthenticationFailed` subclasses carrying the
status and errcode to answer and a message saying what failed. Codes follow Synapse:
malformed header 400 ``M_UNAUTHORIZED``; everything else 401 ``M_UNAUTHORIZED``.

No lock-outs (issue 12): Synapse fetches keys for authentication ignoring the destination
backoff and remembers no failures, so a peer that was down once is served again as soon as
it is back. We match it: the fetcher shares a fetch in flight (requests arriving meanwhile
wait for that one), key fetches ignore the backoff (``stubserver.outbound.build``), and a
failure is remembered only :data:`NEGATIVE_CACHE_SECONDS` (5 s, was 5 minutes), just
enough that a flood of requests claiming a dead origin is not a flood of key requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Generic, Protocol, TypeVar

from nacl.signing import VerifyKey
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from stubserver.auth.xmatrix import (
    AuthenticationFailed,
    XMatrixAuthorization,
    request_signing_object,
    select_authorization,
)
from stubserver.cache import BoundedCache
from stubserver.server_keys.refetch_limit import REFETCH_INTERVAL_SECONDS, RefetchLimit
from stubserver.signing.canonical_json import (
    CanonicalJsonError,
    encode_parsed_canonical_json_in_slices,
)
from stubserver.signing.keys import SignatureError, parsed_signable_bytes, verify_signatures
from stubserver.slices import TimeSlices

#: How long a failed key fetch for an origin is remembered, in seconds: a few seconds at
#: most, never minutes (a peer restarted must be able to talk to us again at once).
NEGATIVE_CACHE_SECONDS = 5
#: Most origins remembered as failing; the oldest are forgotten first.
MAX_NEGATIVE_CACHE_ENTRIES = 1024
#: Least time between two refetches of an origin's keys for an unknown key ID, in seconds
#: (so that requests naming made-up key IDs cannot make us hammer the origin).
UNKNOWN_KEY_REFETCH_SECONDS = REFETCH_INTERVAL_SECONDS
#: Longest we wait for an origin's keys while a request waits, in seconds.
KEY_FETCH_TIMEOUT_SECONDS = 30
MS_PER_SECOND = 1000

log = Logger()


class WrongDestination(AuthenticationFailed):
    """The header names another server as the destination (401, spec)."""


class BadRequestTarget(AuthenticationFailed):
    """The method or request-target cannot be part of a signed object (400)."""

    status = HTTPStatus.BAD_REQUEST


class KeyFetchFailed(AuthenticationFailed):
    """The origin's keys could not be fetched, now or recently (401)."""


class UnknownKey(AuthenticationFailed):
    """None of the signing key IDs is among the origin's current verify keys (401)."""


class BadSignature(AuthenticationFailed):
    """A signature does not verify with the origin's key (401)."""


class PublishedKeys(Protocol):
    """What the authenticator needs of a server's fetched keys."""

    @property
    def verify_keys(self) -> Mapping[str, VerifyKey]:
        """Current verify keys by key ID."""

    @property
    def valid_until_ts(self) -> int:
        """Until when (ms since the epoch) the keys may be used."""


KeysT = TypeVar("KeysT", bound=PublishedKeys)


class KeySource(Protocol[KeysT]):
    """Where the authenticator gets an origin's keys.

    In ``run``: ``stubserver.server_keys.fetcher.ServerKeyFetcher``.
    """

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[KeysT]:
        """The keys ``server_name`` publishes, from the cache while fresh."""

    def fetch(self, server_name: str) -> Deferred[KeysT]:
        """The keys ``server_name`` publishes, asked for now."""


@dataclass(frozen=True)
class AuthResult:
    """A request authenticated: who sent it, and the key whose signature verified."""

    origin: str
    key_id: str


def check_destinations(authorization: XMatrixAuthorization, server_name: str) -> None:
    """Raise :class:`WrongDestination` when any header names a destination that is not us."""
    for destination in authorization.destinations:
        if destination != server_name:
            raise WrongDestination(
                f"Destination mismatch in auth header: the request is for {destination!r},"
                f" this server is {server_name!r}"
            )


def check_keys_usable(
    authorization: XMatrixAuthorization, keys: PublishedKeys, now_ms: int
) -> None:
    """Raise unless ``keys`` are still valid and hold a key ``authorization`` names (pure):
    what can be checked before the body is parsed."""
    origin = authorization.origin
    if keys.valid_until_ts < now_ms:
        raise KeyFetchFailed(
            f"The keys of {origin} are valid only until {keys.valid_until_ts} (ms),"
            f" before now ({now_ms})"
        )
    if not any(key_id in keys.verify_keys for key_id in authorization.signatures):
        raise UnknownKey(
            f"None of the request's keys ({', '.join(sorted(authorization.signatures))}) is"
            f" among the current verify keys of {origin}"
            f" ({', '.join(sorted(keys.verify_keys)) or 'none'})"
        )


def verify_request_signatures(
    signed: Mapping[str, Any],
    authorization: XMatrixAuthorization,
    keys: PublishedKeys,
    now_ms: int,
    *,
    encoded: bytes | None = None,
) -> str:
    """Check the signatures of ``authorization`` over ``signed`` with the origin's keys.

    As Synapse: every signature by a key we know must verify, and at least one must.
    Returns the first key ID that verified. ``encoded``: ``signed``'s canonical JSON when
    the caller has it already (encoded in slices), else it is encoded here.
    """
    check_keys_usable(authorization, keys, now_ms)
    origin = authorization.origin
    obj = dict(signed)
    obj["signatures"] = {origin: dict(authorization.signatures)}
    known = {
        key_id: keys.verify_keys[key_id]
        for key_id in authorization.signatures
        if key_id in keys.verify_keys
    }
    try:
        # One encoding for all the signatures; the content is parse_json_bytes's
        # (authenticate's contract), so no walk of it (issue 22).
        verify_signatures(
            obj,
            origin,
            known,
            encode=parsed_signable_bytes if encoded is None else lambda _: encoded,
        )
    except SignatureError as e:
        raise BadSignature(f"Invalid signature for server {origin}: {e}") from None
    return next(iter(known))


class RequestAuthenticator(Generic[KeysT]):
    """Authenticates inbound federation requests for ``server_name``; an origin's keys are
    refetched for an unknown key ID when ``refetch_limit`` allows (once a minute; its own
    limit unless one shared with other key users is passed)."""

    def __init__(
        self,
        server_name: str,
        key_source: KeySource[KeysT],
        clock: IReactorTime,
        refetch_limit: RefetchLimit | None = None,
    ) -> None:
        self._server_name = server_name
        self._key_source = key_source
        self._clock = clock
        # origin -> (time the failure expires, in clock seconds; what failed)
        self._failed: BoundedCache[str, tuple[float, str]] = BoundedCache(
            clock, max_entries=MAX_NEGATIVE_CACHE_ENTRIES
        )
        # Refetches for an unknown key ID: once a minute per origin, a turn shared with
        # the signature checks of received PDUs when ``run`` passes the one limit to both.
        self._refetch_limit = refetch_limit if refetch_limit is not None else RefetchLimit(clock)

    def authenticate(
        self, method: bytes, uri: bytes, headers: Headers, read_content: Callable[[], Any]
    ) -> Deferred[AuthResult]:
        """Authenticate one request.

        ``uri`` is the request-target bytes exactly as received; ``read_content`` gives the
        JSON body as ``parse_json_bytes`` parsed it, or None when there is none: it is
        called at most once, and only when the header names a key the origin publishes
        (module doc). Fails with an :class:`AuthenticationFailed`, or with whatever
        ``read_content`` raises.
        """
        try:
            authorization = select_authorization(headers.getRawHeaders(b"authorization", []))
            check_destinations(authorization, self._server_name)
            target = (_decode_target(method, "method"), _decode_target(uri, "request-target"))
            self._check_not_failing(authorization.origin)
        except AuthenticationFailed as e:
            return _fail(e)

        return Deferred.fromCoroutine(self._verify(authorization, target, read_content))

    async def _verify(
        self,
        authorization: XMatrixAuthorization,
        target: tuple[str, str],
        read_content: Callable[[], Any],
    ) -> AuthResult:
        origin = authorization.origin
        keys = await self._keys(origin, self._key_source.fetch_cached_or_fresh)
        if not any(k in keys.verify_keys for k in authorization.signatures) and self._may_refresh(
            origin
        ):
            # The origin may have rotated its key since we cached its keys: ask again.
            keys = await self._keys(origin, self._key_source.fetch)
        now_ms = int(self._clock.seconds() * MS_PER_SECOND)
        check_keys_usable(authorization, keys, now_ms)
        method, uri = target
        slices = TimeSlices(self._clock)
        content = read_content()
        if isinstance(content, Deferred):  # a body of megabytes, parsed in slices
            content = await content
        signed = request_signing_object(method, uri, origin, self._server_name, content)
        encoded = None
        if slices.due():
            # The parse took a slice or more: the reactor answers other requests before
            # the signature check, and the body is encoded in slices too (issue 22,
            # /version stall). A body with no canonical form is left to the check below,
            # which refuses it with the usual words.
            await slices.pause()
            with contextlib.suppress(CanonicalJsonError):
                encoded = await encode_parsed_canonical_json_in_slices(signed, slices.pause)
            # The signature check hashes the body whole (ed25519: ~10-15 ms for 3.5 MB,
            # in one go): a turn of its own, not the end of the encoding's last slice.
            await slices.pause_now()
        key_id = verify_request_signatures(signed, authorization, keys, now_ms, encoded=encoded)
        return AuthResult(origin=origin, key_id=key_id)

    async def _keys(self, origin: str, fetch: Callable[[str], Deferred[KeysT]]) -> KeysT:
        d = fetch(origin)
        d.addTimeout(KEY_FETCH_TIMEOUT_SECONDS, self._clock)
        try:
            return await d
        except CancelledError:
            raise  # our caller went away; addTimeout's own timeout is a TimeoutError
        except Exception as e:
            reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            self._remember_failure(origin, reason)
            # The refusal that follows names the origin and this reason (issue 24).
            log.debug(
                "Fetching the keys of {origin} failed: {reason}", origin=origin, reason=reason
            )
            raise KeyFetchFailed(f"Could not fetch the keys of {origin}: {reason}") from None

    def _may_refresh(self, origin: str) -> bool:
        return self._refetch_limit.allow(origin)

    def _check_not_failing(self, origin: str) -> None:
        entry = self._failed.get(origin)
        if entry is None:
            return
        expires, reason = entry
        remaining = max(1, round(expires - self._clock.seconds()))
        raise KeyFetchFailed(
            f"Could not fetch the keys of {origin} recently ({reason});"
            f" not retrying for another {remaining} s"
        )

    def _remember_failure(self, origin: str, reason: str) -> None:
        expires = self._clock.seconds() + NEGATIVE_CACHE_SECONDS
        self._failed.set(origin, (expires, reason), NEGATIVE_CACHE_SECONDS)


def _decode_target(raw: bytes, what: str) -> str:
    # The sender signed the target as a JSON string; canonical JSON encodes it as UTF-8, so
    # the bytes on the request line decode as UTF-8 to the string that was signed.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestTarget(f"The {what} is not UTF-8, so it cannot have been signed") from None


def _fail(e: AuthenticationFailed) -> Deferred[AuthResult]:
    failed: Deferred[AuthResult] = fail(e)
    return failed
