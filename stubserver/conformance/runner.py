"""The conformance runner: test records, results, selection and the (threaded) run.

A :class:`ConformanceTest` is a name, the spec section it checks, the room version it runs
in (None when versions do not matter) and a function of a context. The function passes by
returning (a string it returns is a note for information, e.g. which of the ways the
spec allows the homeserver took: the pass's ``reason``), fails by raising
:class:`CheckFailed` (what was expected and what came) or any ``AssertionError``, and
skips by raising :class:`Skipped` (why). Any other exception is a failure too, reported
with its type: the homeserver or the peer did something the test could not go on from.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

PASSED: Final = "passed"
FAILED: Final = "failed"
SKIPPED: Final = "skipped"
#: With ``--expect-fail`` (``expected``): a failure the file names, a pass it names.
EXPECTED_FAILURE: Final = "expected_failure"
UNEXPECTED_PASS: Final = "unexpected_pass"  # noqa: S105 (a result, not a password)
#: Every result, in the order the summaries count them.
RESULTS: Final = (PASSED, FAILED, SKIPPED, EXPECTED_FAILURE, UNEXPECTED_PASS)
#: The results that make the run fail.
BAD_RESULTS: Final = frozenset({FAILED, UNEXPECTED_PASS})
#: Tests run at once: each waits on federation most of its time, in a room of its own.
#: Against Synapse (one process, ~92% of a core through the run) on this project's 2-core
#: machine, 404 tests took 69.8 s with 6 at once and 63.0 s with 10, single runs within
#: the run-to-run spread (50-67 s for the same tests); 16 stretched its slowest test (50
#: PDUs) to 21 s of a 30 s wait. At 10, Dendrite v0.13.8 on SQLite once answered an invite
#: 500 ("database is locked (SQLITE_BUSY)"), so 6 it stays.
DEFAULT_CONCURRENCY: Final = 6

C = TypeVar("C")


class CheckFailed(AssertionError):
    """The homeserver did not do what the spec says: ``expected``, and what ``got``."""

    def __init__(self, what: str, expected: Any, got: Any, answer: Any = None) -> None:
        message = f"{what}: expected {expected}, got {got}"
        if answer is not None:
            # The verdict first, then the whole answer it came in (cut only here, at the end,
            # so that a table's width never hides the verdict).
            message += f" (the answer: {_shortened(answer)})"
        super().__init__(message)
        self.expected = expected
        self.got = got


#: How much of an answer a failure message quotes after its verdict.
ANSWER_QUOTE_CHARS = 300


def _shortened(answer: Any) -> str:
    text = str(answer)
    if len(text) <= ANSWER_QUOTE_CHARS:
        return text
    return f"{text[:ANSWER_QUOTE_CHARS]}... ({len(text) - ANSWER_QUOTE_CHARS} more characters)"


class Skipped(Exception):
    """The test cannot run here; the message says why."""


@dataclass(frozen=True)
class ConformanceTest(Generic[C]):
    """One test: ``id`` (unique), its ``spec`` section, its room version (or None), and
    the function that runs it against a context."""

    id: str
    spec: str
    room_version: str | None
    run: Callable[[C], str | None]
    #: The positive baselines of a negative test: the ids of tests (earlier in the suite)
    #: that must pass for its verdict to mean anything; when one does not, it is skipped.
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class TestResult:
    """One test's outcome, exactly the fields of ``--json``'s ``tests`` entries."""

    id: str
    spec: str
    room_version: str | None
    result: str
    reason: str | None
    seconds: float


def select(tests: Sequence[ConformanceTest[C]], pattern: str | None) -> list[ConformanceTest[C]]:
    """The tests whose id matches ``pattern`` (pure): a glob (``*``, ``?``) when it has
    one, else a substring; every test when None. The baselines of those chosen come too."""
    if not pattern:
        return list(tests)
    if any(ch in pattern for ch in "*?["):
        chosen = {t.id for t in tests if fnmatch.fnmatchcase(t.id, pattern)}
    else:
        chosen = {t.id for t in tests if pattern in t.id}
    needed = chosen | {d for t in tests if t.id in chosen for d in t.depends_on}
    return [t for t in tests if t.id in needed]


def without_baseline(test_id: str, baseline: TestResult | None) -> str | None:
    """Why a test cannot give a verdict when its ``baseline`` (the result of the test it
    depends on, None when not run) did not pass; None when it did (pure)."""
    if baseline is None:
        return f"no verdict: its baseline {test_id} was not run"
    if baseline.result == PASSED:
        return None
    return f"no verdict: its baseline {test_id} did not pass ({baseline.result}: {baseline.reason})"


def run_one(test: ConformanceTest[C], context: C, clock: Callable[[], float]) -> TestResult:
    """Run one test; never raises (a crash is a failure with the exception named)."""
    started = clock()
    result, reason = PASSED, None
    try:
        reason = test.run(context)
    except Skipped as e:
        result, reason = SKIPPED, str(e)
    except AssertionError as e:
        result, reason = FAILED, str(e) or type(e).__name__
    except Exception as e:  # a crash of the test is its failure, reported with the cause
        result, reason = FAILED, f"{type(e).__name__}: {e}"
    return TestResult(
        test.id, test.spec, test.room_version, result, reason, round(clock() - started, 3)
    )


def run_tests(
    tests: Sequence[ConformanceTest[C]],
    context: C,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    clock: Callable[[], float] = time.monotonic,
    on_result: Callable[[TestResult], None] | None = None,
    classify: Callable[[TestResult], TestResult] | None = None,
) -> list[TestResult]:
    """Run ``tests`` (``concurrency`` at once); the results in the tests' order, each
    through ``classify`` (``--expect-fail``) first, and to ``on_result`` as it ends.

    A test waits for its baselines (``depends_on``), which must come before it: the pool
    starts tests in order, so they are running or done by then. When one did not pass,
    the test is skipped with why."""
    position = {t.id: i for i, t in enumerate(tests)}
    for i, test in enumerate(tests):
        late = [d for d in test.depends_on if position.get(d, -1) > i]
        if late:
            raise ValueError(f"{test.id} comes before its baselines {late}")
    done: dict[str, Future[TestResult]] = {}

    def one(test: ConformanceTest[C]) -> TestResult:
        why = None
        for dep in test.depends_on:
            baseline = done[dep].result() if dep in done else None
            why = why or without_baseline(dep, baseline)
        if why is None:
            result = run_one(test, context, clock)
        else:
            result = TestResult(test.id, test.spec, test.room_version, SKIPPED, why, 0.0)
        if classify is not None:
            result = classify(result)
        if on_result is not None:
            on_result(result)
        return result

    futures: list[Future[TestResult]] = []
    if concurrency <= 1:
        for test in tests:
            futures.append(Future())
            futures[-1].set_result(one(test))
            done[test.id] = futures[-1]
        return [f.result() for f in futures]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for test in tests:
            futures.append(pool.submit(one, test))
            done[test.id] = futures[-1]
        return [f.result() for f in futures]


def exit_status(results: Sequence[TestResult]) -> int:
    """0 when nothing failed unexpectedly or passed unexpectedly, else 1 (pure)."""
    return 1 if any(r.result in BAD_RESULTS for r in results) else 0
