"""ed25519 keys, unpadded base64 and the spec's JSON signing (appendix "Signing JSON").

The signing-key file format is Synapse's: one ``ed25519 <version> <unpadded base64 seed>``
per line, so that an admin can move a key between Synapse and stubserver.

Signing and verifying are matrix-org's ``signedjson`` (issue 11): :func:`sign_json` and
:func:`verify_signed_json` are thin entry points over ``signedjson.sign`` that keep our
names, argument order and typed :class:`SignatureError`. :func:`verify_signatures` checks
several signatures of one object and encodes it once (a key document may carry many).

Signature base64: Synapse (``signedjson`` over ``unpaddedbase64``) decodes standard *and*
URL-safe alphabets, padded or not; we follow it (issue 11: where we differed, Synapse's
behaviour wins), so a signature in URL-safe base64 verifies here as it does there. Unlike
``unpaddedbase64`` we still refuse characters of neither alphabet instead of skipping
them: Synapse would then fail on the wrong length or a bad signature anyway.
Key and seed base64 (:func:`decode_base64`, config and key files) stay strict.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from stubserver.signing.canonical_json import (
    CanonicalJsonError,
    JsonDict,
    encode_canonical_json,
    encode_parsed_canonical_json,
)

#: The only algorithm the spec defines for server keys.
if TYPE_CHECKING:
    pass

ED25519 = "ed25519"
#: Key versions, and so key IDs after ``ed25519:``, are ``[a-zA-Z0-9_]+`` (spec, Complement).
KEY_VERSION_RE = re.compile(r"[a-zA-Z0-9_]+\Z")
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}\Z")
#: Signatures: the standard or the URL-safe alphabet, as Synapse accepts (module doc).
_SIGNATURE_B64_RE = re.compile(r"[A-Za-z0-9+/_-]*={0,2}\Z")
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


def decode_signature_base64(text: object) -> bytes:
    """A signature's bytes, decoded as Synapse does (module doc); InvalidBase64 otherwise."""
    if not isinstance(text, str) or not _SIGNATURE_B64_RE.match(text):
        raise InvalidBase64("not valid base64")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise InvalidBase64("not valid base64")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), altchars=b"-_")
    except binascii.Error:
        raise InvalidBase64("not valid base64") from None


@dataclass(frozen=True)
class ServerSigningKey:
    """An ed25519 signing key with its version (the part of the key ID after ``ed25519:``)."""

    version: str
    key: SigningKey

    def __post_init__(self) -> None:
        # signedjson names a key by the ``alg`` and ``version`` attributes it sets on nacl's
        # key objects (signedjson.key.decode_signing_key_bytes); give ours the same.
        # Set here as signedjson.key.decode_signing_key_bytes sets them, without importing
        # signedjson: its import loads importlib.metadata (~0.8 MB, ~7 ms of start-up), and
        # `run` signs nothing until its first signed request or notary answer.
        if getattr(self.key, "version", None) != self.version or not hasattr(self.key, "alg"):
            key = SigningKey(bytes(self.key))
            key.version = self.version  # type: ignore[attr-defined]
            key.alg = ED25519  # type: ignore[attr-defined]
            object.__setattr__(self, "key", key)

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
    return encode_canonical_json(_signable(obj))


def parsed_signable_bytes(obj: Mapping[str, Any]) -> bytes:
    """:func:`signable_bytes` of an object made of what ``parse_json_bytes`` returns and
    strings (a request's signing object): ``encode_parsed_canonical_json``, no walk."""
    return encode_parsed_canonical_json(_signable(obj))


def _signable(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def sign_json(obj: JsonDict, server_name: str, key: ServerSigningKey) -> JsonDict:
    """Return a copy of ``obj`` with our signature added under ``signatures``.

    What ``signedjson.sign.sign_json`` does (the signature of the canonical JSON of
    ``obj`` without ``signatures`` and ``unsigned``, unpadded base64 under
    ``signatures[server_name][key_id]``), on a copy whose ``signatures`` are copied one
    level down so that ``obj``'s are left as they were. The object is walked once (our
    range checks) and encoded once (issue 22: a check walk, a second walk for lone
    surrogates, then the library's own encoding made signing a /send of 50 PDUs cost
    ~70 us per PDU). Raises :class:`CanonicalJsonError` when ``obj`` has no canonical form.
    """
    message = encode_canonical_json(_signable(obj))
    signed = dict(obj)
    signed["signatures"] = {s: dict(v) for s, v in obj.get("signatures", {}).items()}
    signature = encode_base64(key.key.sign(message).signature)
    signed["signatures"].setdefault(server_name, {})[key.key_id] = signature
    return signed


def _signature_by(obj: Mapping[str, Any], server_name: str, key_id: str) -> bytes:
    signatures = obj.get("signatures")
    if not isinstance(signatures, dict):
        raise SignatureError("no signatures")
    by_server = signatures.get(server_name)
    if not isinstance(by_server, dict) or key_id not in by_server:
        raise SignatureError(f"no signature by {server_name} with {key_id}")
    try:
        signature = decode_signature_base64(by_server[key_id])
    except InvalidBase64:
        raise SignatureError(f"signature by {key_id} is not valid base64") from None
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise SignatureError(f"signature by {key_id} has the wrong length")
    return signature


def verify_signed_json(
    obj: Mapping[str, Any], server_name: str, key_id: str, verify_key: VerifyKey
) -> None:
    """Check ``server_name``'s signature by ``key_id``; raise :class:`SignatureError`.

    The check itself is ``signedjson.sign.verify_signed_json``, after our own checks of
    the signature's presence, base64 and length, so that every failure is a
    SignatureError saying which.
    """
    import signedjson.key  # noqa: PLC0415 - imported on first use (see ServerSigningKey)
    import signedjson.sign  # noqa: PLC0415

    _signature_by(obj, server_name, key_id)
    if not key_id.startswith(f"{ED25519}:"):
        raise SignatureError(f"key {key_id} is not an {ED25519} key")
    named_key = signedjson.key.decode_verify_key_bytes(key_id, bytes(verify_key))
    try:
        signedjson.sign.verify_signed_json(dict(obj), server_name, named_key)
    except (UnicodeEncodeError, ValueError, TypeError) as e:
        # The library's encoder met what canonical JSON cannot hold (a lone surrogate).
        raise SignatureError(f"the signed object has no canonical form: {e}") from None
    except signedjson.sign.SignatureVerifyException:
        raise SignatureError(f"signature by {server_name} with {key_id} does not verify") from None


def verify_signatures(
    obj: Mapping[str, Any],
    server_name: str,
    keys: Mapping[str, VerifyKey],
    *,
    encode: Callable[[Mapping[str, Any]], bytes] = signable_bytes,
) -> None:
    """Check ``server_name``'s signature by each key of ``keys`` (key ID -> verify key).

    The object is encoded once, however many signatures are checked (a key document with
    hundreds of signatures must not cost hundreds of encodings: issue 12). ``encode``
    is :func:`signable_bytes`, replaceable to count encodings. Raises
    :class:`SignatureError` at the first missing or bad signature.
    """
    signatures = {key_id: _signature_by(obj, server_name, key_id) for key_id in keys}
    try:
        message = encode(obj)
    except CanonicalJsonError as e:
        raise SignatureError(f"the signed object has no canonical form: {e}") from None
    for key_id, verify_key in keys.items():
        try:
            # What signedjson.sign.verify_signed_json does after encoding, without encoding
            # again for each signature.
            verify_key.verify(message, signatures[key_id])
        except BadSignatureError:
            raise SignatureError(
                f"signature by {server_name} with {key_id} does not verify"
            ) from None
