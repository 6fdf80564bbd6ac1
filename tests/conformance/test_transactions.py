"""The judging of a transaction's answer (``suite_pdus.expect_handled``): a 200 whose
``pdus`` names the PDU without an error passes; every other answer fails, naming what
came."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.conformance.runner import CheckFailed
from stubserver.conformance.suite_pdus import expect_handled
from stubserver.testing import FederationAnswer

EVENT = "$event"


def test_a_200_naming_the_pdu_without_an_error_is_handled() -> None:
    """``{"pdus": {ID: {}}}`` passes, with other PDUs' results beside it."""
    expect_handled("the retry", FederationAnswer(200, {"pdus": {EVENT: {}}}), EVENT)
    expect_handled(
        "the retry", FederationAnswer(200, {"pdus": {EVENT: {}, "$other": {"error": "x"}}}), EVENT
    )


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (400, {"errcode": "M_UNKNOWN"}, "status"),
        (200, {"pdus": {EVENT: {"error": "You are not allowed"}}}, "result for $event"),
        (200, {"pdus": {}}, "result for $event"),
        (200, {"pdus": []}, "result for $event"),
        (200, {}, "result for $event"),
        (200, None, "result for $event"),
    ],
    ids=["refused", "error", "left-out", "pdus-not-object", "no-pdus", "no-body"],
)
def test_any_other_answer_fails_naming_what_came(status: int, body: Any, says: str) -> None:
    """A refusal, an error for the PDU, or an answer that does not name it fails; the
    message names the step and shows the answer."""
    with pytest.raises(CheckFailed) as failed:
        expect_handled("the retried transaction", FederationAnswer(status, body), EVENT)
    assert "the retried transaction" in str(failed.value)
    assert says in str(failed.value)
