"""bench/many.py's pure helpers for the down phase (issue 23)."""

from __future__ import annotations

from bench.many import fault_tally, spread


def test_fault_tally_counts_each_fault_annotation_and_skips_untouched_entries() -> None:
    """Entries without ``fault`` are not counted; the others are counted by their kind."""
    entries = [{"fault": "refused"}, {"uri": "/x"}, {"fault": "refused"}, {"fault": "failed"}]
    assert fault_tally(entries) == {"refused": 2, "failed": 1}
    assert fault_tally([]) == {}


def test_spread_reports_the_figures_present_and_how_many_of_all() -> None:
    """None (not arrived) counts in ``of`` only; first, median and last are of the rest."""
    assert spread([0.5, None, 0.1, 0.3]) == {
        "arrived": 3,
        "of": 4,
        "first_arrival_s": 0.1,
        "median_arrival_s": 0.3,
        "last_arrival_s": 0.5,
    }


def test_spread_of_nothing_arrived_has_no_times() -> None:
    """When none arrived, only the counts are given."""
    assert spread([None, None]) == {"arrived": 0, "of": 2}
