"""Our server-key document, served at ``GET /_matrix/key/v2/server``.

Spec: Server-Server API, "Publishing Keys". The document lists our current keys under
``verify_keys``, retired ones under ``old_verify_keys`` and is signed by every current
key (as Synapse does with every key of its signing-key file); old keys do not sign.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from stubserver.config import OldVerifyKey
from stubserver.server.router import JsonResponse, Route
from stubserver.signing.canonical_json import JsonDict, encode_json
from stubserver.signing.keys import ServerSigningKey, sign_json

MS_PER_SECOND = 1000


def build_key_document(
    server_name: str,
    signing_keys: Sequence[ServerSigningKey],
    old_keys: Mapping[str, OldVerifyKey],
    valid_until_ts: int,
) -> JsonDict:
    """The signed key document: pure, for given keys and expiry (ms since the epoch)."""
    if not signing_keys:
        raise ValueError("a key document needs at least one signing key")
    doc: JsonDict = {
        "server_name": server_name,
        "valid_until_ts": valid_until_ts,
        "verify_keys": {k.key_id: {"key": k.verify_key_base64} for k in signing_keys},
        "old_verify_keys": {
            key_id: {"key": old.key, "expired_ts": old.expired_ts}
            for key_id, old in old_keys.items()
        },
    }
    for key in signing_keys:
        doc = sign_json(doc, server_name, key)
    return doc


def needs_rebuild(now_ms: int, built_at_ms: int, valid_until_ts: int) -> bool:
    """True once less than half of the document's validity remains (or the clock went back)."""
    if now_ms < built_at_ms:
        return True
    return (valid_until_ts - now_ms) * 2 < valid_until_ts - built_at_ms


@dataclass(frozen=True)
class _Built:
    body: JsonDict
    built_at_ms: int
    valid_until_ts: int
    encoded: bytes  # ``body`` as JSON, encoded once per build
    response: JsonResponse  # the answer of the key endpoint, made once per build


class KeyDocumentSource:
    """Builds the key document once and again only when less than half its validity remains."""

    def __init__(
        self,
        clock: IReactorTime,
        server_name: str,
        signing_keys: Sequence[ServerSigningKey],
        old_keys: Mapping[str, OldVerifyKey],
        validity_ms: int,
    ) -> None:
        self._clock = clock
        self._server_name = server_name
        self._signing_keys = tuple(signing_keys)
        self._old_keys = dict(old_keys)
        self._validity_ms = validity_ms
        self._built: _Built | None = None

    def current(self) -> JsonDict:
        """The document to serve now."""
        return self._current().body

    def current_encoded(self) -> tuple[JsonDict, bytes]:
        """The document to serve now, with its JSON bytes (encoded once per build)."""
        built = self._current()
        return built.body, built.encoded

    def current_response(self) -> JsonResponse:
        """The key endpoint's answer now: the document, encoded (made once per build)."""
        return self._current().response

    def _current(self) -> _Built:
        now_ms = int(self._clock.seconds() * MS_PER_SECOND)
        built = self._built
        if built is None or needs_rebuild(now_ms, built.built_at_ms, built.valid_until_ts):
            valid_until = now_ms + self._validity_ms
            body = build_key_document(
                self._server_name, self._signing_keys, self._old_keys, valid_until
            )
            encoded = encode_json(body)
            built = _Built(
                body=body,
                built_at_ms=now_ms,
                valid_until_ts=valid_until,
                encoded=encoded,
                response=JsonResponse(200, body, encoded=encoded),
            )
            self._built = built
        return built


def server_key_route(keys: KeyDocumentSource) -> Route:
    """``GET /_matrix/key/v2/server``: our signed key document."""

    def handle(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        return keys.current_response()

    return Route("GET", "/_matrix/key/v2/server", handle)
