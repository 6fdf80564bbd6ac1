"""Sample values shared by the tests of ``check/``: key documents, key checks, connections."""

from __future__ import annotations

from typing import Any

from stubserver.check.tester_fields import ConnectionReport, KeyChecks
from stubserver.signing.keys import ServerSigningKey, sign_json

NOW_MS = 1_700_000_000_000


def signed_keys(name: str, key: ServerSigningKey, valid_until: int = NOW_MS + 86_400_000) -> Any:
    return sign_json(
        {
            "server_name": name,
            "valid_until_ts": valid_until,
            "verify_keys": {key.key_id: {"key": key.verify_key_base64}},
            "old_verify_keys": {},
        },
        name,
        key,
    )


def key_checks(ok: bool = True) -> KeyChecks:
    return KeyChecks(
        all_checks_ok=ok,
        matching_server_name=True,
        future_valid_until_ts=True,
        has_ed25519_key=True,
        all_ed25519_checks_ok=True,
        ed25519_checks={},
        valid_certificates=ok,
    )


def connection_report(ok: bool = True) -> ConnectionReport:
    return ConnectionReport(
        certificates=(),
        cipher_version="TLS 1.3",
        cipher_suite="TLS_AES_128_GCM_SHA256",
        checks=key_checks(ok),
        errors=(),
        ed25519_verify_keys={},
        keys={},
    )
