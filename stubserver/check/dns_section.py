"""The ``DNSResult`` section of the ``check`` report: SRV answers, the hosts looked up with
their canonical names and addresses, and every ``ip:port`` to try, as the tester shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.names import dns

from stubserver.check.hints import hint_srv_cname
from stubserver.check.report import STEP_DNS, CheckWarning, Hint
from stubserver.check.tester_fields import DNSReport, HostResult, SRVRecord, join_host_port
from stubserver.check.warning_rules import srv_target_cname
from stubserver.discovery.resolution import SOURCE_LEGACY_SRV, SOURCE_SRV, Resolution
from stubserver.tls.client import is_ip_literal


async def canonical_name(srv: Any, host: str) -> str:
    """The canonical name of ``host`` (FQDN with its dot, as Go's LookupCNAME)."""
    fqdn = host.rstrip(".") + "."
    if is_ip_literal(host):
        return ""
    try:
        answers, _auth, _add = await srv.lookupCanonicalName(host)
    except CancelledError:
        raise
    except Exception:
        return fqdn
    for rr in answers:
        if rr.type == dns.CNAME and str(rr.name).rstrip(".").lower() == host.rstrip(".").lower():
            return str(rr.payload.name).rstrip(".") + "."
    return fqdn


async def dns_report(
    srv: Any,
    resolution: Resolution,
    hints: list[Hint],
    go_on: Callable[[], None],
    *,
    warnings: list[CheckWarning] | None = None,
) -> DNSReport:
    """``DNSResult`` from the resolution, with the canonical name of every host looked up
    (asked of ``srv``); hints go to ``hints``; ``go_on`` raises when the check was
    cancelled."""
    found = next((lk for lk in resolution.srv_lookups if lk.found), None)
    srv_skipped = not resolution.srv_lookups
    srv_error = None
    if not srv_skipped and found is None:
        srv_error = "; ".join(
            f"{lk.name}: {lk.error or 'no SRV record'}" for lk in resolution.srv_lookups
        )
    srv_hosts = {t.host for t in resolution.targets if t.source in (SOURCE_SRV, SOURCE_LEGACY_SRV)}
    hosts: dict[str, HostResult] = {}
    for lookup in resolution.address_lookups:
        cname = await canonical_name(srv, lookup.host)
        go_on()
        key = lookup.host if is_ip_literal(lookup.host) else lookup.host.rstrip(".") + "."
        error = lookup.error
        if lookup.host in srv_hosts and cname and cname.lower() != key.lower():
            record = found.name if found is not None else "SRV"
            error = (
                f"SRV record target {key} is a CNAME record, which is forbidden (as per RFC2782)"
            )
            hints.append(hint_srv_cname(record, key, cname))
            if warnings is not None:
                warnings.append(srv_target_cname(record, key, cname))
        hosts[key] = HostResult(cname=cname, addrs=lookup.addresses + lookup.blocked, error=error)
        if lookup.error is not None:
            hints.append(
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
            (found_lookup.addresses + found_lookup.blocked) if found_lookup else target.addresses
        ):
            joined = join_host_port(address, target.port)
            if joined not in addrs:
                addrs.append(joined)
    if resolution.error is not None and not addrs:
        hints.append(
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
