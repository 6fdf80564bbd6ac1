"""The check of a server's key document (spec: Server-Server API, "Retrieving server
keys", ``GET /_matrix/key/v2/server``): a pure function over the parsed document, the
server name asked for and the time. :class:`~stubserver.server_keys.fetcher.ServerKeyFetcher`
runs it on every response and carries its :class:`KeyCheck` in its report.

A document is accepted when its ``server_name`` is the one asked, every signature by the
server with a key listed in ``verify_keys`` verifies and there is at least one, and
``valid_until_ts`` is in the future; keys of unknown algorithms are ignored, malformed
base64 rejects the document (as Synapse).

Bounded work per document (issue 12, row 2): a document with more than
:data:`MAX_VERIFY_KEYS` verify keys, :data:`MAX_OLD_VERIFY_KEYS` old keys or
:data:`MAX_SIGNATURES` signatures in all is refused before any cryptography; only the
server's own signatures by keys in ``verify_keys`` are checked, and the document is
encoded once for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import VerifyKey

from stubserver.signing.keys import (
    ED25519,
    KEY_VERSION_RE,
    SignatureError,
    decode_verify_key,
    signable_bytes,
    verify_signatures,
)

#: Most ``verify_keys`` entries a document may have; more is refused (servers publish 1-2).
MAX_VERIFY_KEYS = 16
#: Most ``old_verify_keys`` entries a document may have; more is refused.
MAX_OLD_VERIFY_KEYS = 256
#: Most signatures a document may carry, all servers together; more is refused (a
#: server's own document carries one per current key, a notary's adds one or two).
MAX_SIGNATURES = 64


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


__all__ = (
    "MAX_OLD_VERIFY_KEYS",
    "MAX_SIGNATURES",
    "MAX_VERIFY_KEYS",
    "KeyCheck",
    "check_key_response",
    "count_signatures",
)
