"""The ``stubserver check`` report as text, for people: the verdict, each problem with its fix
(failing step first), then the facts.
"""

from __future__ import annotations

from stubserver.check.report import CheckReport

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
    for warning in report.warnings:
        lines.append("")
        lines.append(f"[warning {warning.code}] {warning.message}")
        lines.append(f"  fix: {warning.hint}")
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
    if report.client is not None:
        cl = report.client
        lines.append(
            f"  {'client':<16}"
            + (
                "ok"
                if cl.ok
                else (cl.well_known.error or (cl.versions and cl.versions.error) or "")
            )
        )
    lines.append(f"  {'FederationOK':<16}{report.federation_ok}")
    lines.append(f"  {'AllOK':<16}{report.all_ok}")
    return "\n".join(lines) + "\n"
