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
signed request and the way back, the hints, the text rendering); :mod:`stubserver._checker`
style I/O lives in :class:`FederationChecker` at the end of the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stubserver._signing import (
    ED25519,
    InvalidBase64,
    SignatureError,
    decode_base64,
    decode_verify_key,
    verify_signed_json,
)

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


def judge_way_back(
    server_name: str, our_name: str, our_key_ids: Sequence[str], status: int, body: object
) -> WayBackReport:
    """Read the notary's answer to ``POST /_matrix/key/v2/query`` for our keys.

    Success is a 200 whose ``server_keys`` holds a response for ``our_name`` listing one of
    our key IDs: the server resolved and reached us to get it.
    """
    hint = hint_way_back(server_name, our_name)
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
