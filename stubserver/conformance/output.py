"""The suite's three outputs: ``--json``, the table for people, and JUnit XML (all pure)."""

from __future__ import annotations

import re
import textwrap
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

#: Width a reason is wrapped to, and its indent under the test's row (never cut).
REASON_WIDTH: Final = 100
REASON_INDENT: Final = "      "
#: The spec the suite's sections are in.
SPEC_URL: Final = "https://spec.matrix.org/v1.19/server-server-api/"
_ENDPOINT_RE: Final = re.compile(r"^(GET|PUT|POST|DELETE) (/\S+)$")
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


def spec_url(section: str) -> str:
    """The link to a test's spec section (pure): the anchor of its last part, as the
    spec's pages make them (an endpoint ``GET /_matrix/x/v1/y/{yId}``: ``get_matrixxv1yyid``,
    all in lower case; a
    heading: lower case, words joined by ``-``)."""
    title = section.rsplit(": ", 1)[-1]
    endpoint = _ENDPOINT_RE.match(title)
    if endpoint:
        anchor = (endpoint[1] + re.sub(r"[/{}]", "", endpoint[2])).lower()
    else:
        anchor = "-".join(re.sub(r"[^a-z0-9 _-]", "", title.lower()).split())
    return f"{SPEC_URL}#{anchor}"


def wrapped(text: str, indent: str = REASON_INDENT, width: int = REASON_WIDTH) -> list[str]:
    """``text`` wrapped under a row, each of its lines kept, nothing cut (pure)."""
    lines = []
    for line in text.splitlines() or [""]:
        lines += textwrap.wrap(
            line,
            width,
            initial_indent=indent,
            subsequent_indent=indent + "  ",
            break_long_words=False,
            break_on_hyphens=False,
        ) or [indent.rstrip()]
    return lines


def _details(result: TestResult) -> list[str]:
    """What goes under a test's row: its reason wrapped (for a pass, its note: which way
    the spec allows it took), and the link to its spec section when it did not pass."""
    if result.result == PASSED:
        return wrapped(result.reason) if result.reason else []
    lines = wrapped(result.reason) if result.reason else []
    return [*lines, f"{REASON_INDENT}spec: {spec_url(result.spec)}"]


def format_progress(result: TestResult) -> str:
    """The line (and the details under it) printed as one test ends (on a terminal)."""
    version = f"v{result.room_version}" if result.room_version else "-"
    row = f"{_MARKS[result.result]:<5}  {version:<3}  {result.id}  {result.seconds:.1f}s"
    return "\n".join([row, *_details(result)])


def format_table(homeserver: str, results: Sequence[TestResult], seconds: float) -> str:
    """The human report: one aligned row per test (result, version, id, spec section,
    time), under a row that did not pass its reason wrapped whole and the link to its
    spec section, and a summary line."""
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
        lines += _details(result)
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
        properties = ET.SubElement(case, "properties")
        properties.append(ET.Element("property", {"name": "spec", "value": r.spec}))
        properties.append(ET.Element("property", {"name": "spec_url", "value": spec_url(r.spec)}))
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
