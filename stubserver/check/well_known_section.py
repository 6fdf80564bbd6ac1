"""The ``.well-known`` sections of the ``check`` report: ``WellKnownResult`` from the
resolution, and ``WellKnownByFamily``, the ``.well-known`` as every address of the server
name serves it (a server whose IPv6 listener serves another answer than its IPv4 one
federates with some servers only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from twisted.internet.defer import CancelledError, Deferred, gatherResults

from stubserver.check.hints import describe_bad_m_server, hint_m_server
from stubserver.check.prober import ProbeFailed, Prober
from stubserver.check.report import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    STEP_WELL_KNOWN,
    FamilyWellKnown,
    Hint,
    WellKnownAttempt,
    address_family,
)
from stubserver.check.tester_fields import WellKnownReport
from stubserver.discovery.dns import AddressLookupError, AddressResolver
from stubserver.discovery.resolution import Resolution
from stubserver.discovery.well_known import parse_well_known_body

#: The ``.well-known`` path, and the port whose Host header carries no port.
WELL_KNOWN_PATH = "/.well-known/matrix/server"
HTTPS_DEFAULT_PORT = 443


def well_known_report(
    resolution: Resolution,
    by_family: Mapping[str, FamilyWellKnown],
    hints: list[Hint],
    now_seconds: float,
) -> tuple[WellKnownReport, bool]:
    """``WellKnownResult`` from the resolution's ``.well-known`` step, and whether a
    ``.well-known`` was served but is unusable; its hint goes to ``hints``."""
    wk = resolution.well_known
    if wk is None:
        return (
            WellKnownReport(
                result="not consulted: the server name is an IP literal or has a port"
                " (spec steps 1 and 2)"
            ),
            False,
        )
    expires = int(now_seconds + wk.cache_seconds)
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
        hints.append(
            Hint(
                STEP_WELL_KNOWN,
                f"{wk.url}: {result}",
                hint_m_server(bad if isinstance(bad, str) else ""),
            )
        )
    return WellKnownReport(result=result, cache_expires_at=expires), invalid


async def well_known_by_family(
    addresses: AddressResolver,
    prober: Prober,
    host: str,
    port: int,
    *,
    verify_certificates: bool,
) -> dict[str, FamilyWellKnown]:
    """``WellKnownByFamily``: ``/.well-known/matrix/server`` fetched from every address of
    ``host``, grouped by address family."""
    try:
        found = await addresses.resolve_addresses(host)
    except CancelledError:
        raise
    except AddressLookupError as e:
        return {FAMILY_IPV4: FamilyWellKnown(lookup_error=str(e))}
    host_header = host if port == HTTPS_DEFAULT_PORT else f"{host}:{port}"
    attempts = await gatherResults(
        [
            Deferred.fromCoroutine(
                _well_known_at(
                    prober, a, port, host, host_header, verify_certificates=verify_certificates
                )
            )
            for a in found
        ]
    )
    families: dict[str, dict[str, WellKnownAttempt]] = {}
    for address, attempt in zip(found, attempts, strict=True):
        families.setdefault(address_family(address), {})[address] = attempt
    return {
        family: FamilyWellKnown(attempts=families.get(family, {}))
        for family in (FAMILY_IPV4, FAMILY_IPV6)
    }


async def _well_known_at(
    prober: Prober,
    address: str,
    port: int,
    host: str,
    host_header: str,
    *,
    verify_certificates: bool,
) -> WellKnownAttempt:
    # A blocked address is refused by the prober itself, without a connection.
    try:
        probe = await prober.probe(
            address, port, tls_server_name=host, host_header=host_header, path=WELL_KNOWN_PATH
        )
    except ProbeFailed as e:
        return WellKnownAttempt(result=str(e))
    if verify_certificates and probe.certificate_errors:
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
        raw = raw_m_server(probe.body)
        return WellKnownAttempt(
            result=describe_bad_m_server(raw) if raw is not None else str(e),
            status=200,
            bad_m_server=raw,
        )


def raw_m_server(body: bytes) -> object:
    """The ``m.server`` value of a .well-known body, however invalid (None if absent)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document.get("m.server") if isinstance(document, dict) else None
