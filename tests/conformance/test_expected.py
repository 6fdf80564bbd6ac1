"""``--expect-fail``: the file's format, which tests it names, and how it turns results into
expected failures and unexpected passes (pure functions, and the outputs that show them)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stubserver.conformance.expected import (
    ExpectedFailure,
    ExpectFailFileError,
    classify,
    expected_reason,
    load_expect_fail,
    parse_expect_fail,
    shipped_names,
)
from stubserver.conformance.output import format_table, to_json, to_junit
from stubserver.conformance.runner import ConformanceTest, exit_status, run_tests
from stubserver.conformance.runner import TestResult as Result
from stubserver.conformance.suite import build_suite

FILE = """\
# a comment, then a blank line

keys.notary_minimum_valid_until_ts_optional   400 without the optional field
pdus.*/v12\tv12 PDUs:   not yet   handled
"""


def _result(test_id: str, result: str, reason: str | None = None) -> Result:
    return Result(test_id, "Transactions", None, result, reason, 0.5)


def test_lines_are_an_id_or_glob_then_the_reason() -> None:
    """Comments and blank lines are skipped; the first word is the pattern, the rest (its
    whitespace collapsed) the reason; tabs separate as spaces do."""
    assert parse_expect_fail(FILE) == [
        ExpectedFailure(
            "keys.notary_minimum_valid_until_ts_optional", "400 without the optional field"
        ),
        ExpectedFailure("pdus.*/v12", "v12 PDUs: not yet handled"),
    ]


def test_a_line_without_a_reason_is_refused_with_its_number() -> None:
    """Every entry needs its reason: a bare id is an error naming the file and line."""
    with pytest.raises(ExpectFailFileError, match=r"ci\.txt, line 2: 'keys\.version'"):
        parse_expect_fail("# known\nkeys.version\n", "ci.txt")


def test_ids_match_exactly_and_globs_as_globs() -> None:
    """An id names that test only (not a prefix of it); a glob names every id it
    matches; the first matching entry's reason is the one given."""
    entries = parse_expect_fail(FILE)
    assert expected_reason("keys.notary_minimum_valid_until_ts_optional", entries) == (
        "400 without the optional field"
    )
    assert expected_reason("keys.notary_minimum_valid_until_ts_optional/v1", entries) is None
    assert expected_reason("keys.notary", entries) is None
    assert expected_reason("pdus.bad_signature_dropped/v12", entries) == (
        "v12 PDUs: not yet handled"
    )
    assert expected_reason("pdus.bad_signature_dropped/v11", entries) is None
    first = [ExpectedFailure("pdus.*", "first"), ExpectedFailure("pdus.x", "second")]
    assert expected_reason("pdus.x", first) == "first"


def test_a_named_failure_is_expected_and_a_named_pass_unexpected() -> None:
    """Failed and named: expected_failure, the failure and the file's reason kept. Passed
    and named: unexpected_pass with the file's reason. Skipped stays skipped; a test the
    file does not name keeps its result."""
    entries = [ExpectedFailure("t.*", "a known deviation")]
    failed = classify(_result("t.a", "failed", "status: expected 200, got 400"), entries)
    assert failed.result == "expected_failure"
    assert failed.reason == "status: expected 200, got 400 [known: a known deviation]"
    passed = classify(_result("t.b", "passed"), entries)
    assert passed.result == "unexpected_pass"
    assert passed.reason == "passed, but the expect-fail file says it fails: a known deviation"
    assert classify(_result("t.c", "skipped", "why"), entries) == _result("t.c", "skipped", "why")
    other = _result("u.a", "failed", "broken")
    assert classify(other, entries) == other


def test_exit_status_fails_on_unexpected_failures_and_passes_only() -> None:
    """Expected failures and skips keep exit 0; an unexpected pass is 1, as a failure is."""
    assert exit_status([_result("a", "passed"), _result("b", "expected_failure", "x")]) == 0
    assert exit_status([_result("a", "skipped", "x"), _result("b", "unexpected_pass", "x")]) == 1
    assert exit_status([_result("a", "failed", "x")]) == 1


def _raise(ctx: object) -> None:
    raise AssertionError("status: expected 200, got 400")


def _nothing(ctx: object) -> None:
    pass


def test_the_run_classifies_each_result_and_the_outputs_count_and_show_each() -> None:
    """run_tests classifies before reporting; --json counts all five results; the table
    marks xfail/XPASS with their reasons; JUnit shows an expected failure as skipped with
    the reason and an unexpected pass as a failure."""
    entries = [ExpectedFailure("known.*", "documented deviation")]
    seen: list[str] = []
    tests = [
        ConformanceTest("known.fails", "Rejection", None, _raise),
        ConformanceTest("known.fixed", "Rejection", None, _nothing),
        ConformanceTest("new.fails", "Rejection", None, _raise),
        ConformanceTest("fine", "Rejection", None, _nothing),
    ]
    results = run_tests(
        tests,
        object(),
        concurrency=1,
        classify=lambda r: classify(r, entries),
        on_result=lambda r: seen.append(r.result),
    )
    assert seen == ["expected_failure", "unexpected_pass", "failed", "passed"]
    document = json.loads(json.dumps(to_json("hs.test", results)))
    counted = {k: document[k] for k in document if k not in ("homeserver", "tests")}
    assert counted == {
        "passed": 1,
        "failed": 1,
        "skipped": 0,
        "expected_failure": 1,
        "unexpected_pass": 1,
    }
    assert document["tests"][0]["reason"] == (
        "status: expected 200, got 400 [known: documented deviation]"
    )
    table = format_table("hs.test", results, 2.0).splitlines()
    assert table[3].split()[:2] == ["xfail", "-"]
    assert "[known: documented deviation]" in table[4]
    assert table[5].strip().startswith("spec: https://")
    assert table[6].split()[:2] == ["XPASS", "-"]
    assert table[-1] == (
        "1 passed, 1 failed, 0 skipped, 1 expected failures, 1 unexpected passes of 4 in 2.0 s"
    )
    suite = ET.fromstring(to_junit("hs.test", results, 2.0)).find("testsuite")
    assert suite is not None
    assert (suite.get("failures"), suite.get("skipped")) == ("2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    skipped = cases["known.fails"].find("skipped")
    assert skipped is not None
    assert skipped.get("message") == (
        "expected failure: status: expected 200, got 400 [known: documented deviation]"
    )
    assert cases["known.fixed"].find("failure") is not None


def test_the_shipped_synapse_file_names_real_tests_with_the_specs_words(tmp_path: Path) -> None:
    """``--expect-fail synapse`` loads the shipped file; each entry names a test of the
    suite, and the notary's missing ``minimum_valid_until_ts`` is there with the spec's
    sentence. A path is read as a path."""
    assert "synapse" in shipped_names()
    entries = load_expect_fail("synapse")
    ids = [t.id for t in build_suite(["10", "11", "12"])]
    assert all(any(e.matches(i) for i in ids) for e in entries)
    notary = expected_reason("keys.notary_minimum_valid_until_ts_optional", entries)
    assert notary is not None and "M_MISSING_PARAM" in notary
    assert "If not supplied, the current time as determined by the notary" in notary
    own = tmp_path / "mine.txt"
    own.write_text("a.b  because\n")
    assert load_expect_fail(str(own)) == [ExpectedFailure("a.b", "because")]
    with pytest.raises(ExpectFailFileError, match=r"shipped files: .*synapse"):
        load_expect_fail(str(tmp_path / "missing.txt"))


def test_the_shipped_dendrite_file_names_real_tests_with_the_specs_words() -> None:
    """``--expect-fail dendrite`` loads the shipped file; each entry names a test of the
    suite for Dendrite's room versions (10, 11) and quotes the spec; the test Synapse fails
    (the notary's optional field) is not in it, and no entry covers more than one test's
    four runs (two join rules, two versions), nor the file a fifth of the suite."""
    assert "dendrite" in shipped_names()
    entries = load_expect_fail("dendrite")
    ids = [t.id for t in build_suite(["10", "11"])]
    assert all(any(e.matches(i) for i in ids) for e in entries)
    assert all('the spec ("' in e.reason or "the spec (" in e.reason for e in entries)
    assert expected_reason("keys.notary_minimum_valid_until_ts_optional", entries) is None
    other = expected_reason("auth.other_destination_refused", entries)
    assert other is not None and "401 Unauthorized" in other
    assert expected_reason("serving.get_missing_events/v10", entries) is None
    assert expected_reason("serving.get_missing_events_limit/v11", entries) is not None
    assert max(sum(e.matches(i) for i in ids) for e in entries) <= 4  # knocks*: 2 rules x 2
    assert sum(any(e.matches(i) for e in entries) for i in ids) < len(ids) // 5
