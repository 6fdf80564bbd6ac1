"""Which conformance tests the recorded mutation runs killed (issue 20, item 3).

``scripts/mutants --coverage`` (scripts/mutation/run.py) reads the tables of
``docs/conformance.md``, as ``scripts/mutants --markdown`` printed them and they were
pasted there run by run, and lists the tests of today's suite that no recorded mutant
killed. Two kinds of row name kills:

- a mutant's row (``| `mutant` | breaks | tests that failed | message | as named |``): the
  tests in its third column (``name/v10,11,12``, ``name/v*`` or a version-less ``name``);
  ``and N more`` stands for kills the row does not name, which this reading cannot see;
- a test's row (``| `test` | `mutant`, `mutant` |``): the mutants in its second column.

Only mutants that still exist count (a mutant removed since, or renamed, killed a test
of its time), and a mutant's row counts only in its latest place in the document (the
sections are in the order of their runs): a mutant run again after a change is judged by
its last run. No I/O: the caller reads the document and builds the suite.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

#: A backticked name in a table cell.
_TICKED = re.compile(r"`([^`]+)`")
#: ``and 48 more`` in a mutant row's third column.
_MORE = re.compile(r"\band (\d+) more\b")


@dataclass(frozen=True)
class Record:
    """What the document's tables say: test-id patterns and the mutants that killed them."""

    #: Test id (or glob: ``name/v*``) -> the mutants a row names as killing it.
    kills: dict[str, set[str]]
    #: Mutants whose latest row says it killed more tests than it names (``and N more``).
    unnamed_kills: dict[str, int]


def _cells(line: str) -> list[str]:
    """A markdown table row's cells (``|`` escaped as ``\\|`` stays inside a cell)."""
    inner = line.strip().strip("|")
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def expand(pattern: str) -> list[str]:
    """``name/v10,11,12`` -> one id per version; ``name/v*`` and ``name`` unchanged."""
    name, slash, versions = pattern.partition("/")
    if not slash or not versions.startswith("v") or "*" in versions:
        return [pattern]
    return [f"{name}/v{v}" for v in versions[1:].split(",")]


def read_record(markdown: str, mutants: Collection[str]) -> Record:
    """The kills the tables of ``markdown`` record, by the mutants in ``mutants``."""
    latest_row: dict[str, tuple[list[str], int]] = {}
    by_test: dict[str, set[str]] = {}
    for line in markdown.splitlines():
        if not line.startswith("| `"):
            continue
        cells = _cells(line)
        first = _TICKED.fullmatch(cells[0])
        if first is None:
            continue
        name = first.group(1)
        if name in mutants and len(cells) >= 4:
            more = _MORE.search(cells[2])
            latest_row[name] = (_TICKED.findall(cells[2]), int(more.group(1)) if more else 0)
        elif name not in mutants and len(cells) == 2:
            killers = {m for m in _TICKED.findall(cells[1]) if m in mutants}
            for test_id in expand(name):
                by_test.setdefault(test_id, set()).update(killers)
    kills = {t: set(ms) for t, ms in by_test.items() if ms}
    for mutant, (tests, _) in latest_row.items():
        for pattern in tests:
            for test_id in expand(pattern):
                kills.setdefault(test_id, set()).add(mutant)
    unnamed = {m: n for m, (_, n) in latest_row.items() if n}
    return Record(kills, unnamed)


def killers_of(test_id: str, kills: Mapping[str, set[str]], newest: str) -> set[str]:
    """The mutants recorded as killing ``test_id`` (directly or through a glob). A test
    now run once, in the ``newest`` room version (an id without ``/vN``), counts as killed
    by a kill recorded for that version, from when it ran in each."""
    ids = [test_id] if "/" in test_id else [test_id, f"{test_id}/v{newest}"]
    found: set[str] = set()
    for pattern, mutants in kills.items():
        if any(fnmatch.fnmatchcase(i, pattern) for i in ids):
            found |= mutants
    return found


def unkilled(test_ids: Iterable[str], kills: Mapping[str, set[str]], newest: str) -> list[str]:
    """The tests of ``test_ids`` (in their order) that no recorded mutant killed."""
    return [t for t in test_ids if not killers_of(t, kills, newest)]


def says_why_unreached(doc: str | None) -> bool:
    """Whether a test's docstring says why no mutant reaches it (it speaks of mutants:
    "No mutant of Synapse reaches this test: ...")."""
    return "mutant" in (doc or "").lower()


def test_function_doc(run: Callable[..., object]) -> str | None:
    """The docstring of the function a suite entry runs: the area's own function when
    ``run`` binds one to a room version (``per_version``), else ``run``'s."""
    bound = inspect.getclosurevars(run).nonlocals.get("f")
    return bound.__doc__ if callable(bound) else run.__doc__
