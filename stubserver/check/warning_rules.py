"""The warnings of ``stubserver check``: what does not stop federation today but is wrong or
fragile, each with a stable code and its fix. Pure functions of the facts; none of them
changes ``FederationOK``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from stubserver.check.hints import describe_bad_m_server, hint_m_server
from stubserver.check.report import CheckWarning, FamilyWellKnown
from stubserver.discovery.well_known import WellKnownResult

#: The codes, stable for machines (documented in the README).
WELL_KNOWN_UNUSABLE = "WellKnownUnusable"
WELL_KNOWN_SPLIT_BRAIN = "WellKnownSplitBrain"
NOT_JSON_CONTENT_TYPE = "NotJSONContentType"
KEY_VALID_TOO_LONG = "KeyValidTooLong"
OLD_TLS = "OldTLS"
SRV_TARGET_CNAME = "SRVTargetCName"
CONNECTION_RETRIED = "ConnectionRetried"
VERSIONS_DIFFER = "VersionsDiffer"

#: Longest a key document should say it is valid ahead, in milliseconds: servers cap the
#: validity they accept at 7 days (spec: "Retrieving server keys", ``valid_until_ts``), so
#: a longer one only delays the rotation others see.
MAX_KEY_VALIDITY_MS = 7 * 24 * 3600 * 1000
#: TLS versions older than 1.2, as Go names them (the report's ``Cipher.Version``).
OLD_TLS_VERSIONS = frozenset({"TLS 1.0", "TLS 1.1", "SSLv3"})
#: A 404 is the ordinary "no delegation": not a warning.
NOT_FOUND = 404


def well_known_unusable(wk: WellKnownResult | None, bad_m_server: object) -> CheckWarning | None:
    """A ``.well-known`` that answered but cannot be used (not JSON, wrong shape, a bad
    ``m.server``, a status other than 200 or 404): servers fall back to the server name."""
    if wk is None or wk.m_server is not None or wk.status is None or wk.status == NOT_FOUND:
        return None
    if wk.status == 200:
        detail = (
            describe_bad_m_server(bad_m_server)
            if isinstance(bad_m_server, str)
            else (wk.error or "the body is not usable")
        )
        hint = hint_m_server(bad_m_server if isinstance(bad_m_server, str) else "")
        hint = (
            'Serve a JSON object {"m.server": "host[:port]"} with status 200, or remove the'
            " file if the server name itself serves federation. " + hint
        )
    else:
        detail = wk.error or f"HTTP {wk.status}"
        hint = (
            f"The .well-known answered {wk.status}: serve it with status 200 (no redirect"
            " loops, no error pages) when you delegate, or 404 when you do not. Servers treat"
            " any other answer as no delegation and use the server name itself."
        )
    return CheckWarning(WELL_KNOWN_UNUSABLE, f"{wk.url}: {detail}", hint)


def split_brain(
    by_family: Mapping[str, FamilyWellKnown], followed: Mapping[str, str]
) -> CheckWarning | None:
    """Addresses of the server name that serve different ``.well-known`` answers (or none).

    ``followed`` maps an answer (an ``m.server``) to where following it leads, as said for
    a person, so that the message shows what a server landing on each address would reach.
    """
    answers: dict[str, list[str]] = {}
    for fam in by_family.values():
        for address, attempt in fam.attempts.items():
            answer = f"m.server {attempt.server}" if attempt.server else "no usable .well-known"
            if attempt.server and attempt.server in followed:
                answer += f" (leads to {followed[attempt.server]})"
            answers.setdefault(answer, []).append(address)
    if len(answers) < 2:
        return None
    parts = [f"{', '.join(addresses)}: {answer}" for answer, addresses in answers.items()]
    return CheckWarning(
        WELL_KNOWN_SPLIT_BRAIN,
        "the addresses of the server name serve different .well-known answers: " + "; ".join(parts),
        "Servers pick any A or AAAA address, so each one federates with some servers and not"
        " others. Every address of the server name must serve the same"
        " /.well-known/matrix/server over HTTPS: fix the listener (or the reverse proxy's"
        " `listen [::]:443`) of the odd ones out, or remove the DNS records pointing at them.",
    )


def is_json_content_type(values: Sequence[bytes] | None) -> bool:
    """True when a ``Content-Type`` says JSON (``application/json`` or ``+json``)."""
    if not values:
        return False
    media = values[0].split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def not_json_content_type(
    address: str, path: str, values: Sequence[bytes] | None
) -> CheckWarning | None:
    """A key or version answer without a JSON ``Content-Type``."""
    if is_json_content_type(values):
        return None
    seen = values[0].decode("latin-1") if values else "no Content-Type"
    return CheckWarning(
        NOT_JSON_CONTENT_TYPE,
        f"{address}: GET {path} answered with {seen}",
        "Answer with Content-Type: application/json; some servers refuse other types. A"
        " reverse proxy or a static file serving this path must set it.",
    )


def key_valid_too_long(address: str, keys: object, now_ms: int) -> CheckWarning | None:
    """A key document valid for more than :data:`MAX_KEY_VALIDITY_MS` ahead."""
    valid_until = keys.get("valid_until_ts") if isinstance(keys, dict) else None
    if not isinstance(valid_until, int) or isinstance(valid_until, bool):
        return None
    ahead_ms = valid_until - now_ms
    if ahead_ms <= MAX_KEY_VALIDITY_MS:
        return None
    days = ahead_ms / (24 * 3600 * 1000)
    return CheckWarning(
        KEY_VALID_TOO_LONG,
        f"{address}: the key document is valid for {days:.1f} days ahead",
        "Other servers cap a key's validity at 7 days and ask again then; a longer"
        " valid_until_ts hides nothing but shows a misconfigured key lifetime. Keep it at"
        " 7 days or less (Synapse: key_refresh_interval).",
    )


def old_tls(address: str, version: str) -> CheckWarning | None:
    """A connection that negotiated TLS below 1.2."""
    if version not in OLD_TLS_VERSIONS:
        return None
    return CheckWarning(
        OLD_TLS,
        f"{address}: the connection used {version}",
        "TLS below 1.2 is deprecated (RFC 8996) and refused by many servers: enable TLS 1.2"
        " and 1.3 on the server or its reverse proxy.",
    )


def srv_target_cname(record_name: str, target: str, cname: str) -> CheckWarning:
    """An SRV target that is a CNAME (RFC 2782 forbids it; most resolvers follow it)."""
    return CheckWarning(
        SRV_TARGET_CNAME,
        f"the SRV record {record_name} points at {target}, which is a CNAME for {cname}",
        f"An SRV target must not be an alias (RFC 2782): point the SRV record at {cname}"
        f" directly, or give {target.rstrip('.')} its own A/AAAA records.",
    )


def connection_retried(address: str, first_error: str) -> CheckWarning:
    """A connection that failed once and worked on the retry."""
    return CheckWarning(
        CONNECTION_RETRIED,
        f"{address}: the first attempt failed ({first_error}); the retry worked",
        "Other servers may not retry at once and back off instead: look for an overloaded"
        " server or proxy, a flaky firewall, or a load balancer with a dead backend.",
    )


def versions_differ(versions: Mapping[str, str]) -> CheckWarning | None:
    """Different ``/version`` answers across connections (``address -> "name version"``)."""
    if len(set(versions.values())) < 2:
        return None
    parts = "; ".join(f"{a}: {json.dumps(v)}" for a, v in versions.items())
    return CheckWarning(
        VERSIONS_DIFFER,
        f"the connections answered different versions: {parts}",
        "A reverse proxy or load balancer sends some requests to another backend (or an old"
        " server still listens on one address): every address must reach the same server.",
    )
