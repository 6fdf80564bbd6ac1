"""``stubserver check``: why federation with a server works or fails, step by step.

The report carries every field of the matrix federation tester's ``/api/report`` JSON
(matrix-org/matrix-federation-tester, ``ServerReport``) with the same names, shapes and
meanings, Go zero values included (``SRVRecords: null`` when no SRV record was used,
``CacheExpiresAt`` in Unix seconds, ``AllEd25519ChecksOK: null`` when there was no ed25519
key), plus fields of our own for what the tester cannot see:

- ``SignedRequest``: a request signed with our identity, sent through the full resolution
  to a path with percent-encoded characters. A reverse proxy that re-encodes the URI makes
  the signature fail (401); one that drops ``Authorization`` makes it missing (401).
- ``WayBack``: the server's notary is asked for our keys (``POST /_matrix/key/v2/query``);
  an answer with our key shows that the server can resolve and reach other servers.
- ``WellKnownByFamily``: ``/.well-known/matrix/server`` fetched over every IPv4 and every
  IPv6 address of the server name.
- ``Hints``: one per problem, failing step first, each pointing at the fix.
- ``AllOK``: ``FederationOK`` and neither ``SignedRequest`` nor ``WayBack`` failed.

Where the tester is looser than the spec we compute the spec's way (Server-Server API,
"Resolving server names", v1.19): both SRV names (``_matrix-fed._tcp`` then the deprecated
``_matrix._tcp``), IP literals of both families, every address of every target, the Host
header and certificate name the spec prescribes for the step taken.

``FederationOK`` keeps the tester's meaning ("the run didn't encounter anything that could
hamper federation"): false on a report ``Error``, on any connection error, on any
connection whose checks fail, when no address could be tried at all, when a
``.well-known`` was served but is invalid, and when the ``.well-known`` answers differently
over IPv4 and IPv6.

This module holds the report model and the pure decisions (key checks, the verdicts on the
signed request and the way back, the hints, the text rendering); the I/O lives in
:class:`AddressProber` and :class:`FederationChecker` at the end of the file.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.names import dns
from twisted.web.client import URI, Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from stubserver.auth.xmatrix import sign_request
from stubserver.client.agent import ResolutionFailed
from stubserver.client.blocklist import BlockedAddress
from stubserver.client.body import describe_failure, read_body_limited
from stubserver.client.build import build_federation_client
from stubserver.config import FederationSettings
from stubserver.discovery.dns import AddressLookupError, DnsClients, build_dns_clients
from stubserver.discovery.resolution import SOURCE_LEGACY_SRV, SOURCE_SRV, Resolution, Target
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.discovery.well_known import parse_well_known_body
from stubserver.signing.canonical_json import BadJson, encode_json, parse_json_bytes
from stubserver.signing.keys import (
    ED25519,
    InvalidBase64,
    ServerSigningKey,
    SignatureError,
    decode_base64,
    decode_verify_key,
    verify_signed_json,
)
from stubserver.tls.client import SystemAndFileTrustRoot, is_ip_literal

#: Length of an ed25519 public key, in bytes.
ED25519_PUBLIC_KEY_BYTES = 32

#: Report step names, in the order a federating server goes through them; hints and the
#: text report list the earliest failing step first.
STEP_SERVER_NAME = "server name"
STEP_WELL_KNOWN = ".well-known"
STEP_DNS = "DNS"
STEP_CONNECTION = "connection"
STEP_CERTIFICATE = "certificate"
STEP_KEYS = "keys"
STEP_VERSION = "version"
STEP_SIGNED_REQUEST = "signed request"
STEP_WAY_BACK = "way back"
STEP_ORDER = (
    STEP_SERVER_NAME,
    STEP_WELL_KNOWN,
    STEP_DNS,
    STEP_CONNECTION,
    STEP_CERTIFICATE,
    STEP_KEYS,
    STEP_VERSION,
    STEP_SIGNED_REQUEST,
    STEP_WAY_BACK,
)

FAMILY_IPV4 = "IPv4"
FAMILY_IPV6 = "IPv6"


def _error_json(message: str | None) -> dict[str, str] | None:
    """A Go ``error`` after the tester's ``asReportError``: ``{"Message": ...}`` or null."""
    return None if message is None else {"Message": message}


# --------------------------------------------------------------------------------------
# The tester's fields


@dataclass(frozen=True)
class WellKnownReport:
    """``WellKnownResult``: the delegated name, or why there is none (``result``)."""

    server: str = ""
    result: str = ""
    cache_expires_at: int = 0

    def to_json(self) -> dict[str, Any]:
        """The tester's shape: ``result`` is omitted when empty (``omitempty``)."""
        out: dict[str, Any] = {"m.server": self.server}
        if self.result:
            out["result"] = self.result
        out["CacheExpiresAt"] = self.cache_expires_at
        return out


@dataclass(frozen=True)
class SRVRecord:
    """One SRV answer, as Go's ``net.SRV`` (the target keeps its trailing dot)."""

    target: str
    port: int
    priority: int
    weight: int

    def to_json(self) -> dict[str, Any]:
        """Go's field names and order."""
        return {
            "Target": self.target,
            "Port": self.port,
            "Priority": self.priority,
            "Weight": self.weight,
        }


@dataclass(frozen=True)
class HostResult:
    """``DNSResult.Hosts[host]``: a target host's canonical name and addresses."""

    cname: str
    addrs: tuple[str, ...] | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"CName", "Addrs", "Error"}`` with Go's zero values."""
        return {
            "CName": self.cname,
            "Addrs": None if self.addrs is None else list(self.addrs),
            "Error": _error_json(self.error),
        }


@dataclass(frozen=True)
class DNSReport:
    """``DNSResult``: SRV answers, the hosts looked up and every ``ip:port`` to try."""

    srv_skipped: bool = False
    srv_cname: str = ""
    srv_records: tuple[SRVRecord, ...] | None = None
    srv_error: str | None = None
    hosts: Mapping[str, HostResult] = field(default_factory=dict)
    addrs: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The tester's shape."""
        return {
            "SRVSkipped": self.srv_skipped,
            "SRVCName": self.srv_cname,
            "SRVRecords": (
                None if self.srv_records is None else [r.to_json() for r in self.srv_records]
            ),
            "SRVError": _error_json(self.srv_error),
            "Hosts": {k: v.to_json() for k, v in self.hosts.items()},
            "Addrs": None if self.addrs is None else list(self.addrs),
        }


@dataclass(frozen=True)
class CertificateSummary:
    """``X509CertSummary``: one certificate of the chain the server presented."""

    subject_common_name: str
    issuer_common_name: str
    sha256_fingerprint: str
    dns_names: tuple[str, ...] | None

    def to_json(self) -> dict[str, Any]:
        """The tester's shape (the fingerprint is unpadded base64, as Go's Base64Bytes)."""
        return {
            "SubjectCommonName": self.subject_common_name,
            "IssuerCommonName": self.issuer_common_name,
            "SHA256Fingerprint": self.sha256_fingerprint,
            "DNSNames": None if self.dns_names is None else list(self.dns_names),
        }


@dataclass(frozen=True)
class Ed25519Check:
    """gomatrixserverlib's ``Ed25519Checks`` for one key."""

    valid_ed25519: bool
    matching_signature: bool

    def to_json(self) -> dict[str, bool]:
        """Go's field names."""
        return {"ValidEd25519": self.valid_ed25519, "MatchingSignature": self.matching_signature}


@dataclass(frozen=True)
class KeyChecks:
    """gomatrixserverlib's ``KeyChecks`` plus the tester's ``ValidCertificates``.

    ``all_checks_ok`` already includes ``valid_certificates``, as the tester computes it.
    """

    all_checks_ok: bool
    matching_server_name: bool
    future_valid_until_ts: bool
    has_ed25519_key: bool
    all_ed25519_checks_ok: bool | None
    ed25519_checks: Mapping[str, Ed25519Check]
    valid_certificates: bool

    def to_json(self) -> dict[str, Any]:
        """The tester's ``Checks`` object (embedded KeyChecks fields first, as Go does)."""
        return {
            "AllChecksOK": self.all_checks_ok,
            "MatchingServerName": self.matching_server_name,
            "FutureValidUntilTS": self.future_valid_until_ts,
            "HasEd25519Key": self.has_ed25519_key,
            "AllEd25519ChecksOK": self.all_ed25519_checks_ok,
            "Ed25519Checks": {k: v.to_json() for k, v in self.ed25519_checks.items()},
            "ValidCertificates": self.valid_certificates,
        }


@dataclass(frozen=True)
class ConnectionReport:
    """``ConnectionReports[ip:port]``: one address that answered with its keys."""

    certificates: tuple[CertificateSummary, ...]
    cipher_version: str
    cipher_suite: str
    checks: KeyChecks
    errors: tuple[str, ...]
    ed25519_verify_keys: Mapping[str, str] | None
    keys: Any

    def to_json(self) -> dict[str, Any]:
        """The tester's shape; ``Keys`` is the key response as received."""
        return {
            "Certificates": [c.to_json() for c in self.certificates] or None,
            "Cipher": {"Version": self.cipher_version, "CipherSuite": self.cipher_suite},
            "Checks": self.checks.to_json(),
            "Errors": [{"Message": e} for e in self.errors],
            "Ed25519VerifyKeys": (
                None if self.ed25519_verify_keys is None else dict(self.ed25519_verify_keys)
            ),
            "Info": {},
            "Keys": self.keys,
        }


@dataclass(frozen=True)
class VersionReport:
    """``Version``: ``{"name", "version"}`` or ``{"error"}`` (each omitted when empty)."""

    name: str = ""
    version: str = ""
    error: str = ""

    def to_json(self) -> dict[str, str]:
        """Go's ``omitempty`` fields."""
        out = {"name": self.name, "version": self.version, "error": self.error}
        return {k: v for k, v in out.items() if v}


# --------------------------------------------------------------------------------------
# Our own fields


@dataclass(frozen=True)
class SignedRequestReport:
    """``SignedRequest``: did a signed request survive the way to the server?"""

    skipped: bool
    ok: bool
    status: int | None = None
    error: str | None = None
    hint: str | None = None

    @property
    def failed(self) -> bool:
        """True when it ran and failed."""
        return not self.skipped and not self.ok

    def to_json(self) -> dict[str, Any]:
        """Our shape, documented in the README."""
        return {
            "Skipped": self.skipped,
            "OK": self.ok,
            "Status": self.status,
            "Error": self.error,
            "Hint": self.hint,
        }


@dataclass(frozen=True)
class WayBackReport:
    """``WayBack``: could the server fetch our keys through its notary?"""

    skipped: bool
    ok: bool
    error: str | None = None
    hint: str | None = None

    @property
    def failed(self) -> bool:
        """True when it ran and failed."""
        return not self.skipped and not self.ok

    def to_json(self) -> dict[str, Any]:
        """Our shape, documented in the README."""
        return {"Skipped": self.skipped, "OK": self.ok, "Error": self.error, "Hint": self.hint}


@dataclass(frozen=True)
class WellKnownAttempt:
    """The ``.well-known`` as one address answered it: ``m.server`` or an error."""

    server: str = ""
    result: str = ""
    status: int | None = None
    #: The ``m.server`` value as served when it is unusable (not in the JSON: the hint
    #: quotes it).
    bad_m_server: object = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        """``{"m.server", "result", "Status"}``."""
        return {"m.server": self.server, "result": self.result, "Status": self.status}


@dataclass(frozen=True)
class FamilyWellKnown:
    """``WellKnownByFamily[IPv4|IPv6]``: the ``.well-known`` over each address of a family."""

    attempts: Mapping[str, WellKnownAttempt] = field(default_factory=dict)
    lookup_error: str | None = None

    @property
    def skipped(self) -> bool:
        """True when the name has no address of this family."""
        return not self.attempts

    def to_json(self) -> dict[str, Any]:
        """``{"Skipped", "Error", "Addrs": {ip: attempt}}``."""
        return {
            "Skipped": self.skipped,
            "Error": self.lookup_error,
            "Addrs": {k: v.to_json() for k, v in self.attempts.items()},
        }


@dataclass(frozen=True)
class Hint:
    """One problem found, at which step, and what to do about it."""

    step: str
    problem: str
    fix: str

    def to_json(self) -> dict[str, str]:
        """``{"Step", "Problem", "Fix"}``."""
        return {"Step": self.step, "Problem": self.problem, "Fix": self.fix}


@dataclass(frozen=True)
class CheckReport:
    """The whole report: the tester's fields, ours, and the verdicts computed from them."""

    server_name: str
    error: str = ""
    well_known: WellKnownReport = field(default_factory=WellKnownReport)
    #: True when the .well-known answered 200 but its content is unusable (bad JSON, a bad
    #: m.server): the admin meant to delegate and it does not work.
    well_known_invalid: bool = False
    dns: DNSReport = field(default_factory=DNSReport)
    connection_reports: Mapping[str, ConnectionReport] = field(default_factory=dict)
    connection_errors: Mapping[str, str] = field(default_factory=dict)
    version: VersionReport = field(default_factory=VersionReport)
    signed_request: SignedRequestReport = field(
        default_factory=lambda: SignedRequestReport(skipped=True, ok=False)
    )
    way_back: WayBackReport = field(default_factory=lambda: WayBackReport(skipped=True, ok=False))
    well_known_by_family: Mapping[str, FamilyWellKnown] = field(default_factory=dict)
    hints: tuple[Hint, ...] = ()

    @property
    def federation_ok(self) -> bool:
        """The tester's ``FederationOK``, computed the spec-correct way (module docstring)."""
        return federation_ok(self)

    @property
    def all_ok(self) -> bool:
        """``FederationOK`` and neither the signed request nor the way back failed."""
        return all_ok(self.federation_ok, self.signed_request, self.way_back)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON: the tester's fields first, then ours."""
        out: dict[str, Any] = {}
        if self.error:
            out["Error"] = self.error
        out["WellKnownResult"] = self.well_known.to_json()
        out["DNSResult"] = self.dns.to_json()
        out["ConnectionReports"] = {k: v.to_json() for k, v in self.connection_reports.items()}
        out["ConnectionErrors"] = {k: {"Message": v} for k, v in self.connection_errors.items()}
        out["Version"] = self.version.to_json()
        out["FederationOK"] = self.federation_ok
        out["SignedRequest"] = self.signed_request.to_json()
        out["WayBack"] = self.way_back.to_json()
        out["WellKnownByFamily"] = {k: v.to_json() for k, v in self.well_known_by_family.items()}
        out["Hints"] = [h.to_json() for h in self.hints]
        out["AllOK"] = self.all_ok
        return out


# --------------------------------------------------------------------------------------
# Pure decisions


def families_disagree(by_family: Mapping[str, FamilyWellKnown]) -> bool:
    """True when the ``.well-known`` gives different answers over different addresses."""
    answers = {
        (a.server, bool(a.result) and not a.server)
        for fam in by_family.values()
        for a in fam.attempts.values()
    }
    return len(answers) > 1


def federation_ok(report: CheckReport) -> bool:
    """The tester's ``FederationOK``: nothing was found that could hamper federation."""
    if report.error or report.well_known_invalid:
        return False
    if report.connection_errors or not report.connection_reports:
        return False
    if families_disagree(report.well_known_by_family):
        return False
    return all(c.checks.all_checks_ok for c in report.connection_reports.values())


def all_ok(fed_ok: bool, signed: SignedRequestReport, way_back: WayBackReport) -> bool:
    """``AllOK``: federation is OK and neither of our own end-to-end checks failed."""
    return fed_ok and not signed.failed and not way_back.failed


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


# -- the signed request ----------------------------------------------------------------

HINT_URI_REWRITTEN = (
    "A reverse proxy in front of the server changes the request URI (it decodes or"
    " re-encodes percent-escapes, or rewrites the path), so the X-Matrix signature no longer"
    " matches. Pass the URI through untouched: in nginx write `proxy_pass"
    " http://127.0.0.1:8008;` with no path after the port (no trailing slash, no URI) and no"
    " `rewrite`; in Apache use `ProxyPass ... nocanon` and `AllowEncodedSlashes NoDecode`;"
    " in Caddy do not use `uri` or `rewrite` on /_matrix."
)
HINT_AUTH_STRIPPED = (
    "A reverse proxy in front of the server drops the Authorization header, so every"
    " federation request arrives unauthenticated (401). Forward it: nginx and Apache"
    ' forward it by default, so look for `proxy_set_header Authorization ""`,'
    " `RequestHeader unset Authorization` or an auth module on /_matrix."
)
HINT_CANNOT_FETCH_OUR_KEYS = (
    "The server could not fetch our signing keys to check the signature: it cannot reach"
    " other servers (see the way back)."
)
HINT_SIGNED_REQUEST_UNREACHABLE = (
    "The signed request did not get an answer: fix the connection problems above first."
)

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


# -- the way back ----------------------------------------------------------------------


def hint_way_back(server_name: str, our_name: str) -> str:
    """What to do when the server cannot fetch our keys."""
    return (
        f"{server_name} could not fetch the keys of {our_name}: it cannot resolve or reach"
        " other servers, so it cannot verify anyone's requests or join remote rooms. Check"
        " its outbound DNS (resolv.conf inside its container), its firewall's egress to ports"
        " 443 and 8448, any HTTP proxy settings, and ip_range_blocklist /"
        " federation_domain_whitelist. (If this checker's own identity is not reachable from"
        f" the internet, {our_name} is the one to fix.)"
    )


#: The notary endpoint asked for our keys.
NOTARY_QUERY_PATH = "/_matrix/key/v2/query"


def notary_query(identity: Identity, now_ms: int) -> dict[str, Any]:
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


# -- .well-known ------------------------------------------------------------------------

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def hint_m_server(value: str) -> str:
    """The fix for an ``m.server`` that is not ``host[:port]``."""
    fixed = _SCHEME_RE.sub("", value).split("/", 1)[0]
    suggestion = f' ("m.server": "{fixed}")' if fixed and fixed != value else ""
    return (
        "m.server must be the delegated server name, host[:port], without a scheme, path or"
        f" trailing slash{suggestion}. Servers that read it ignore the whole .well-known"
        " otherwise, and look for the server at the server name itself."
    )


def describe_bad_m_server(value: object) -> str:
    """Why an ``m.server`` value is unusable (for ``result``)."""
    if not isinstance(value, str):
        return "m.server is not a string"
    if _SCHEME_RE.match(value):
        return f"m.server {value!r} has a scheme; it must be host[:port]"
    if "/" in value:
        return f"m.server {value!r} has a path; it must be host[:port]"
    return f"m.server {value!r} is not a valid server name"


def hint_family(by_family: Mapping[str, FamilyWellKnown]) -> Hint | None:
    """A hint when the ``.well-known`` differs between addresses (often IPv4 vs IPv6)."""
    if not families_disagree(by_family):
        return None
    lines = []
    for family, fam in by_family.items():
        for address, attempt in fam.attempts.items():
            answer = f"m.server {attempt.server}" if attempt.server else attempt.result
            lines.append(f"{family} {address}: {answer}")
    return Hint(
        step=STEP_WELL_KNOWN,
        problem="the .well-known answers differently depending on the address: " + "; ".join(lines),
        fix="Every A and AAAA address of the server name must serve the same"
        " /.well-known/matrix/server over HTTPS on port 443: fix the listener (or the"
        " reverse proxy's `listen [::]:443`) of the failing family, or remove the DNS"
        " record that points at it.",
    )


# -- certificates -----------------------------------------------------------------------


def hint_certificate(
    expected_name: str,
    dns_names: Sequence[str] | None,
    *,
    server_name: str,
    delegated_name: str | None,
    srv_target: str | None,
    verify_error: str | None,
) -> str:
    """The fix for a certificate that does not verify for ``expected_name``."""
    names = ", ".join(dns_names or ()) or "no DNS name"
    covers_expected = expected_name.lower() in {n.lower() for n in dns_names or ()}
    if not covers_expected and dns_names is not None:
        for_what = f"the server name {server_name}"
        if delegated_name and delegated_name != server_name:
            for_what = f"the delegated name {delegated_name} (from .well-known)"
        advice = (
            f"The certificate is valid for {names}, but other servers check it against"
            f" {expected_name}: it must be valid for {for_what}."
        )
        target = (srv_target or "").rstrip(".")
        if target and target.lower() != expected_name.lower():
            advice += (
                f" The SRV target {target} does not count: since spec v1.2 the certificate is"
                " checked against the name SRV was looked up for, not the SRV target."
            )
        return advice
    detail = f" ({verify_error})" if verify_error else ""
    return (
        f"The certificate chain is not trusted{detail}: serve the full chain (the"
        " certificate followed by its intermediates, e.g. fullchain.pem) from a CA that"
        " other servers trust, and renew it before it expires."
    )


def hint_srv_cname(record_name: str, target: str, cname: str) -> Hint:
    """An SRV target that is a CNAME (RFC 2782 forbids it)."""
    return Hint(
        step=STEP_DNS,
        problem=f"the SRV record {record_name} points at {target}, which is a CNAME for {cname}",
        fix=f"An SRV target must not be an alias (RFC 2782): point the SRV record at {cname}"
        f" directly, or give {target.rstrip('.')} its own A/AAAA records.",
    )


def hint_unreachable(address: str, error: str, *, from_srv: str | None, server_name: str) -> Hint:
    """An address that did not answer (the usual 401-on-join cause)."""
    via = f" (from the SRV record {from_srv})" if from_srv else ""
    return Hint(
        step=STEP_CONNECTION,
        problem=f"{address}{via} did not answer: {error}",
        fix=(
            f"Other servers cannot reach {server_name} there, so they cannot fetch its keys"
            " or deliver to it, and its own requests to them fail with '401 Unauthorized'"
            " (typically when joining a room). Make the server (or its reverse proxy) listen"
            " on that address and port and open the firewall / port forwarding to it"
            + (
                ", or fix the SRV record to point at a host and port that answer."
                if from_srv
                else "; or fix the DNS record that points there."
            )
        ),
    )


def hint_keys(address: str, checks: KeyChecks, server_name: str, answered_for: object) -> Hint:
    """Key checks that failed (certificate aside)."""
    problems = []
    fixes = []
    if not checks.matching_server_name:
        problems.append(f"the keys are for {answered_for!r}, not {server_name!r}")
        fixes.append(
            "server_name in the homeserver's config must be the name in user IDs, and the"
            " reverse proxy must route this host to that server"
        )
    if not checks.future_valid_until_ts:
        problems.append("valid_until_ts is in the past")
        fixes.append("check the server's clock")
    if not checks.has_ed25519_key:
        problems.append("no ed25519 verify key is published")
        fixes.append("check the signing key configuration")
    elif checks.all_ed25519_checks_ok is False:
        problems.append("a verify key's self-signature does not verify")
        fixes.append("the published key must be the one the server signs with")
    return Hint(
        step=STEP_KEYS,
        problem=f"{address}: " + "; ".join(problems),
        fix="; ".join(fixes).capitalize() + ".",
    )


def invalid_name_report(server_name: str, reason: str) -> CheckReport:
    """The report for a string that is not a server name (the tester's ``Error``)."""
    return CheckReport(
        server_name,
        error=f"Invalid server name '{server_name}'",
        hints=(
            Hint(
                STEP_SERVER_NAME,
                reason,
                "Give the server name as it appears in user IDs (@user:NAME): host[:port],"
                " without a scheme or path.",
            ),
        ),
    )


def order_hints(hints: Sequence[Hint]) -> tuple[Hint, ...]:
    """Hints by step, earliest failing step first; duplicates dropped, order kept."""
    seen: set[Hint] = set()
    unique = [h for h in hints if not (h in seen or seen.add(h))]  # type: ignore[func-returns-value]
    rank = {step: i for i, step in enumerate(STEP_ORDER)}
    return tuple(sorted(unique, key=lambda h: rank.get(h.step, len(STEP_ORDER))))


# -- text --------------------------------------------------------------------------------


def render_text(report: CheckReport) -> str:
    """The report for people: verdict, then each problem (failing step first) with its fix,
    then the facts."""
    lines: list[str] = []
    verdict = "OK" if report.all_ok else "FAILED"
    lines.append(f"{report.server_name}: federation {verdict}")
    if report.error:
        lines.append(f"  error: {report.error}")
    for hint in report.hints:
        lines.append("")
        lines.append(f"[{hint.step}] {hint.problem}")
        lines.append(f"  fix: {hint.fix}")
    lines.append("")
    wk = report.well_known
    lines.append(f"  {'.well-known':<16}" + (f"m.server {wk.server}" if wk.server else wk.result))
    for family, fam in report.well_known_by_family.items():
        answers = ", ".join(f"{a}: {v.server or v.result}" for a, v in fam.attempts.items()) or (
            fam.lookup_error or "no address"
        )
        lines.append(f"  {'  ' + family:<16}{answers}")
    dns = report.dns
    if dns.srv_skipped:
        srv = "skipped (IP literal or explicit port)"
    elif dns.srv_records:
        srv = ", ".join(f"{r.target}:{r.port}" for r in dns.srv_records)
    else:
        srv = f"none ({dns.srv_error})" if dns.srv_error else "none"
    lines.append(f"  {'SRV':<16}{srv}")
    for address in dns.addrs or ():
        if address in report.connection_reports:
            c = report.connection_reports[address]
            state = "ok" if c.checks.all_checks_ok else "checks failed"
            lines.append(f"  {address:<16}{state}, {c.cipher_version}")
        elif address in report.connection_errors:
            lines.append(f"  {address:<16}error: {report.connection_errors[address]}")
    v = report.version
    lines.append(
        f"  {'version':<16}" + (f"{v.name} {v.version}" if not v.error else f"error: {v.error}")
    )
    sr = report.signed_request
    lines.append(
        f"  {'signed request':<16}"
        + ("skipped (needs -c CONFIG)" if sr.skipped else ("ok" if sr.ok else f"{sr.error}"))
        + (f" ({sr.status})" if sr.ok and sr.status else "")
    )
    wb = report.way_back
    lines.append(
        f"  {'way back':<16}"
        + ("skipped (needs -c CONFIG)" if wb.skipped else ("ok" if wb.ok else f"{wb.error}"))
    )
    lines.append(f"  {'FederationOK':<16}{report.federation_ok}")
    lines.append(f"  {'AllOK':<16}{report.all_ok}")
    return "\n".join(lines) + "\n"


# ======================================================================================
# The asynchronous check: fetch the facts, then call the pure decisions above.

log = Logger()

#: Longest we wait for one probe (connect, TLS, request and body), in seconds.
PROBE_TIMEOUT_SECONDS = 15
#: Longest we wait for a TCP connection, in seconds.
CONNECT_TIMEOUT_SECONDS = 10
#: Largest response body we read from a probed server, in bytes.
MAX_PROBE_BODY_BYTES = 512 * 1024
MS_PER_SECOND = 1000
HTTPS_DEFAULT_PORT = 443

#: The signed requests. The first needs authentication on Synapse (``/query/{queryType}``)
#: and on stubserver, so a stripped Authorization header shows as 401. The second has
#: percent-escapes in its *path* (the ``@`` and ``:`` of a user ID) on a path Synapse
#: routes (``/user/devices/{userId}``): a proxy that decodes or re-encodes the URI turns
#: them into ``@`` and ``:`` and the signature, made over the URI as sent, fails.
SIGNED_REQUEST_PATHS = (
    "/_matrix/federation/v1/query/profile?user_id=%40stubserver-check%3A{origin}&field=displayname",
    "/_matrix/federation/v1/user/devices/%40stubserver-check%3A{origin}",
)
KEY_PATH = "/_matrix/key/v2/server"
VERSION_PATH = "/_matrix/federation/v1/version"
WELL_KNOWN_PATH = "/.well-known/matrix/server"

#: OpenSSL's names of common TLS 1.2 suites -> the IANA names Go (and so the tester)
#: prints. TLS 1.3 suites have the same name in both.
_IANA_CIPHER_NAMES = {
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
}
_TLS_VERSION_NAMES = {
    "TLSv1": "TLS 1.0",
    "TLSv1.1": "TLS 1.1",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.3": "TLS 1.3",
}


def go_tls_version_name(openssl_name: str) -> str:
    """Go's ``tls.VersionName`` spelling of an OpenSSL protocol name."""
    return _TLS_VERSION_NAMES.get(openssl_name, openssl_name)


def go_cipher_suite_name(openssl_name: str) -> str:
    """Go's (IANA) name of a cipher suite, from OpenSSL's; unknown names pass through."""
    return _IANA_CIPHER_NAMES.get(openssl_name, openssl_name)


def join_host_port(address: str, port: int) -> str:
    """Go's ``net.JoinHostPort``: IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def address_family(address: str) -> str:
    """``IPv4`` or ``IPv6``."""
    return FAMILY_IPV6 if ipaddress.ip_address(address).version == 6 else FAMILY_IPV4


def summarize_certificate(cert: x509.Certificate) -> CertificateSummary:
    """The tester's summary of a certificate."""

    def common_name(name: x509.Name) -> str:
        values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(values[0].value) if values else ""

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names: tuple[str, ...] = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    fingerprint = base64.b64encode(cert.fingerprint(hashes.SHA256())).decode("ascii")
    return CertificateSummary(
        subject_common_name=common_name(cert.subject),
        issuer_common_name=common_name(cert.issuer),
        sha256_fingerprint=fingerprint.rstrip("="),
        dns_names=dns_names or None,
    )


@dataclass(frozen=True)
class Identity:
    """Who we are when we sign: our server name and signing key."""

    server_name: str
    signing_key: ServerSigningKey

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Our key IDs, as the notary should return them."""
        return (self.signing_key.key_id,)


@dataclass(frozen=True)
class ProbeResult:
    """One HTTPS exchange with one address: the answer and what TLS showed."""

    status: int
    body: bytes
    headers: Headers
    certificates: tuple[CertificateSummary, ...]
    tls_version: str
    cipher_suite: str
    verify_errors: tuple[str, ...]
    name_error: str | None

    @property
    def certificate_errors(self) -> tuple[str, ...]:
        """Why the certificate is not valid for the expected name (empty when it is)."""
        return self.verify_errors + ((self.name_error,) if self.name_error else ())


class ProbeFailed(Exception):
    """A probe got no HTTP answer; ``str()`` says why, for a person."""


@implementer(IOpenSSLClientConnectionCreator)
class _RecordingCreator:
    """Makes the one TLS connection of a probe and keeps it, to read its details later."""

    def __init__(self, context: SSL.Context, tls_server_name: str) -> None:
        self._context = context
        self._sni = None if is_ip_literal(tls_server_name) else tls_server_name.encode("idna")
        self.connection: SSL.Connection | None = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """A client-side connection with our SNI (none for an IP literal)."""
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        connection.set_connect_state()
        self.connection = connection
        return connection


@implementer(IAgentEndpointFactory)
class _FixedEndpointFactory:
    """Every URI connects to the one endpoint given."""

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The fixed endpoint."""
        return self._endpoint


def _verify_error_text(errno: int) -> str:
    lib: Any = SSL._lib  # type: ignore[attr-defined]
    ffi: Any = SSL._ffi  # type: ignore[attr-defined]
    text: bytes = ffi.string(lib.X509_verify_cert_error_string(errno))
    return text.decode("ascii", "replace")


class AddressProber:
    """HTTPS to one given address with a given SNI and Host, recording the TLS details.

    The handshake does not stop at an untrusted certificate: the chain's verification
    errors and the name check are recorded instead, so that the report can show the
    certificate and say what is wrong with it, as the tester does. Nothing learnt over such
    a connection is trusted; it is only reported (and counts as a failed check).
    """

    def __init__(self, reactor: Any, ca_files: Sequence[Path], *, use_system_store: bool = True):
        self._reactor = reactor
        self._trust = SystemAndFileTrustRoot(ca_files, use_system=use_system_store)

    def probe(
        self,
        address: str,
        port: int,
        *,
        tls_server_name: str,
        host_header: str,
        path: str,
    ) -> Deferred[ProbeResult]:
        """GET ``path``; fails with :class:`ProbeFailed` when no answer arrives."""
        d = Deferred.fromCoroutine(self._probe(address, port, tls_server_name, host_header, path))
        d.addTimeout(PROBE_TIMEOUT_SECONDS, self._reactor)
        return d

    async def _probe(
        self, address: str, port: int, tls_server_name: str, host_header: str, path: str
    ) -> ProbeResult:
        verify_errors: list[str] = []

        def on_verify(conn: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
            if not ok:
                text = f"{_verify_error_text(errno)} (certificate {depth} of the chain)"
                if text not in verify_errors:
                    verify_errors.append(text)
            return True  # go on: the errors are reported, never trusted

        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_verify(SSL.VERIFY_PEER, on_verify)
        self._trust._addCACertsToContext(context)
        creator = _RecordingCreator(context, tls_server_name)
        tcp: IStreamClientEndpoint
        if ":" in address:
            tcp = TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
                self._reactor, address, port, timeout=CONNECT_TIMEOUT_SECONDS
            )
        else:
            tcp = TCP4ClientEndpoint(self._reactor, address, port, timeout=CONNECT_TIMEOUT_SECONDS)
        pool = HTTPConnectionPool(self._reactor, persistent=False)  # type: ignore[no-untyped-call]
        pool.retryAutomatically = False
        agent = Agent.usingEndpointFactory(  # type: ignore[no-untyped-call]
            self._reactor, _FixedEndpointFactory(wrapClientTLS(creator, tcp)), pool=pool
        )
        headers = Headers()
        headers.addRawHeader(b"host", host_header.encode("ascii"))
        url = f"http://{host_header}{path}".encode("ascii")
        try:
            response = await agent.request(b"GET", url, headers, None)
            body = await read_body_limited(response, MAX_PROBE_BODY_BYTES)
        except CancelledError:
            raise
        except Exception as e:
            raise ProbeFailed(describe_failure(e)[0]) from None
        conn = creator.connection
        if conn is None:
            raise ProbeFailed("no TLS connection was made")
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        name_error: str | None = None
        try:
            if is_ip_literal(tls_server_name):
                verify_ip_address(conn, tls_server_name)
            else:
                verify_hostname(conn, tls_server_name)
        except VerificationError:
            name_error = f"the certificate is not valid for {tls_server_name}"
        except Exception as e:  # an unparseable certificate
            name_error = f"the certificate's names cannot be checked: {e}"
        return ProbeResult(
            status=response.code,
            body=body,
            headers=response.headers,
            certificates=tuple(summarize_certificate(c) for c in chain),
            tls_version=go_tls_version_name(conn.get_protocol_version_name()),
            cipher_suite=go_cipher_suite_name(conn.get_cipher_name() or ""),
            verify_errors=tuple(verify_errors),
            name_error=name_error,
        )


def _json_or_none(body: bytes) -> Any:
    try:
        return parse_json_bytes(body)
    except BadJson:
        return None


def _raw_m_server(body: bytes) -> object:
    """The ``m.server`` value of a .well-known body, however invalid (None if absent)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document.get("m.server") if isinstance(document, dict) else None


@dataclass
class _Facts:
    """What the check gathered so far (mutable while gathering; frozen into the report)."""

    hints: list[Hint] = field(default_factory=list)
    reports: dict[str, ConnectionReport] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class FederationChecker:
    """Runs ``check`` against one server name (see the module docstring).

    Everything outbound goes through the settings' IP blocklist: the report endpoint makes
    requests for whoever asks and must not become a way into private networks.
    """

    def __init__(
        self,
        reactor: Any,
        settings: FederationSettings,
        identity: Identity | None = None,
        *,
        rng: random.Random | None = None,
        dns: DnsClients | None = None,
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        self._identity = identity
        self._dns = dns if dns is not None else build_dns_clients(reactor, settings.dns_servers)
        self._context = build_federation_client(reactor, settings, rng=rng, dns=self._dns)
        self._prober = AddressProber(reactor, settings.ca_files)

    def check(self, server_name: str) -> Deferred[CheckReport]:
        """The report for ``server_name``; never fails (problems are in the report)."""
        return Deferred.fromCoroutine(self._check(server_name))

    def _now_ms(self) -> int:
        return int(self._reactor.seconds() * MS_PER_SECOND)

    async def _check(self, server_name: str) -> CheckReport:
        try:
            name = parse_server_name(server_name)
        except InvalidServerName as e:
            return invalid_name_report(server_name, str(e))
        facts = _Facts()
        resolution = await self._context.resolver.resolve(server_name)
        by_family: dict[str, FamilyWellKnown] = {}
        if resolution.well_known is not None:
            by_family = await self._well_known_by_family(name.host)
            family_hint = hint_family(by_family)
            if family_hint is not None:
                facts.hints.append(family_hint)
        well_known, wk_invalid = self._well_known_report(resolution, by_family, facts)
        dns_report = await self._dns_report(resolution, facts)
        await self._probe_targets(server_name, resolution, facts)
        version = await self._version(server_name)
        way_back = WayBackReport(skipped=True, ok=False)
        signed = SignedRequestReport(skipped=True, ok=False)
        if self._identity is not None:
            way_back = await self._way_back(server_name, self._identity)
            if way_back.failed:
                facts.hints.append(Hint(STEP_WAY_BACK, way_back.error or "", way_back.hint or ""))
            signed = await self._signed_request(server_name, self._identity)
            if signed.failed:
                facts.hints.append(Hint(STEP_SIGNED_REQUEST, signed.error or "", signed.hint or ""))
        return CheckReport(
            server_name,
            well_known=well_known,
            well_known_invalid=wk_invalid,
            dns=dns_report,
            connection_reports=facts.reports,
            connection_errors=facts.errors,
            version=version,
            signed_request=signed,
            way_back=way_back,
            well_known_by_family=by_family,
            hints=order_hints(facts.hints),
        )

    # -- .well-known ---------------------------------------------------------------------

    def _well_known_report(
        self, resolution: Resolution, by_family: Mapping[str, FamilyWellKnown], facts: _Facts
    ) -> tuple[WellKnownReport, bool]:
        wk = resolution.well_known
        if wk is None:
            return (
                WellKnownReport(
                    result="not consulted: the server name is an IP literal or has a port"
                    " (spec steps 1 and 2)"
                ),
                False,
            )
        expires = int(self._reactor.seconds() + wk.cache_seconds)
        if wk.m_server is not None:
            return WellKnownReport(server=wk.m_server, cache_expires_at=expires), False
        invalid = wk.status == 200
        result = wk.error or ""
        if invalid:
            served = next(
                (
                    a
                    for fam in by_family.values()
                    for a in fam.attempts.values()
                    if a.status == 200 and a.result
                ),
                None,
            )
            bad = served.bad_m_server if served is not None else None
            if isinstance(bad, str):
                result = describe_bad_m_server(bad)
            facts.hints.append(
                Hint(
                    STEP_WELL_KNOWN,
                    f"{wk.url}: {result}",
                    hint_m_server(bad if isinstance(bad, str) else ""),
                )
            )
        return WellKnownReport(result=result, cache_expires_at=expires), invalid

    async def _well_known_by_family(self, host: str) -> dict[str, FamilyWellKnown]:
        try:
            addresses = await self._dns.addresses.resolve_addresses(host)
        except CancelledError:
            raise
        except AddressLookupError as e:
            return {FAMILY_IPV4: FamilyWellKnown(lookup_error=str(e))}
        port = self._settings.well_known_port
        host_header = host if port == HTTPS_DEFAULT_PORT else f"{host}:{port}"
        attempts = await gatherResults(
            [
                Deferred.fromCoroutine(self._well_known_at(a, port, host, host_header))
                for a in addresses
            ]
        )
        families: dict[str, dict[str, WellKnownAttempt]] = {}
        for address, attempt in zip(addresses, attempts, strict=True):
            families.setdefault(address_family(address), {})[address] = attempt
        return {
            family: FamilyWellKnown(attempts=families.get(family, {}))
            for family in (FAMILY_IPV4, FAMILY_IPV6)
        }

    async def _well_known_at(
        self, address: str, port: int, host: str, host_header: str
    ) -> WellKnownAttempt:
        if self._context.blocklist.is_blocked(address):
            return WellKnownAttempt(result=str(BlockedAddress(address, host)))
        try:
            probe = await self._prober.probe(
                address, port, tls_server_name=host, host_header=host_header, path=WELL_KNOWN_PATH
            )
        except ProbeFailed as e:
            return WellKnownAttempt(result=str(e))
        if self._settings.verify_certificates and probe.certificate_errors:
            return WellKnownAttempt(
                result="TLS: " + "; ".join(probe.certificate_errors), status=probe.status
            )
        if probe.status != 200:
            location = probe.headers.getRawHeaders(b"location")
            where = f" to {location[0].decode('latin-1')}" if location else ""
            return WellKnownAttempt(result=f"HTTP {probe.status}{where}", status=probe.status)
        try:
            return WellKnownAttempt(server=parse_well_known_body(probe.body), status=200)
        except ValueError as e:
            raw = _raw_m_server(probe.body)
            return WellKnownAttempt(
                result=describe_bad_m_server(raw) if raw is not None else str(e),
                status=200,
                bad_m_server=raw,
            )

    # -- DNS -----------------------------------------------------------------------------

    async def _canonical_name(self, host: str) -> str:
        """The canonical name of ``host`` (FQDN with its dot, as Go's LookupCNAME)."""
        fqdn = host.rstrip(".") + "."
        if is_ip_literal(host):
            return ""
        try:
            answers, _auth, _add = await self._dns.srv.lookupCanonicalName(host)
        except CancelledError:
            raise
        except Exception:
            return fqdn
        for rr in answers:
            if (
                rr.type == dns.CNAME
                and str(rr.name).rstrip(".").lower() == host.rstrip(".").lower()
            ):
                return str(rr.payload.name).rstrip(".") + "."
        return fqdn

    async def _dns_report(self, resolution: Resolution, facts: _Facts) -> DNSReport:
        found = next((lk for lk in resolution.srv_lookups if lk.found), None)
        srv_skipped = not resolution.srv_lookups
        srv_error = None
        if not srv_skipped and found is None:
            srv_error = "; ".join(
                f"{lk.name}: {lk.error or 'no SRV record'}" for lk in resolution.srv_lookups
            )
        srv_hosts = {
            t.host for t in resolution.targets if t.source in (SOURCE_SRV, SOURCE_LEGACY_SRV)
        }
        hosts: dict[str, HostResult] = {}
        for lookup in resolution.address_lookups:
            cname = await self._canonical_name(lookup.host)
            key = lookup.host if is_ip_literal(lookup.host) else lookup.host.rstrip(".") + "."
            error = lookup.error
            if lookup.host in srv_hosts and cname and cname.lower() != key.lower():
                record = found.name if found is not None else "SRV"
                error = (
                    f"SRV record target {key} is a CNAME record, which is forbidden"
                    " (as per RFC2782)"
                )
                facts.hints.append(hint_srv_cname(record, key, cname))
            hosts[key] = HostResult(
                cname=cname, addrs=lookup.addresses + lookup.blocked, error=error
            )
            if lookup.error is not None:
                facts.hints.append(
                    Hint(
                        STEP_DNS,
                        lookup.error,
                        f"Publish A and/or AAAA records for {lookup.host}.",
                    )
                )
        addrs: list[str] = []
        for target in resolution.targets:
            found_lookup = next(
                (lk for lk in resolution.address_lookups if lk.host == target.host), None
            )
            for address in (
                (found_lookup.addresses + found_lookup.blocked)
                if found_lookup
                else target.addresses
            ):
                joined = join_host_port(address, target.port)
                if joined not in addrs:
                    addrs.append(joined)
        if resolution.error is not None and not addrs:
            facts.hints.append(
                Hint(
                    STEP_DNS,
                    resolution.error,
                    "Other servers cannot find an address for the server: publish its A/AAAA"
                    " (or SRV) records, or delegate with /.well-known/matrix/server.",
                )
            )
        return DNSReport(
            srv_skipped=srv_skipped,
            srv_cname=(found.name.rstrip(".") + ".") if found is not None else "",
            srv_records=(
                tuple(
                    SRVRecord(r.target.rstrip(".") + ".", r.port, r.priority, r.weight)
                    for r in found.records
                )
                if found is not None
                else None
            ),
            srv_error=srv_error,
            hosts=hosts,
            addrs=tuple(addrs) or None,
        )

    # -- connections ---------------------------------------------------------------------

    async def _probe_targets(self, server_name: str, resolution: Resolution, facts: _Facts) -> None:
        jobs: list[Deferred[None]] = []
        seen: set[str] = set()
        srv_name = next((lk.name for lk in resolution.srv_lookups if lk.found), None)
        for target in resolution.targets:
            lookup = next((lk for lk in resolution.address_lookups if lk.host == target.host), None)
            for address in lookup.blocked if lookup else ():
                joined = join_host_port(address, target.port)
                facts.errors[joined] = str(BlockedAddress(address, target.host))
            for address in target.addresses:
                joined = join_host_port(address, target.port)
                if joined in seen:
                    continue
                seen.add(joined)
                from_srv = srv_name if target.source in (SOURCE_SRV, SOURCE_LEGACY_SRV) else None
                jobs.append(
                    Deferred.fromCoroutine(
                        self._probe_one(
                            server_name, resolution, target, address, from_srv=from_srv, facts=facts
                        )
                    )
                )
        await gatherResults(jobs)
        for joined, error in facts.errors.items():
            target_host = next(
                (t.host for t in resolution.targets if joined.endswith(f":{t.port}")), None
            )
            from_srv = next(
                (
                    srv_name
                    for t in resolution.targets
                    if t.host == target_host and t.source in (SOURCE_SRV, SOURCE_LEGACY_SRV)
                ),
                None,
            )
            facts.hints.append(
                hint_unreachable(joined, error, from_srv=from_srv, server_name=server_name)
            )

    async def _probe_one(
        self,
        server_name: str,
        resolution: Resolution,
        target: Target,
        address: str,
        *,
        from_srv: str | None,
        facts: _Facts,
    ) -> None:
        joined = join_host_port(address, target.port)
        try:
            probe = await self._prober.probe(
                address,
                target.port,
                tls_server_name=target.tls_server_name,
                host_header=target.host_header,
                path=KEY_PATH,
            )
        except ProbeFailed as e:
            facts.errors[joined] = str(e)
            return
        keys = _json_or_none(probe.body)
        if probe.status != 200 or not isinstance(keys, dict):
            facts.errors[joined] = f"GET {KEY_PATH} answered {probe.status}" + (
                "" if isinstance(keys, dict) else " without a JSON object"
            )
            return
        cert_errors = probe.certificate_errors if self._settings.verify_certificates else ()
        checks, verify_keys = check_keys(
            server_name, self._now_ms(), keys, valid_certificates=not cert_errors
        )
        facts.reports[joined] = ConnectionReport(
            certificates=probe.certificates,
            cipher_version=probe.tls_version,
            cipher_suite=probe.cipher_suite,
            checks=checks,
            errors=cert_errors,
            ed25519_verify_keys=verify_keys,
            keys=keys,
        )
        if cert_errors:
            leaf = probe.certificates[0] if probe.certificates else None
            facts.hints.append(
                Hint(
                    STEP_CERTIFICATE,
                    f"{joined}: " + "; ".join(cert_errors),
                    hint_certificate(
                        target.tls_server_name,
                        leaf.dns_names if leaf else None,
                        server_name=server_name,
                        delegated_name=resolution.delegated_server_name,
                        srv_target=target.host if from_srv else None,
                        verify_error="; ".join(probe.verify_errors) or None,
                    ),
                )
            )
        key_problem = not (
            checks.matching_server_name
            and checks.future_valid_until_ts
            and checks.has_ed25519_key
            and checks.all_ed25519_checks_ok
        )
        if key_problem:
            facts.hints.append(hint_keys(joined, checks, server_name, keys.get("server_name")))

    # -- through the full resolution -------------------------------------------------------

    async def _federation_request(
        self,
        server_name: str,
        method: bytes,
        path: str,
        *,
        headers: Headers | None = None,
        content: Any = None,
    ) -> tuple[int, Any]:
        """Send through the federation agent; ``(status, parsed JSON or None)``."""
        uri = f"matrix-federation://{server_name}{path}".encode("ascii")
        producer = None
        headers = Headers() if headers is None else headers
        if content is not None:
            producer = FileBodyProducer(io.BytesIO(encode_json(content)))  # type: ignore[no-untyped-call]
            headers.addRawHeader(b"content-type", b"application/json")
        d = self._context.agent.request(method, uri, headers, producer)
        d.addTimeout(PROBE_TIMEOUT_SECONDS, self._reactor)
        response = await d
        body = await read_body_limited(response, MAX_PROBE_BODY_BYTES)
        return response.code, _json_or_none(body)

    async def _version(self, server_name: str) -> VersionReport:
        try:
            status, body = await self._federation_request(server_name, b"GET", VERSION_PATH)
        except CancelledError:
            raise
        except Exception as e:
            return VersionReport(error=_describe(e))
        server = body.get("server") if isinstance(body, dict) else None
        if status != 200 or not isinstance(server, dict):
            return VersionReport(error=f"GET {VERSION_PATH} answered {status}")
        return VersionReport(
            name=str(server.get("name", "")), version=str(server.get("version", ""))
        )

    async def _signed_request(self, server_name: str, identity: Identity) -> SignedRequestReport:
        verdict = SignedRequestReport(skipped=True, ok=False)
        for template in SIGNED_REQUEST_PATHS:
            path = template.format(origin=identity.server_name)
            headers = Headers()
            headers.addRawHeader(
                b"authorization",
                sign_request(
                    "GET",
                    path,
                    origin=identity.server_name,
                    destination=server_name,
                    key=identity.signing_key,
                ),
            )
            try:
                status, body = await self._federation_request(
                    server_name, b"GET", path, headers=headers
                )
            except CancelledError:
                raise
            except Exception as e:
                return SignedRequestReport(
                    skipped=False,
                    ok=False,
                    error=f"no answer: {_describe(e)}",
                    hint=HINT_SIGNED_REQUEST_UNREACHABLE,
                )
            verdict = judge_signed_response(status, body)
            if not verdict.ok:
                return SignedRequestReport(
                    skipped=False,
                    ok=False,
                    status=verdict.status,
                    error=f"GET {path}: {verdict.error}",
                    hint=verdict.hint,
                )
        return verdict

    async def _way_back(self, server_name: str, identity: Identity) -> WayBackReport:
        try:
            status, body = await self._federation_request(
                server_name,
                b"POST",
                NOTARY_QUERY_PATH,
                content=notary_query(identity, self._now_ms()),
            )
        except CancelledError:
            raise
        except Exception as e:
            return WayBackReport(
                skipped=False,
                ok=False,
                error=f"no answer from the notary: {_describe(e)}",
                hint=HINT_SIGNED_REQUEST_UNREACHABLE,
            )
        return judge_way_back(server_name, identity.server_name, identity.key_ids, status, body)


def _describe(e: BaseException) -> str:
    if isinstance(e, ResolutionFailed):
        return str(e.resolution.error)
    return describe_failure(e)[0]
