"""The report carries every field of the matrix federation tester's ``/api/report`` JSON
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

- ``Warnings``: ``{"Code", "Message", "Hint"}`` for what does not stop federation today
  but is wrong or fragile (an unusable ``.well-known``, a different one on some addresses,
  a non-JSON ``Content-Type``, a key valid too long, old TLS, an SRV target that is a
  CNAME, a connection that needed a retry, different versions across connections). They
  never change ``FederationOK``.
- ``Client`` (with ``--client``): the client-side discovery a user's app goes through.

``FederationOK`` keeps the meaning it has in both federation testers ("the run didn't
encounter anything that could hamper federation"): false on a report ``Error``, on any
connection error, on any connection whose checks fail, and when no address could be tried
at all. A ``.well-known`` that answers but is unusable does not make it false (the servers
reading it fall back to the server name, spec step 3.x; the Go tester only records it in
``WellKnownResult.result`` and the Rust tester asserts ``federation_ok`` in this case):
it is a warning. ``AllOK`` adds our own checks (the signed request, the way back, and the
client checks when asked).

This module holds the report model: the records of our own fields, the whole report, its
JSON, and the two verdicts computed from it (``FederationOK``, ``AllOK``); the records of
the tester's fields are in :mod:`~stubserver.check.tester_fields`. The rest of ``check/``:
:mod:`~stubserver.check.verdicts` judges what a server answered,
:mod:`~stubserver.check.hints` says what to do about it, :mod:`~stubserver.check.render`
prints the report for people, :mod:`~stubserver.check.prober` probes one address, and
:mod:`~stubserver.check.checker` gathers the facts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stubserver.check.tester_fields import (
    ConnectionReport,
    DNSReport,
    VersionReport,
    WellKnownReport,
)

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


def address_family(address: str) -> str:
    """``IPv4`` or ``IPv6``."""
    return FAMILY_IPV6 if ipaddress.ip_address(address).version == 6 else FAMILY_IPV4


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
class CheckWarning:
    """Something wrong or fragile that does not stop federation: a stable ``code`` for
    machines, the ``message`` saying what was seen, and the ``hint`` saying what to do."""

    code: str
    message: str
    hint: str

    def to_json(self) -> dict[str, str]:
        """``{"Code", "Message", "Hint"}``."""
        return {"Code": self.code, "Message": self.message, "Hint": self.hint}


@dataclass(frozen=True)
class ClientStep:
    """One client-side check: ``ok``, what was seen (``error`` when not ok) and the fix."""

    ok: bool
    status: int | None = None
    error: str | None = None
    hint: str | None = None
    cors: bool = False

    def to_json(self) -> dict[str, Any]:
        """``{"OK", "Status", "CORS", "Error", "Hint"}``."""
        return {
            "OK": self.ok,
            "Status": self.status,
            "CORS": self.cors,
            "Error": self.error,
            "Hint": self.hint,
        }


@dataclass(frozen=True)
class ClientReport:
    """``Client``: ``/.well-known/matrix/client`` and ``{base_url}/_matrix/client/versions``."""

    well_known: ClientStep
    base_url: str | None = None
    versions: ClientStep | None = None
    #: The spec versions the client API lists (``versions``), when it answered.
    spec_versions: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Both steps passed."""
        return self.well_known.ok and self.versions is not None and self.versions.ok

    def to_json(self) -> dict[str, Any]:
        """``{"OK", "WellKnown", "BaseURL", "Versions", "SpecVersions"}``."""
        return {
            "OK": self.ok,
            "WellKnown": self.well_known.to_json(),
            "BaseURL": self.base_url,
            "Versions": None if self.versions is None else self.versions.to_json(),
            "SpecVersions": list(self.spec_versions),
        }


@dataclass(frozen=True)
class CheckReport:
    """The whole report: the tester's fields, ours, and the verdicts computed from them."""

    server_name: str
    error: str = ""
    well_known: WellKnownReport = field(default_factory=WellKnownReport)
    #: True when the .well-known answered 200 but its content is unusable (bad JSON, a bad
    #: m.server): the admin meant to delegate and it does not work (a warning only).
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
    warnings: tuple[CheckWarning, ...] = ()
    #: The client-side checks; None when not asked for (``--client``).
    client: ClientReport | None = None

    @property
    def federation_ok(self) -> bool:
        """The tester's ``FederationOK``, computed the spec-correct way (module docstring)."""
        return federation_ok(self)

    @property
    def all_ok(self) -> bool:
        """``FederationOK``, neither the signed request nor the way back failed, and the
        client checks (when asked for) passed."""
        return all_ok(self.federation_ok, self.signed_request, self.way_back) and (
            self.client is None or self.client.ok
        )

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
        out["Warnings"] = [w.to_json() for w in self.warnings]
        if self.client is not None:
            out["Client"] = self.client.to_json()
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
    """The testers' ``FederationOK``: nothing was found that could hamper federation.

    An unusable ``.well-known`` and one that differs between addresses are warnings only:
    the verdict is on the addresses the resolution reached."""
    if report.error:
        return False
    if report.connection_errors or not report.connection_reports:
        return False
    return all(c.checks.all_checks_ok for c in report.connection_reports.values())


def all_ok(fed_ok: bool, signed: SignedRequestReport, way_back: WayBackReport) -> bool:
    """``AllOK``: federation is OK and neither of our own end-to-end checks failed."""
    return fed_ok and not signed.failed and not way_back.failed
