"""The suite's three outputs: ``--json``, the table for people, and JUnit XML (all pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any, Final

from stubserver.conformance.runner import FAILED, PASSED, SKIPPED, TestResult

#: Characters of a failure or skip reason the table shows (the JSON has it whole).
TABLE_REASON_CHARS: Final = 160
_MARKS: Final = {PASSED: "ok", FAILED: "FAIL", SKIPPED: "skip"}


def counts(results: Sequence[TestResult]) -> dict[str, int]:
    """``{"passed": N, "failed": N, "skipped": N}``."""
    return {k: sum(1 for r in results if r.result == k) for k in (PASSED, FAILED, SKIPPED)}


def to_json(homeserver: str, results: Sequence[TestResult]) -> dict[str, Any]:
    """The ``--json`` document, exactly the shape issue 14 gives."""
    return {
        "homeserver": homeserver,
        "tests": [
            {
                "id": r.id,
                "spec": r.spec,
                "room_version": r.room_version,
                "result": r.result,
                "reason": r.reason,
                "seconds": r.seconds,
            }
            for r in results
        ],
        **counts(results),
    }


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_table(homeserver: str, results: Sequence[TestResult], seconds: float) -> str:
    """The human report: one aligned row per test (result, version, id, spec section,
    time), failures' and skips' reasons under their row, and a summary line."""
    rows = [
        (
            _MARKS[r.result],
            f"v{r.room_version}" if r.room_version else "-",
            r.id,
            r.spec,
            f"{r.seconds:.1f}s",
        )
        for r in results
    ]
    widths = [
        max([len(h)] + [len(row[i]) for row in rows])
        for i, h in enumerate(("result", "room", "test", "spec section", "time"))
    ]
    header = ("result", "room", "test", "spec section", "time")
    lines = [f"Federation conformance of {homeserver}", ""]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row, result in zip(rows, results, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if result.reason and result.result != PASSED:
            lines.append(f"      {_one_line(result.reason, TABLE_REASON_CHARS)}")
    n = counts(results)
    lines.append("")
    lines.append(
        f"{n[PASSED]} passed, {n[FAILED]} failed, {n[SKIPPED]} skipped "
        f"of {len(results)} in {seconds:.1f} s"
    )
    return "\n".join(lines) + "\n"


def to_junit(homeserver: str, results: Sequence[TestResult], seconds: float) -> bytes:
    """JUnit XML: one ``testsuite`` (the homeserver), one ``testcase`` per test, with
    ``failure`` or ``skipped`` children carrying the reason."""
    n = counts(results)
    suite = ET.Element(
        "testsuite",
        {
            "name": f"stubserver conformance {homeserver}",
            "tests": str(len(results)),
            "failures": str(n[FAILED]),
            "errors": "0",
            "skipped": str(n[SKIPPED]),
            "time": f"{seconds:.3f}",
        },
    )
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            {
                "classname": f"conformance.v{r.room_version}" if r.room_version else "conformance",
                "name": r.id,
                "time": f"{r.seconds:.3f}",
            },
        )
        ET.SubElement(case, "properties").append(
            ET.Element("property", {"name": "spec", "value": r.spec})
        )
        if r.result == FAILED:
            failure = ET.SubElement(case, "failure", {"message": _one_line(r.reason or "", 500)})
            failure.text = r.reason
        elif r.result == SKIPPED:
            ET.SubElement(case, "skipped", {"message": r.reason or ""})
    root = ET.Element("testsuites")
    root.append(suite)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document
