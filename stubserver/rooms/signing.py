"""Hashing and signing events, and checking an event's signature (spec: Server-Server
API, "Adding hashes and signatures to outgoing events", "Validating hashes and
signatures on received events"; appendix "Signing JSON").

The signature covers the *redacted* event (which keeps ``hashes``), so it survives
redaction and still covers the full content through the content hash. Order matters:
hash first, then sign. The bytes signed are ``stubserver.rooms.event.signed_bytes_of``
the redacted form, the same bytes the reference hash (the event ID) covers; signing is
the nacl key's own (``SigningKey.sign``, what ``signedjson`` does after encoding) and
checking is ``stubserver.signing.keys.verify_signatures`` (one encoding, nacl keys).
Keys are plain ``nacl`` keys with a separate key ID (``ed25519:<version>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nacl.signing import SigningKey, VerifyKey

from stubserver.rooms.event import Event, signed_bytes_of
from stubserver.rooms.hashes import unpadded_base64, with_content_hash
from stubserver.rooms.redaction import redact
from stubserver.rooms.versions import RoomVersion
from stubserver.signing.canonical_json import JsonDict
from stubserver.signing.keys import SignatureError, verify_signatures

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


def signature_over(signed: bytes, key_id: str, signing_key: SigningKey) -> str:
    """The unpadded base64 signature of ``signed`` (an event's signed bytes)."""
    _key_version(key_id)
    return unpadded_base64(signing_key.sign(signed).signature)


def event_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    key_id: str,
    signing_key: SigningKey,
) -> str:
    """The unpadded base64 signature by ``server_name``/``key_id`` over ``pdu``'s redacted
    form without ``signatures`` and ``unsigned`` (``hashes`` must already be set)."""
    signed = signed_bytes_of(redact(pdu, room_version, copy_values=False))
    return signature_over(signed, key_id, signing_key)


def with_signature(
    pdu: Mapping[str, Any], server_name: str, key_id: str, signature: str
) -> JsonDict:
    """A copy of ``pdu`` with ``signature`` merged into ``signatures[server_name]``: the
    ``signatures`` object and ``server_name``'s block are new, the rest is shared."""
    signed = dict(pdu)
    signatures = signed.get("signatures")
    copied = (
        {server: dict(v) if isinstance(v, Mapping) else v for server, v in signatures.items()}
        if isinstance(signatures, Mapping)
        else {}
    )
    server_signatures = copied.get(server_name)
    if not isinstance(server_signatures, dict):
        server_signatures = {}
    server_signatures[key_id] = signature
    copied[server_name] = server_signatures
    signed["signatures"] = copied
    return signed


def add_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    key_id: str,
    signing_key: SigningKey,
) -> JsonDict:
    """A copy of ``pdu`` with our signature merged into ``signatures`` (``pdu`` is left
    as it was: :func:`with_signature`).

    For someone else's event (an invite we countersign, a restricted join we authorise):
    nothing but ``signatures[server_name][key_id]`` changes, so existing signatures and
    the content hash stay valid.
    """
    signature = event_signature(pdu, room_version, server_name, key_id, signing_key)
    return with_signature(pdu, server_name, key_id, signature)


def sign_event(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    key_id: str,
    signing_key: SigningKey,
) -> JsonDict:
    """Our event, ready to send: ``hashes`` set to the content hash, then signed.

    Returns a copy (``pdu`` is left as it was); ``unsigned`` and any other key are
    carried over unchanged.
    """
    return add_signature(with_content_hash(pdu), room_version, server_name, key_id, signing_key)


def verify_signed_event(event: Event, server_name: str, key_id: str, verify_key: VerifyKey) -> None:
    """Check ``server_name``'s signature with ``key_id`` on ``event``, over its signed
    bytes as computed once for the event (``Event.signed_bytes``).

    Raise :class:`EventSignatureError` when it is missing, malformed or wrong. The
    content hash is not checked here (a mismatch means "use the redacted copy", not
    "drop"; see ``stubserver.rooms.hashes.check_content_hash``). Which servers must sign
    and which keys are valid at ``origin_server_ts`` is the caller's decision.
    """
    _check_signature_present(event.pdu, server_name, key_id)
    try:
        verify_signatures(
            event.pdu, server_name, {key_id: verify_key}, encode=lambda _: event.signed_bytes()
        )
    except SignatureError as e:
        raise EventSignatureError(server_name, key_id, str(e)) from None


def verify_event_signature(
    pdu: Mapping[str, Any],
    room_version: RoomVersion,
    server_name: str,
    key_id: str,
    verify_key: VerifyKey,
) -> None:
    """:func:`verify_signed_event` for a PDU that is not (yet) an :class:`Event`."""
    _check_signature_present(pdu, server_name, key_id)
    signed = signed_bytes_of(redact(pdu, room_version, copy_values=False))
    try:
        verify_signatures(pdu, server_name, {key_id: verify_key}, encode=lambda _: signed)
    except SignatureError as e:
        raise EventSignatureError(server_name, key_id, str(e)) from None


def _check_signature_present(pdu: Mapping[str, Any], server_name: str, key_id: str) -> None:
    try:
        _key_version(key_id)
    except ValueError as e:
        raise EventSignatureError(server_name, key_id, str(e)) from None
    signatures = pdu.get("signatures")
    server_signatures = signatures.get(server_name) if isinstance(signatures, Mapping) else None
    if not isinstance(server_signatures, Mapping) or key_id not in server_signatures:
        raise EventSignatureError(server_name, key_id, "no such signature")
    if not isinstance(server_signatures[key_id], str):
        raise EventSignatureError(server_name, key_id, "the signature is not a string")
