"""Which skips the interop runs of the whole suite accept (tests/interop/conformance_run.py):
only a negative test left without a verdict because its baseline is a known deviation."""

from __future__ import annotations

from typing import Any

from tests.interop.conformance_run import skipped_over_a_known_deviation

KNOWN = ["knocks.hand_built_knock_accepted/v10"]


def _test(result: str, reason: str | None) -> dict[str, Any]:
    return {"id": "knocks.send_knock_join_event_refused/v10", "result": result, "reason": reason}


def test_a_skip_over_a_baseline_that_failed_as_expected_is_accepted() -> None:
    """A skip whose baseline is a known deviation that failed as expected is accepted."""
    reason = (
        "no verdict: its baseline knocks.hand_built_knock_accepted/v10 did not pass "
        "(expected_failure: its make_knock status: expected 200, got 404 [known: ...])"
    )
    assert skipped_over_a_known_deviation(_test("skipped", reason), KNOWN)


def test_other_skips_and_results_are_not() -> None:
    """A skip over a baseline that failed unexpectedly, over a baseline not among the known
    deviations, a skip for another cause, and a failure are not accepted."""
    failed = (
        "no verdict: its baseline knocks.hand_built_knock_accepted/v10 did not pass "
        "(failed: its make_knock status: expected 200, got 404)"
    )
    other = (
        "no verdict: its baseline joins.hand_built_join_accepted/v10 did not pass "
        "(expected_failure: ...)"
    )
    assert not skipped_over_a_known_deviation(_test("skipped", failed), KNOWN)
    assert not skipped_over_a_known_deviation(_test("skipped", other), KNOWN)
    assert not skipped_over_a_known_deviation(_test("skipped", "needs two users"), KNOWN)
    assert not skipped_over_a_known_deviation(_test("skipped", None), KNOWN)
    assert not skipped_over_a_known_deviation(_test("failed", failed), KNOWN)
