"""The ``stubserver check`` report as TAP version 13 (``--format tap``), for CI: one named
test per check, ``not ok`` with a YAML diagnostic block for each failure."""

from __future__ import annotations

import json

from stubserver.check.report import CheckReport


def _checks(report: CheckReport) -> list[tuple[str, bool, dict[str, str]]]:
    """``(name, ok, diagnostics)`` for every check of the report, in step order."""
    out: list[tuple[str, bool, dict[str, str]]] = []
    if report.error:
        out.append(("server name", False, {"message": report.error}))
    for address in report.dns.addrs or ():
        if address in report.connection_reports:
            c = report.connection_reports[address]
            diag = {"message": "; ".join(c.errors) or "key checks failed"}
            out.append((f"connection {address}", c.checks.all_checks_ok, diag))
        elif address in report.connection_errors:
            out.append(
                (f"connection {address}", False, {"message": report.connection_errors[address]})
            )
    if not report.connection_reports and not report.connection_errors and not report.error:
        out.append(("connection", False, {"message": "no address to try"}))
    v = report.version
    out.append(("version", not v.error, {"message": v.error}))
    if not report.signed_request.skipped:
        sr = report.signed_request
        out.append(("signed request", sr.ok, {"message": sr.error or "", "hint": sr.hint or ""}))
    if not report.way_back.skipped:
        wb = report.way_back
        out.append(("way back", wb.ok, {"message": wb.error or "", "hint": wb.hint or ""}))
    if report.client is not None:
        c_wk = report.client.well_known
        out.append(
            (
                "client .well-known",
                c_wk.ok,
                {"message": c_wk.error or "", "hint": c_wk.hint or ""},
            )
        )
        c_v = report.client.versions
        out.append(
            (
                "client versions",
                c_v is not None and c_v.ok,
                {
                    "message": (c_v.error if c_v is not None else "not reached") or "",
                    "hint": (c_v.hint if c_v is not None else "") or "",
                },
            )
        )
    out.append(("FederationOK", report.federation_ok, {"message": "see the failures above"}))
    return out


def render_tap(report: CheckReport) -> str:
    """TAP version 13; warnings are ``# warning`` comments (they never fail a test)."""
    checks = _checks(report)
    lines = ["TAP version 13", f"1..{len(checks)}"]
    for number, (name, ok, diag) in enumerate(checks, start=1):
        lines.append(f"{'ok' if ok else 'not ok'} {number} - {name}")
        if not ok:
            lines.append("  ---")
            for key, value in diag.items():
                if value:
                    # A JSON string is a valid YAML scalar: quotes and newlines stay safe.
                    lines.append(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
            lines.append("  ...")
    for w in report.warnings:
        lines.append(f"# warning {w.code}: {w.message}")
    return "\n".join(lines) + "\n"
