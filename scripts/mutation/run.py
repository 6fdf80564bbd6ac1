"""Mutation run of issue 20 (outside CI): proof that each conformance test can fail.

For Synapse unchanged (``none``, the control) and then for each mutant of
:mod:`mutants`, start the pinned Synapse of the interop harness with that one function
replaced (``boot.py``), run ``stubserver conformance --json --expect-fail synapse``
against it, and record which tests failed and the first line of each message. The
namespace, CA and DNS server are made once; each run gets a fresh peer (``direct.test``)
and a fresh Synapse (new database), and takes ``/tmp/stubserver-interop.lock`` for its
own duration only, so that other users of the lock are not starved.

A test is *killed* by a mutant when it passed (or failed as expected) in the control run
and fails (or passes unexpectedly) under the mutant. A mutant is *as named* when every
test it names failed and the first one's message holds the fragment it gives. The results
go to ``--json`` (every run's tests) and ``--markdown`` (the table of docs/conformance.md:
mutant, tests that failed, first line of the message; then each test and the mutants that
killed it, and the tests none killed).

    scripts/mutants                        # control and every mutant (about 25 minutes)
    scripts/mutants --only notary_not_signing --only typing_ignored
    scripts/mutants --list
    scripts/mutants --coverage             # the tests no recorded run killed (no run)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import fnmatch
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
sys.path.insert(0, str(REPO_ROOT))

import mutants  # noqa: E402 (beside this file)

from tests.interop import harness  # noqa: E402

LOCK = Path("/tmp/stubserver-interop.lock")  # noqa: S108 (the shared lock of common.md)
CONTROL = "none"
#: Runs made per hold of the shared lock: a run takes about 20 s, so a hold stays short
#: for the others waiting, while the run does not queue behind them for every mutant.
PER_LOCK = 4
#: The results that kill: a test that fails where it passed, or passes where it failed.
KILLING = frozenset({"failed", "unexpected_pass"})
#: The results of the control run that a mutant can change into a kill.
LIVE = frozenset({"passed", "expected_failure"})


@dataclasses.dataclass
class Run:
    """One Synapse (a mutant or the control) and what the suite said of it."""

    mutant: str
    seconds: float
    exit_status: int
    #: Each test's id -> (result, reason); empty when the run stopped before any test.
    tests: dict[str, tuple[str, str | None]]
    #: The run's own complaint when it stopped before the tests (the preflight), else "".
    stopped: str

    def killed(self, control: Run) -> list[str]:
        """The tests this run killed, in the suite's order."""
        return [
            t
            for t, (result, _) in self.tests.items()
            if result in KILLING and control.tests.get(t, ("", None))[0] in LIVE
        ]


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """The shared interop lock, for one run."""
    with LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass
class Lab:
    """What every run shares: the namespace, the CA, the DNS server and Synapse's python."""

    ns: harness.NetworkNamespace
    ca: harness.TestCA
    python: Path
    directory: Path


@contextlib.contextmanager
def lab(directory: Path) -> Iterator[Lab]:
    """Namespace, CA and DNS, torn down on exit."""
    python = harness.ensure_synapse(log=print)
    with contextlib.ExitStack() as stack:
        ns = harness.create_namespace()
        stack.callback(harness.delete_namespace, ns)
        ca = harness.TestCA.create(directory / "ca")
        dns = harness.start_dns_server(ns, directory / "dns", harness.DEFAULT_RECORDS)
        stack.callback(dns.stop)
        yield Lab(ns, ca, python, directory)


def run_one(the_lab: Lab, mutant: str) -> Run:
    """A fresh peer and a fresh Synapse with ``mutant`` in, the suite against them."""
    where = the_lab.directory / mutant
    peer_spec = harness.DEFAULT_STUBS[0]
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        peer = harness.start_stub(
            the_lab.ns, harness.write_stub_config(where / "peer", peer_spec, the_lab.ca)
        )
        stack.callback(peer.process.stop)
        files = harness.write_synapse_config(where / "synapse", harness.SynapseSpec(), the_lab.ca)
        try:
            synapse = harness.start_synapse(
                the_lab.ns, the_lab.python, files, the_lab.ca, launcher=(HERE / "boot.py", mutant)
            )
        except harness.HarnessError as e:
            seconds = round(time.monotonic() - started, 1)
            return Run(mutant, seconds, -1, {}, f"Synapse did not start: {first_line(str(e))}")
        stack.callback(synapse.process.stop)
        done = harness.run_conformance(
            the_lab.ns,
            synapse.files.spec,
            synapse.files.registration_shared_secret,
            the_lab.ca,
            peer.files.config_path,
            "--expect-fail",
            "synapse",
            "--json",
        )
    seconds = round(time.monotonic() - started, 1)
    (where / "conformance.json").write_text(done.stdout)
    (where / "conformance.stderr").write_text(done.stderr)
    tests: dict[str, tuple[str, str | None]] = {}
    stopped = ""
    try:
        report = json.loads(done.stdout)
    except ValueError:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        stopped = " / ".join(lines[:2]) or f"exit {done.returncode}, no output"
    else:
        tests = {t["id"]: (t["result"], t["reason"]) for t in report["tests"]}
    return Run(mutant, seconds, done.returncode, tests, stopped)


#: Longest message shown in the table, in characters (the whole is in the JSON).
MESSAGE_CHARS = 200


def first_line(text: str | None) -> str:
    """The first line of a message (the whole of it is in the JSON)."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def shown(message: str) -> str:
    """A message for a table cell: cut at :data:`MESSAGE_CHARS` (marked), pipes escaped."""
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS].rstrip() + " …"
    return message.replace("|", "\\|")


def verdict(mutant: mutants.Mutant, run: Run, control: Run) -> str:
    """``as named``, or what differs from the tests and message the mutant names."""
    killed = run.killed(control)
    if run.stopped or not mutant.must_fail:
        # The tests it names are those the preflight stands for: it stops the run first.
        return "as named" if run.stopped and mutant.message in run.stopped else "NOT as named"
    named = [t for t in control.tests if any(fnmatch.fnmatchcase(t, g) for g in mutant.must_fail)]
    missed = [t for t in named if t not in killed]
    if missed:
        return f"NOT as named: {', '.join(missed)} did not fail"
    first = first_line(run.tests[named[0]][1])
    if mutant.message not in first:
        return f"NOT as named: {named[0]} says {first!r}, not {mutant.message!r}"
    return "as named"


def compress(ids: Sequence[str]) -> str:
    """Test ids with a test's versions folded: ``rooms.we_leave/v10,11``."""
    by_name: dict[str, list[str]] = {}
    for test_id in ids:
        name, _, version = test_id.partition("/")
        by_name.setdefault(name, []).append(version.removeprefix("v"))
    return ", ".join(
        f"`{n}/v{','.join(vs)}`" if vs != [""] else f"`{n}`" for n, vs in by_name.items()
    )


#: Marks a kill by a run the preflight stopped (the test's failure shows only there).
AT_PREFLIGHT = "@preflight"


def _named(killer: str) -> str:
    name, marked, _ = killer.partition(AT_PREFLIGHT)
    return f"`{name}` (at the preflight)" if marked else f"`{name}`"


def markdown(control: Run, runs: Sequence[Run]) -> str:
    """The results table, then the tests and the mutants that killed each.

    A mutant's row lists the tests it names that failed (or its first three when it names
    none of those), with the count of the others: a mutant that breaks joins fails nearly
    every test, and the killed-by table lists them all."""
    out = [
        "### Each mutant",
        "",
        "| mutant | breaks | tests that failed | first line of the first message | as named |",
        "|---|---|---|---|---|",
    ]
    killers: dict[str, list[str]] = {t: [] for t in control.tests}
    for run in runs:
        mutant = mutants.BY_NAME[run.mutant]
        killed = run.killed(control)
        for t in killed:
            killers[t].append(run.mutant)
        if run.stopped and verdict(mutant, run, control) == "as named":
            # A test whose failure only the preflight can show (it sends the same request).
            for t in control.tests:
                if any(fnmatch.fnmatchcase(t, g) for g in mutant.must_fail):
                    killers[t].append(f"{run.mutant}{AT_PREFLIGHT}")
        if run.stopped:
            failed, message = "none: the run stopped at the preflight", run.stopped
        else:
            named = [t for t in killed if any(fnmatch.fnmatchcase(t, g) for g in mutant.must_fail)]
            listed = named or killed[:3]
            others = len(killed) - len(listed)
            failed = compress(listed) or "**none** (the mutant survived)"
            if others:
                failed += f" and {others} more"
            message = first_line(run.tests[listed[0]][1]) if killed else ""
        out.append(
            f"| `{run.mutant}` | {mutant.breaks} | {failed} | {shown(message)} |"
            f" {verdict(mutant, run, control)} |"
        )
    out += ["", "### Each test", "", "| test | killed by |", "|---|---|"]
    for test_id, names in killers.items():
        result = control.tests[test_id][0]
        if result not in LIVE:
            killed_by = f"(not live in the control run: {result})"
        else:
            killed_by = ", ".join(_named(n) for n in names) or "**no mutant**"
        out.append(f"| `{test_id}` | {killed_by} |")
    live = [t for t in control.tests if control.tests[t][0] in LIVE]
    unkilled = [t for t in live if not killers[t]]
    at_preflight = [t for t in live if killers[t] and all(AT_PREFLIGHT in n for n in killers[t])]
    survived = [r.mutant for r in runs if not r.killed(control) and not r.stopped]
    out += [
        "",
        "### Score",
        "",
        f"Mutants: {len(runs)}; killing at least one test: {len(runs) - len(survived)}"
        f" (survived: {', '.join(survived) or 'none'}). Tests killed: {len(live) - len(unkilled)}"
        f" of {len(live)}"
        + (f", {len(at_preflight)} of them at the preflight" if at_preflight else "")
        + ".",
    ]
    return "\n".join(out) + "\n"


def report(run: Run) -> None:
    """One line per run as it ends: its time, exit status and the count of each result."""
    results = [result for result, _ in run.tests.values()]
    counts = {r: results.count(r) for r in sorted(set(results))}
    stopped = f" stopped: {run.stopped}" if run.stopped else ""
    print(f"{run.mutant}: {run.seconds} s, exit {run.exit_status}, {counts}{stopped}", flush=True)


#: Where the runs' tables are recorded, and the room versions of the suite they judge.
RECORD = REPO_ROOT / "docs" / "conformance.md"
VERSIONS = ("10", "11", "12")


def coverage(record_path: Path) -> int:
    """List the tests of today's suite that no mutant recorded in ``record_path`` killed,
    each with whether its docstring says why no mutant reaches it; 1 when one does not."""
    from stubserver.conformance.suite import build_suite  # noqa: PLC0415
    from stubserver.devtools import mutation_record as mr  # noqa: PLC0415

    record = mr.read_record(record_path.read_text(), set(mutants.BY_NAME))
    suite = build_suite(list(VERSIONS))
    docs = {t.id: mr.test_function_doc(t.run) for t in suite}
    missed = mr.unkilled([t.id for t in suite], record.kills, VERSIONS[-1])
    explained = [t for t in missed if mr.says_why_unreached(docs[t])]
    print(
        f"{len(suite)} tests (room versions {', '.join(VERSIONS)}); killed by a mutant"
        f" recorded in {record_path.name}: {len(suite) - len(missed)}; by none: {len(missed)}"
        f" ({len(explained)} of them with a docstring saying why)"
    )
    for test_id in missed:
        why = " (its docstring says why)" if test_id in explained else ""
        print(f"  {test_id}{why}")
    if record.unnamed_kills:
        rows = ", ".join(f"{m} ({n})" for m, n in sorted(record.unnamed_kills.items()))
        print(f"rows that kill more tests than they name (not counted here): {rows}")
    return 0 if len(explained) == len(missed) else 1


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="run this mutant (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", type=Path, help="write every run's results here")
    parser.add_argument("--markdown", type=Path, help="write the tables here")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders")
    parser.add_argument(
        "--from-json",
        type=Path,
        action="append",
        help="print the tables of runs saved with --json instead of running (repeatable:"
        " a later file's run of a mutant replaces an earlier one's)",
    )
    parser.add_argument(
        "--per-lock",
        type=int,
        default=PER_LOCK,
        help=f"runs per hold of the interop lock (default {PER_LOCK}, about 20 s each)",
    )
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="list the tests no mutant recorded in docs/conformance.md killed (no run);"
        " exit 1 when one of them has no docstring saying why",
    )
    args = parser.parse_args(argv)
    if args.coverage:
        return coverage(RECORD)
    if args.list:
        for m in mutants.MUTANTS:
            print(f"{m.name:32} {' + '.join([m.target, *(t for t, _ in m.also)])}")
        return 0
    if args.from_json:
        saved: dict[str, Run] = {}
        for path in args.from_json:
            for entry in json.loads(path.read_text()):
                entry["tests"] = {t: tuple(v) for t, v in entry["tests"].items()}
                saved[entry["mutant"]] = Run(**entry)
        order = [m.name for m in mutants.MUTANTS if m.name in saved]
        print(markdown(saved[CONTROL], [saved[n] for n in order]), end="")
        return 0
    chosen = args.only or [m.name for m in mutants.MUTANTS]
    unknown = [n for n in chosen if n not in mutants.BY_NAME]
    if unknown:
        parser.error(f"no such mutant: {', '.join(unknown)}")
    reason = harness.unavailable_reason()
    if reason is not None:
        print(reason, file=sys.stderr)
        return 2
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="stubserver-mutants-"))
    runs: list[Run] = []
    with lab(directory) as the_lab:
        names = [CONTROL, *chosen]
        batches = [names[i : i + args.per_lock] for i in range(0, len(names), args.per_lock)]
        for batch in batches:
            with locked():
                done = [run_one(the_lab, name) for name in batch]
            for run in done:
                report(run)
                runs.append(run)
    control, mutated = runs[0], runs[1:]
    if control.stopped or control.exit_status != 0:
        print(f"the control run did not pass: {control.stopped or control.exit_status}")
    table = markdown(control, mutated)
    total = round(time.monotonic() - started)
    print(table, f"\n{len(runs)} runs in {total} s; folders in {directory}", sep="")
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in runs], indent=1))
    if args.markdown:
        args.markdown.write_text(table)
    if not args.keep:
        import shutil  # noqa: PLC0415

        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
