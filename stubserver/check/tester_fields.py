"""The report's fields that the matrix federation tester has (``/api/report``,
matrix-org/matrix-federation-tester ``ServerReport``): ``WellKnownResult``, ``DNSResult``,
``ConnectionReports`` and ``Version``, each a frozen record whose ``to_json`` keeps the
tester's names, shapes, field order and Go zero values (``null`` for a nil slice or error,
``omitempty`` where the tester has it).

:mod:`~stubserver.check.report` assembles them with our own fields into the whole report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _error_json(message: str | None) -> dict[str, str] | None:
    """A Go ``error`` after the tester's ``asReportError``: ``{"Message": ...}`` or null."""
    return None if message is None else {"Message": message}


def join_host_port(address: str, port: int) -> str:
    """Go's ``net.JoinHostPort``: IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


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
