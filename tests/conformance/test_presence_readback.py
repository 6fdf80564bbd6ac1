"""The presence tests' check that presence is on (issue 20): a homeserver that stores a
status late (Dendrite 0.13.8) is given time; one that never reads it back is skipped."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.conformance.runner import Skipped
from stubserver.conformance.suite_devices import presence_enabled


def test_a_status_read_back_late_counts_as_presence_on() -> None:
    """The first reads give the previous status, a later one the status set: no skip,
    and the reads stop at the first that gives it."""
    answers: list[Any] = [{"presence": "online", "status_msg": ""}, None, {"status_msg": "s1"}]
    reads: list[Any] = []

    def read() -> Any:
        reads.append(answers[len(reads)])
        return reads[-1]

    presence_enabled(read, "s1", timeout=60)
    assert len(reads) == 3


def test_a_status_never_read_back_is_a_skip_with_what_was_read() -> None:
    """A homeserver that never gives the status back (presence off) is skipped once the
    time is up, with the last answer in the reason."""
    with pytest.raises(Skipped) as skipped:
        presence_enabled(lambda: {"presence": "online", "status_msg": ""}, "s1", 0)
    assert "presence turned off" in str(skipped.value)
    assert "'status_msg': ''" in str(skipped.value)
