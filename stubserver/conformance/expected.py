"""``--expect-fail FILE``: a homeserver's known deviations from the spec, so that a project
can gate its CI on "nothing new" while every such test stays a failing test.

The file has one entry a line: a test id or a glob of ids (``*``, ``?``, ``[...]``), then
whitespace, then the reason (required: the deviation, ideally with the spec's words)::

    # Synapse 1.163.2
    keys.notary_minimum_valid_until_ts_optional  400 M_MISSING_PARAM without it; the spec: ...

Blank lines and lines starting with ``#`` are ignored. A test that matches an entry (the
first that matches) and fails is an ``expected_failure``; one that matches and passes is an
``unexpected_pass`` (the deviation is gone: drop the entry); skips stay skips. The files
shipped for known homeservers are in ``expected/`` beside this module (``--expect-fail
synapse`` names ``expected/synapse.txt``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from stubserver.conformance.runner import (
    EXPECTED_FAILURE,
    FAILED,
    PASSED,
    UNEXPECTED_PASS,
    TestResult,
)

#: Where the shipped files are: ``NAME.txt`` for ``--expect-fail NAME``.
SHIPPED_DIR: Final = Path(__file__).parent / "expected"


class ExpectFailFileError(ValueError):
    """The file cannot be read or has a line without a reason."""


@dataclass(frozen=True)
class ExpectedFailure:
    """One entry: a test id or glob, and why that test is known to fail."""

    pattern: str
    reason: str

    def matches(self, test_id: str) -> bool:
        """True when ``test_id`` is the id or matches the glob (pure)."""
        return fnmatch.fnmatchcase(test_id, self.pattern)


def parse_expect_fail(text: str, source: str = "the expect-fail file") -> list[ExpectedFailure]:
    """The entries of a file's ``text`` (pure); ExpectFailFileError names the bad line."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pattern, *rest = stripped.split(None, 1)
        reason = " ".join(" ".join(rest).split())
        if not reason:
            raise ExpectFailFileError(
                f"{source}, line {number}: {pattern!r} has no reason (write `ID-OR-GLOB  REASON`)"
            )
        entries.append(ExpectedFailure(pattern, reason))
    return entries


def shipped_names() -> list[str]:
    """The names ``--expect-fail`` accepts for the files shipped here."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.txt"))


def load_expect_fail(name_or_path: str) -> list[ExpectedFailure]:
    """The entries of the file at ``name_or_path``, or of the shipped file of that name
    (``synapse``) when no such file exists."""
    path = Path(name_or_path)
    if not path.exists() and "/" not in name_or_path and name_or_path in shipped_names():
        path = SHIPPED_DIR / f"{name_or_path}.txt"
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        shipped = ", ".join(shipped_names())
        raise ExpectFailFileError(
            f"cannot read {name_or_path} ({e.strerror}); shipped files: {shipped}"
        ) from None
    return parse_expect_fail(text, str(path))


def expected_reason(test_id: str, entries: Sequence[ExpectedFailure]) -> str | None:
    """The reason of the first entry matching ``test_id``, or None (pure)."""
    for entry in entries:
        if entry.matches(test_id):
            return entry.reason
    return None


def classify(result: TestResult, entries: Sequence[ExpectedFailure]) -> TestResult:
    """``result`` as the file sees it (pure): a failure it names is an expected failure,
    a pass it names an unexpected pass, each with the file's reason; the rest unchanged."""
    known = expected_reason(result.id, entries)
    if known is None:
        return result
    if result.result == FAILED:
        return replace(result, result=EXPECTED_FAILURE, reason=f"{result.reason} [known: {known}]")
    if result.result == PASSED:
        return replace(
            result,
            result=UNEXPECTED_PASS,
            reason=f"passed, but the expect-fail file says it fails: {known}",
        )
    return result
