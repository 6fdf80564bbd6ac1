"""Hashing and signing events, and checking an event's signature (spec: Server-Server
API, "Adding hashes and signatures to outgoing events", "Validating hashes and
signatures on received events"; appendix "Signing JSON").

The signature covers the *redacted* event (which keeps ``hashes``), so it survives
redaction and still covers the full content through the content hash. Order matters:
hash first, then sign. JSON signing itself is ``signedjson``'s (matrix-org's library);
keys are plain ``nacl`` keys with a separate key ID (``ed25519:<version>``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from nacl.signing import SigningKey, VerifyKey
from signedjson.key import decode_signing_key_base64, decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json

from stubserver.rooms.hashes import unpadded_base64, with_content_hash
from stubserver.rooms.redaction import redact
from stubserver.rooms.versions import RoomVersion
from stubserver.signing.canonical_json import JsonDict

#: The only signing algorithm the spec defines.
ED25519 = "ed25519"


class EventSignatureError(ValueError):
    """An event lacks a valid signature by ``server_name`` with ``key_id``; ``reason``
    says which (missing, malformed or not verifying)."""

    def __init__(self, server_name: str, key_id: str, reason: str) -> None:
        super().__init__(f"signature of {server_name} with {key_id}: {reason}")
        self.server_name = server_name
        self.key_id = key_id
        self.reason = reason


def _key_version(key_id: str) -> str:
    algorithm, sep, version = key_id.partition(":")
    if algorithm != ED25519 or not sep or not version:
        raise ValueError(f"key ID {key_id!r} is not 'ed25519:<version>'")
    return version


def _signedjson_signing_key(key_id: str, signing_key: SigningKey) -> Any:
    # signedjson reads the key ID from attributes it sets on its own key objects; make
    # one from the seed rather than setting attributes on the caller's key.
    return decode_signing_key_base64(
        ED25519, _key_version(key_id), unpadded_base64(bytes(signing_key))
    )


def event_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    key_id: str,
    signing_key: SigningKey,
) -> str:
    """The unpadded base64 signature by ``server_name``/``key_id`` over ``pdu``'s redacted
    form without ``signatures`` and ``unsigned`` (``hashes`` must already be set)."""
    redacted = redact(pdu, room_version)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    signed = sign_json(redacted, server_name, _signedjson_signing_key(key_id, signing_key))
    return str(signed["signatures"][server_name][key_id])


def add_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    key_id: str,
    signing_key: SigningKey,
) -> JsonDict:
    """A deep copy of ``pdu`` with our signature merged into ``signatures``.

    For someone else's event (an invite we countersign, a restricted join we authorise):
    nothing but ``signatures[server_name][key_id]`` changes, so existing signatures and
    the content hash stay valid.
    """
    signature = event_signature(pdu, room_version, server_name, key_id, signing_key)
    signed = copy.deepcopy(dict(pdu))
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        signatures = {}
    server_signatures = signatures.get(server_name)
    if not isinstance(server_signatures, dict):
        server_signatures = {}
    server_signatures[key_id] = signature
    signatures[server_name] = server_signatures
    signed["signatures"] = signatures
    return signed


def sign_event(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    key_id: str,
    signing_key: SigningKey,
) -> JsonDict:
    """Our event, ready to send: ``hashes`` set to the content hash, then signed.

    Returns a deep copy; ``unsigned`` and any other key are carried over unchanged.
    """
    return add_signature(with_content_hash(pdu), room_version, server_name, key_id, signing_key)


def verify_event_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    key_id: str,
    verify_key: VerifyKey,
) -> None:
    """Check ``server_name``'s signature with ``key_id`` on ``pdu``'s redacted form.

    Raise :class:`EventSignatureError` when it is missing, malformed or wrong. The
    content hash is not checked here (a mismatch means "use the redacted copy", not
    "drop"; see ``stubserver.rooms.hashes.check_content_hash``). Which servers must sign
    and which keys are valid at ``origin_server_ts`` is the caller's decision.
    """
    try:
        version = _key_version(key_id)
    except ValueError as e:
        raise EventSignatureError(server_name, key_id, str(e)) from None
    signatures = pdu.get("signatures")
    server_signatures = signatures.get(server_name) if isinstance(signatures, Mapping) else None
    if not isinstance(server_signatures, Mapping) or key_id not in server_signatures:
        raise EventSignatureError(server_name, key_id, "no such signature")
    if not isinstance(server_signatures[key_id], str):
        raise EventSignatureError(server_name, key_id, "the signature is not a string")
    redacted = redact(pdu, room_version)
    # signedjson keeps the key ID on its own key object.
    key = decode_verify_key_bytes(f"{ED25519}:{version}", bytes(verify_key))
    try:
        verify_signed_json(redacted, server_name, key)
    except SignatureVerifyException as e:
        raise EventSignatureError(server_name, key_id, str(e)) from None
