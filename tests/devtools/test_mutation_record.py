"""Reading the mutation runs recorded in docs/conformance.md (``scripts/mutants --coverage``)."""

from __future__ import annotations

from collections.abc import Callable

from stubserver.devtools import mutation_record as mr

MUTANTS = {"typing_ignored", "send_join_empty_state", "retries_refused", "every_request_refused"}

DOC = """
| mutant | breaks | tests that failed | first line of the first message | as named |
|---|---|---|---|---|
| `typing_ignored` | a \\| b | `edus.our_typing/v10,11` | x | as named |
| `send_join_empty_state` | state | `rooms.we_join/v10,11,12` and 48 more | m | as named |
| `gone_mutant` | removed since | `edus.old/v10` | m | as named |
| `every_request_refused` | answered | none: the run stopped at the preflight | m | as named |

| test | killed by |
|---|---|
| `auth.signed_request_accepted` | `every_request_refused` (at the preflight) |
| `transactions.retry_answered/v*` | `retries_refused` |
| `edus.unkilled/v10` | **no mutant** |
| `edus.by_a_gone_one/v10` | `gone_mutant` |

| `typing_ignored` | run again | `edus.our_typing/v12` | m | as named |
"""


def test_a_mutant_row_kills_the_tests_it_names_in_each_version() -> None:
    """``name/v10,11,12`` in a mutant's row stands for the test in each of those versions,
    and a pipe escaped in a cell does not split it."""
    record = mr.read_record(DOC, MUTANTS)
    for v in ("10", "11", "12"):
        assert record.kills[f"rooms.we_join/v{v}"] == {"send_join_empty_state"}


def test_only_a_mutants_latest_row_counts() -> None:
    """A mutant run again is judged by its last row: its first run's kills are gone."""
    record = mr.read_record(DOC, MUTANTS)
    assert record.kills["edus.our_typing/v12"] == {"typing_ignored"}
    assert "edus.our_typing/v10" not in record.kills


def test_rows_of_removed_mutants_and_no_mutant_rows_kill_nothing() -> None:
    """A mutant that no longer exists, or ``**no mutant**``, is no kill."""
    record = mr.read_record(DOC, MUTANTS)
    assert "edus.old/v10" not in record.kills
    assert "edus.unkilled/v10" not in record.kills
    assert "edus.by_a_gone_one/v10" not in record.kills


def test_a_test_row_kills_through_its_mutants_and_globs() -> None:
    """A test's row names its killers (at the preflight too); ``/v*`` covers each version."""
    record = mr.read_record(DOC, MUTANTS)
    kills = record.kills
    assert mr.killers_of("auth.signed_request_accepted", kills, "12") == {"every_request_refused"}
    assert mr.killers_of("transactions.retry_answered/v11", kills, "12") == {"retries_refused"}


def test_unnamed_kills_are_reported_not_counted() -> None:
    """``and 48 more`` is kept as a count: those tests are not known by name."""
    assert mr.read_record(DOC, MUTANTS).unnamed_kills == {"send_join_empty_state": 48}


def test_a_test_now_run_once_counts_its_newest_versions_kill() -> None:
    """A test run once (in the newest version, id without ``/vN``) is killed by a kill
    recorded for that version when it ran in each, not by one for an older version."""
    kills = {"joins_v1.accepted/v12": {"m"}, "leaves_v1.accepted/v10": {"m"}}
    assert mr.killers_of("joins_v1.accepted", kills, "12") == {"m"}
    assert mr.unkilled(["joins_v1.accepted", "leaves_v1.accepted"], kills, "12") == [
        "leaves_v1.accepted"
    ]


def test_unkilled_keeps_the_suites_order() -> None:
    """The tests no mutant killed, in the order given."""
    kills = {"b/v10": {"m"}}
    assert mr.unkilled(["c/v10", "b/v10", "a/v10"], kills, "12") == ["c/v10", "a/v10"]


def _documented() -> None:
    """No mutant of Synapse reaches this test: why."""


def _bound(f: Callable[..., object]) -> Callable[[], object]:
    """A test run bound the way ``per_version`` binds one (``f`` in its closure)."""

    def run() -> object:
        return f()

    return run


def test_a_docstring_that_speaks_of_mutants_says_why() -> None:
    """The docstring of a test bound to a room version is its function's, and it says why
    no mutant reaches the test when it speaks of mutants."""
    doc = mr.test_function_doc(_bound(_documented))
    assert mr.says_why_unreached(doc)
    assert not mr.says_why_unreached(mr.test_function_doc(_bound(len)))
    assert not mr.says_why_unreached(None)
