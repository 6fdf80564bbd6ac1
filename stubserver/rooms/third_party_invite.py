"""Third-party invites: does ``content.third_party_invite.signed`` carry a signature by
one of the identity server keys the room's ``m.room.third_party_invite`` event lists?

Spec: v12 "Authorisation rules" 5.4.1.7, Client-Server API ``m.room.third_party_invite``
and Appendices "Signing JSON". The signed bytes are the canonical JSON of ``signed``
without ``signatures`` and ``unsigned``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

ED25519_PUBLIC_KEY_BYTES = 32


def third_party_public_keys(content: Mapping[str, Any]) -> list[str]:
    """The keys an m.room.third_party_invite lists: ``public_key`` and ``public_keys``."""
    keys: list[str] = []
    if isinstance(content.get("public_key"), str):
        keys.append(content["public_key"])
    listed = content.get("public_keys")
    if isinstance(listed, list):
        keys.extend(
            k["public_key"]
            for k in listed
            if isinstance(k, dict) and isinstance(k.get("public_key"), str)
        )
    return keys


def _decode_base64(value: str) -> bytes | None:
    # Identity servers publish keys in unpadded standard or URL-safe base64.
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None


def signed_by_any(signed: Mapping[str, Any], public_keys: Sequence[str]) -> bool:
    """Rule 5.4.1.7: any ed25519 signature in ``signed`` verifies under any key. The
    signed bytes are the canonical JSON of ``signed`` without ``signatures``/``unsigned``."""
    unsigned = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
    message = json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    signatures = signed.get("signatures")
    if not isinstance(signatures, dict):
        return False
    candidates = [
        sig
        for per_server in signatures.values()
        if isinstance(per_server, dict)
        for key_id, sig in per_server.items()
        if isinstance(key_id, str) and key_id.startswith("ed25519:") and isinstance(sig, str)
    ]
    for key_text in public_keys:
        key = _decode_base64(key_text)
        if key is None or len(key) != ED25519_PUBLIC_KEY_BYTES:
            continue
        for sig_text in candidates:
            sig = _decode_base64(sig_text)
            if sig is None:
                continue
            try:
                VerifyKey(key).verify(message, sig)
            except (BadSignatureError, ValueError):
                continue
            return True
    return False
