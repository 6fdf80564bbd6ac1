"""The suite's three outputs: ``--json``, the table for people, and JUnit XML (all pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any, Final

from stubserver.conformance.runner import (
    EXPECTED_FAILURE,
    FAILED,
    PASSED,
    RESULTS,
    SKIPPED,
    UNEXPECTED_PASS,
    TestResult,
)

#: Characters of a failure or skip reason the table shows (the JSON has it whole).
TABLE_REASON_CHARS: Final = 160
_MARKS: Final = {
    PASSED: "ok",
    FAILED: "FAIL",
    SKIPPED: "skip",
    EXPECTED_FAILURE: "xfail",
    UNEXPECTED_PASS: "XPASS",
}
#: The summary's words for each result.
_SUMMARY: Final = {
    PASSED: "passed",
    FAILED: "failed",
    SKIPPED: "skipped",
    EXPECTED_FAILURE: "expected failures",
    UNEXPECTED_PASS: "unexpected passes",
}


def counts(results: Sequence[TestResult]) -> dict[str, int]:
    """``{"passed": N, "failed": N, "skipped": N, "expected_failure": N,
    "unexpected_pass": N}``."""
    return {k: sum(1 for r in results if r.result == k) for k in RESULTS}


def to_json(homeserver: str, results: Sequence[TestResult]) -> dict[str, Any]:
    """The ``--json`` document (DESIGN.md): the tests, and a count of each result."""
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
    lines.append("")
    lines.append(summary_line(results, seconds))
    return "\n".join(lines) + "\n"


def summary_line(results: Sequence[TestResult], seconds: float) -> str:
    """``N passed, N failed, N skipped[, N expected failures, N unexpected passes] of N in
    S s`` (the last two only when there are any)."""
    n = counts(results)
    parts = [f"{n[k]} {_SUMMARY[k]}" for k in RESULTS if k in (PASSED, FAILED, SKIPPED) or n[k]]
    return f"{', '.join(parts)} of {len(results)} in {seconds:.1f} s"


def to_junit(homeserver: str, results: Sequence[TestResult], seconds: float) -> bytes:
    """JUnit XML: one ``testsuite`` (the homeserver), one ``testcase`` per test, with
    ``failure`` (unexpected failures and passes) or ``skipped`` (skips and expected
    failures) children carrying the reason."""
    n = counts(results)
    suite = ET.Element(
        "testsuite",
        {
            "name": f"stubserver conformance {homeserver}",
            "tests": str(len(results)),
            "failures": str(n[FAILED] + n[UNEXPECTED_PASS]),
            "errors": "0",
            "skipped": str(n[SKIPPED] + n[EXPECTED_FAILURE]),
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
        if r.result in (FAILED, UNEXPECTED_PASS):
            failure = ET.SubElement(case, "failure", {"message": _one_line(r.reason or "", 500)})
            failure.text = r.reason
        elif r.result in (SKIPPED, EXPECTED_FAILURE):
            label = "expected failure: " if r.result == EXPECTED_FAILURE else ""
            ET.SubElement(case, "skipped", {"message": label + (r.reason or "")})
    root = ET.Element("testsuites")
    root.append(suite)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document
