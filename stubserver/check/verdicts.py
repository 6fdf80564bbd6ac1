"""The pure verdicts of ``stubserver check`` on what a server answered: its key response
(gomatrixserverlib's ``CheckKeys``), the answer to our signed request and its notary's
answer for our keys (the way back).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from stubserver.check.hints import (
    HINT_AUTH_STRIPPED,
    HINT_CANNOT_FETCH_OUR_KEYS,
    HINT_URI_REWRITTEN,
    hint_way_back,
)
from stubserver.check.report import SignedRequestReport, WayBackReport
from stubserver.check.tester_fields import Ed25519Check, KeyChecks
from stubserver.outbound.signed_request import FederationIdentity
from stubserver.signing.keys import (
    ED25519,
    InvalidBase64,
    SignatureError,
    decode_base64,
    decode_verify_key,
    verify_signed_json,
)

#: Length of an ed25519 public key, in bytes.
ED25519_PUBLIC_KEY_BYTES = 32


def check_keys(
    server_name: str, now_ms: int, keys: object, *, valid_certificates: bool
) -> tuple[KeyChecks, dict[str, str] | None]:
    """gomatrixserverlib's ``CheckKeys`` on a key response, then the tester's certificate rule.

    Returns the checks and ``Ed25519VerifyKeys``: the keys whose self-signature verifies,
    or None when the key checks (certificate aside) fail, as the tester reports them.
    """
    body = keys if isinstance(keys, dict) else {}
    response_name = body.get("server_name")
    matching = isinstance(response_name, str) and response_name == server_name
    valid_until = body.get("valid_until_ts")
    future = (
        isinstance(valid_until, int) and not isinstance(valid_until, bool) and now_ms < valid_until
    )
    ok = matching and future
    has_ed25519 = False
    all_ed25519_ok = True
    checks: dict[str, Ed25519Check] = {}
    verify_keys: dict[str, str] = {}
    raw_keys = body.get("verify_keys")
    for key_id, key_data in (raw_keys if isinstance(raw_keys, dict) else {}).items():
        if str(key_id).split(":", 1)[0] != ED25519:
            continue
        has_ed25519 = True
        key_b64 = key_data.get("key") if isinstance(key_data, dict) else None
        valid = False
        matching_sig = False
        if isinstance(key_b64, str):
            try:
                valid = len(decode_base64(key_b64)) == ED25519_PUBLIC_KEY_BYTES
            except InvalidBase64:
                valid = False
        if valid and isinstance(key_b64, str) and isinstance(response_name, str):
            try:
                verify_signed_json(body, response_name, key_id, decode_verify_key(key_b64))
                matching_sig = True
            except (SignatureError, ValueError):
                matching_sig = False
        checks[key_id] = Ed25519Check(valid_ed25519=valid, matching_signature=matching_sig)
        if matching_sig and isinstance(key_b64, str):
            verify_keys[key_id] = key_b64
        else:
            all_ed25519_ok = False
    if ok:
        ok = has_ed25519 and all_ed25519_ok
    result = KeyChecks(
        all_checks_ok=ok and valid_certificates,
        matching_server_name=matching,
        future_valid_until_ts=future,
        has_ed25519_key=has_ed25519,
        all_ed25519_checks_ok=all_ed25519_ok if has_ed25519 else None,
        ed25519_checks=checks,
        valid_certificates=valid_certificates,
    )
    return result, (verify_keys if ok else None)


_MISSING_AUTH_RE = re.compile(r"missing\s+authori[sz]ation|no\s+authori[sz]ation", re.IGNORECASE)
_KEY_FETCH_RE = re.compile(
    r"failed to (find|fetch)|no key|could not (find|fetch|get)|unable to (find|fetch)",
    re.IGNORECASE,
)
_SIGNATURE_RE = re.compile(r"signature", re.IGNORECASE)

#: HTTP status of an authentication failure.
UNAUTHORIZED = 401


def judge_signed_response(status: int, body: object) -> SignedRequestReport:
    """Read the answer to our signed request (the issue's rules).

    401 for a missing Authorization: the header was stripped. 401 for an invalid signature:
    the URI was changed on the way. 401 because our keys could not be fetched: the server
    cannot reach us (the way back says more). Any other answer: authentication passed.
    """
    if status != UNAUTHORIZED:
        return SignedRequestReport(skipped=False, ok=True, status=status)
    message = ""
    if isinstance(body, dict):
        message = str(body.get("error") or "")
    error = f"401 {message}".strip()
    if _MISSING_AUTH_RE.search(message):
        return SignedRequestReport(
            skipped=False, ok=False, status=status, error=error, hint=HINT_AUTH_STRIPPED
        )
    if _KEY_FETCH_RE.search(message):
        return SignedRequestReport(
            skipped=False, ok=False, status=status, error=error, hint=HINT_CANNOT_FETCH_OUR_KEYS
        )
    if _SIGNATURE_RE.search(message) or not message:
        return SignedRequestReport(
            skipped=False, ok=False, status=status, error=error, hint=HINT_URI_REWRITTEN
        )
    return SignedRequestReport(
        skipped=False,
        ok=False,
        status=status,
        error=error,
        hint="The server refused our signed request; its error above says why.",
    )


#: The notary endpoint asked for our keys.
NOTARY_QUERY_PATH = "/_matrix/key/v2/query"


def notary_query(identity: FederationIdentity, now_ms: int) -> dict[str, Any]:
    """The notary query for our keys. Synapse fetches from the origin only on a cache miss
    for a *named* key ID (a query for all keys, ``{}``, answers from its cache alone) and
    requires ``minimum_valid_until_ts``; keys valid from now on."""
    return {
        "server_keys": {
            identity.server_name: {
                key_id: {"minimum_valid_until_ts": now_ms} for key_id in identity.key_ids
            }
        }
    }


def judge_way_back(
    server_name: str, our_name: str, our_key_ids: Sequence[str], status: int, body: object
) -> WayBackReport:
    """Read the notary's answer to ``POST /_matrix/key/v2/query`` for our keys.

    Success is a 200 whose ``server_keys`` holds a response for ``our_name`` listing one of
    our key IDs: the server resolved and reached us to get it.
    """
    hint = hint_way_back(server_name, our_name)
    if status in (404, 405):
        return WayBackReport(
            skipped=False,
            ok=False,
            error=f"the server does not serve POST {NOTARY_QUERY_PATH} ({status})",
            hint=f"{server_name} has no notary endpoint, so whether it can reach other servers"
            ' cannot be shown this way; every homeserver should serve it (spec: "Querying'
            ' Keys Through Another Server"). If a reverse proxy sits in front, route all of'
            " /_matrix/key/ to the server.",
        )
    if status != 200:
        message = body.get("error") if isinstance(body, dict) else None
        return WayBackReport(
            skipped=False,
            ok=False,
            error=f"the notary answered {status}" + (f": {message}" if message else ""),
            hint=hint,
        )
    entries = body.get("server_keys") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return WayBackReport(
            skipped=False, ok=False, error="the notary's answer has no server_keys list", hint=hint
        )
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("server_name") != our_name:
            continue
        keys = entry.get("verify_keys")
        if isinstance(keys, dict) and any(k in keys for k in our_key_ids):
            return WayBackReport(skipped=False, ok=True)
    return WayBackReport(
        skipped=False,
        ok=False,
        error=f"the notary returned no keys for {our_name}",
        hint=hint,
    )
