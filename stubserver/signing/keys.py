"""ed25519 keys, unpadded base64 and the spec's JSON signing (appendix "Signing JSON").

The signing-key file format is Synapse's: one ``ed25519 <version> <unpadded base64 seed>``
per line, so that an admin can move a key between Synapse and stubserver.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from stubserver.signing.canonical_json import CanonicalJsonError, JsonDict, encode_canonical_json

#: The only algorithm the spec defines for server keys.
ED25519 = "ed25519"
#: Key versions, and so key IDs after ``ed25519:``, are ``[a-zA-Z0-9_]+`` (spec, Complement).
KEY_VERSION_RE = re.compile(r"[a-zA-Z0-9_]+\Z")
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}\Z")
ED25519_SEED_BYTES = 32
ED25519_SIGNATURE_BYTES = 64


class InvalidBase64(ValueError):
    """A string is not (unpadded or padded) standard base64."""


class InvalidKeyFile(ValueError):
    """A signing-key file is not in Synapse's format; ``str()`` says where and why."""


class SignatureError(ValueError):
    """A signature is missing or does not verify; ``str()`` says which and why."""


def encode_base64(data: bytes) -> str:
    """Unpadded standard base64, as the spec uses everywhere."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def decode_base64(text: str) -> bytes:
    """Decode standard base64 with or without padding; reject anything else."""
    if not isinstance(text, str) or not _B64_RE.match(text) or len(text.rstrip("=")) % 4 == 1:
        raise InvalidBase64("not valid base64")
    stripped = text.rstrip("=")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except binascii.Error:
        raise InvalidBase64("not valid base64") from None


@dataclass(frozen=True)
class ServerSigningKey:
    """An ed25519 signing key with its version (the part of the key ID after ``ed25519:``)."""

    version: str
    key: SigningKey

    @property
    def key_id(self) -> str:
        """The key ID, ``ed25519:<version>``."""
        return f"{ED25519}:{self.version}"

    @property
    def verify_key_base64(self) -> str:
        """The public half, unpadded base64, as published in ``verify_keys``."""
        return encode_base64(bytes(self.key.verify_key))

    @classmethod
    def generate(cls, version: str) -> ServerSigningKey:
        """A new random key with the given version."""
        if not KEY_VERSION_RE.match(version):
            raise ValueError(f"key version {version!r} must match [a-zA-Z0-9_]+")
        return cls(version=version, key=SigningKey.generate())

    def to_line(self) -> str:
        """This key as one line of Synapse's signing-key file (with newline)."""
        return f"{ED25519} {self.version} {encode_base64(bytes(self.key))}\n"


def parse_signing_key_file(text: str) -> list[ServerSigningKey]:
    """Parse a Synapse signing-key file's text; raise :class:`InvalidKeyFile` on any fault."""
    keys: list[ServerSigningKey] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise InvalidKeyFile(
                f"line {number}: expected 'ed25519 <version> <base64 seed>',"
                f" got {len(parts)} fields"
            )
        algorithm, version, seed_b64 = parts
        if algorithm != ED25519:
            raise InvalidKeyFile(f"line {number}: unsupported algorithm {algorithm!r}")
        if not KEY_VERSION_RE.match(version):
            raise InvalidKeyFile(f"line {number}: key version {version!r} must match [a-zA-Z0-9_]+")
        try:
            seed = decode_base64(seed_b64)
        except InvalidBase64:
            raise InvalidKeyFile(f"line {number}: the seed is not valid base64") from None
        if len(seed) != ED25519_SEED_BYTES:
            raise InvalidKeyFile(
                f"line {number}: an ed25519 seed is {ED25519_SEED_BYTES} bytes, not {len(seed)}"
            )
        keys.append(ServerSigningKey(version=version, key=SigningKey(seed)))
    if not keys:
        raise InvalidKeyFile("no key in the file")
    return keys


def decode_verify_key(key_b64: str) -> VerifyKey:
    """A published ed25519 verify key from its base64; raise ValueError when malformed."""
    raw = decode_base64(key_b64)
    if len(raw) != ED25519_SEED_BYTES:
        raise ValueError(f"an ed25519 verify key is {ED25519_SEED_BYTES} bytes, not {len(raw)}")
    return VerifyKey(raw)


def signable_bytes(obj: Mapping[str, Any]) -> bytes:
    """The canonical JSON that is signed: ``obj`` without ``signatures`` and ``unsigned``."""
    stripped = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    return encode_canonical_json(stripped)


def sign_json(obj: JsonDict, server_name: str, key: ServerSigningKey) -> JsonDict:
    """Return a copy of ``obj`` with our signature added under ``signatures``."""
    signature = key.key.sign(signable_bytes(obj)).signature
    signed = dict(obj)
    signatures: dict[str, dict[str, str]] = {
        s: dict(v) for s, v in obj.get("signatures", {}).items()
    }
    signatures.setdefault(server_name, {})[key.key_id] = encode_base64(signature)
    signed["signatures"] = signatures
    if "unsigned" in obj:
        signed["unsigned"] = obj["unsigned"]
    return signed


def verify_signed_json(
    obj: Mapping[str, Any], server_name: str, key_id: str, verify_key: VerifyKey
) -> None:
    """Check ``server_name``'s signature by ``key_id``; raise :class:`SignatureError`."""
    signatures = obj.get("signatures")
    if not isinstance(signatures, dict):
        raise SignatureError("no signatures")
    by_server = signatures.get(server_name)
    if not isinstance(by_server, dict) or key_id not in by_server:
        raise SignatureError(f"no signature by {server_name} with {key_id}")
    sig_b64 = by_server[key_id]
    try:
        signature = decode_base64(sig_b64)
    except InvalidBase64:
        raise SignatureError(f"signature by {key_id} is not valid base64") from None
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise SignatureError(f"signature by {key_id} has the wrong length")
    try:
        verify_key.verify(signable_bytes(obj), signature)
    except CanonicalJsonError as e:
        raise SignatureError(f"the signed object has no canonical form: {e}") from None
    except BadSignatureError:
        raise SignatureError(f"signature by {server_name} with {key_id} does not verify") from None
