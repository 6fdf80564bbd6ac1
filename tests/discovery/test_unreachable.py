"""The typed failures of an unreachable destination: their messages stay bounded."""

from __future__ import annotations

from stubserver.discovery.unreachable import bounded_message


def test_bounded_message_counts_what_is_left_out() -> None:
    """Parts that do not fit the limit are left out and counted; a long part is cut."""
    message = bounded_message("prefix: ", [f"part {i}" for i in range(500)], limit=100)
    assert len(message) <= 100
    assert message.startswith("prefix: part 0; part 1")
    assert message.endswith("more")
    assert bounded_message("p: ", ["a", "b"], limit=100) == "p: a; b"
    assert len(bounded_message("p: ", ["x" * 5000], limit=100)) <= 100
