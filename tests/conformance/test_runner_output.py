"""The conformance runner and its outputs, with a fake suite (no peer, no homeserver)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from itertools import count

from stubserver.cli.conformance import _progress
from stubserver.cli.conformance import main as conformance_main
from stubserver.cli.main import build_parser
from stubserver.cli.main import main as cli_main
from stubserver.conformance.output import (
    format_progress,
    format_table,
    spec_url,
    to_json,
    to_junit,
)
from stubserver.conformance.runner import (
    RESULTS,
    CheckFailed,
    ConformanceTest,
    Skipped,
    exit_status,
    run_tests,
    select,
)
from stubserver.conformance.runner import (
    TestResult as Result,
)
from stubserver.conformance.suite import build_suite, supported_versions
from stubserver.conformance.suite_keys import VERSION


def _pass(ctx: object) -> None:
    pass


def _fail(ctx: object) -> None:
    raise CheckFailed("the answer's status", 401, 200)


def _skip(ctx: object) -> None:
    raise Skipped("needs two users")


def _crash(ctx: object) -> None:
    raise KeyError("room_id")


FAKE = [
    ConformanceTest("keys.ok", "Retrieving server keys", None, _pass),
    ConformanceTest("rooms.join/v10", "Joining Rooms", "10", _fail),
    ConformanceTest("rooms.join/v12", "Joining Rooms", "12", _skip),
    ConformanceTest("edus.typing/v12", "Typing Notifications", "12", _crash),
]


def _clock() -> object:
    ticks = count()
    return lambda: float(next(ticks))


def test_results_say_passed_failed_with_expected_and_got_or_skipped_with_why() -> None:
    """Each test's result: passed; failed with what was expected and what came (a crash
    named by its exception); skipped with the reason."""
    results = run_tests(FAKE, object(), concurrency=1, clock=_clock())  # type: ignore[arg-type]
    assert [r.result for r in results] == ["passed", "failed", "skipped", "failed"]
    assert results[0].reason is None
    assert results[1].reason == "the answer's status: expected 401, got 200"
    assert results[2].reason == "needs two users"
    assert results[3].reason == "KeyError: 'room_id'"
    assert all(r.seconds == 1.0 for r in results)


def test_threaded_run_keeps_the_suite_order() -> None:
    """Run several at once, the results still come in the suite's order."""
    results = run_tests(FAKE * 3, object(), concurrency=4)
    assert [r.id for r in results] == [t.id for t in FAKE * 3]


def test_json_has_exactly_the_documented_shape() -> None:
    """``--json``: homeserver, tests with id/spec/room_version/result/reason/seconds, and a
    count of each of the five results (the last two zero without --expect-fail)."""
    results = run_tests(FAKE, object(), concurrency=1, clock=_clock())  # type: ignore[arg-type]
    document = json.loads(json.dumps(to_json("hs.test", results)))
    assert set(document) == {"homeserver", "tests", *RESULTS}
    assert document["homeserver"] == "hs.test"
    assert (document["passed"], document["failed"], document["skipped"]) == (1, 2, 1)
    assert (document["expected_failure"], document["unexpected_pass"]) == (0, 0)
    assert document["tests"][1] == {
        "id": "rooms.join/v10",
        "spec": "Joining Rooms",
        "room_version": "10",
        "result": "failed",
        "reason": "the answer's status: expected 401, got 200",
        "seconds": 1.0,
    }


def test_junit_lists_every_test_with_failures_and_skips() -> None:
    """JUnit XML: one testcase per test, failure and skipped children with the reason,
    and the counts on the testsuite."""
    results = run_tests(FAKE, object(), concurrency=1, clock=_clock())  # type: ignore[arg-type]
    root = ET.fromstring(to_junit("hs.test", results, 4.0))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == [t.id for t in FAKE]
    failure = cases["rooms.join/v10"].find("failure")
    assert failure is not None and failure.text == "the answer's status: expected 401, got 200"
    skipped = cases["rooms.join/v12"].find("skipped")
    assert skipped is not None and skipped.get("message") == "needs two users"
    assert cases["keys.ok"].find("failure") is None


def test_table_has_a_row_per_test_reasons_under_failures_and_a_summary() -> None:
    """The table: a header, one row per test (mark, version, id, spec), the reason and the
    spec section's link under a failed or skipped row, and the counts at the end."""
    results = run_tests(FAKE, object(), concurrency=1, clock=_clock())  # type: ignore[arg-type]
    lines = format_table("hs.test", results, 4.0).splitlines()
    assert lines[2].split() == ["result", "room", "test", "spec", "section", "time"]
    assert lines[3].split()[:3] == ["ok", "-", "keys.ok"]
    assert lines[4].split()[:3] == ["FAIL", "v10", "rooms.join/v10"]
    assert lines[5].strip() == "the answer's status: expected 401, got 200"
    assert (
        lines[6].strip() == "spec: https://spec.matrix.org/v1.19/server-server-api/#joining-rooms"
    )
    assert lines[7].split()[:3] == ["skip", "v12", "rooms.join/v12"]
    assert lines[-1] == "1 passed, 2 failed, 1 skipped of 4 in 4.0 s"


def test_exit_status_is_1_only_when_something_failed() -> None:
    """0 when nothing failed (skips included), 1 when one test failed."""
    results = run_tests(FAKE, object(), concurrency=1)
    assert exit_status(results) == 1
    assert exit_status([r for r in results if r.result != "failed"]) == 0


def test_only_selects_by_substring_or_glob() -> None:
    """``--only``: a substring of the id, or a glob when it has wildcards."""
    assert [t.id for t in select(FAKE, "rooms.")] == ["rooms.join/v10", "rooms.join/v12"]
    assert [t.id for t in select(FAKE, "*/v12")] == ["rooms.join/v12", "edus.typing/v12"]
    assert [t.id for t in select(FAKE, None)] == [t.id for t in FAKE]
    assert select(FAKE, "nothing-like-this") == []


def test_room_versions_are_those_the_capabilities_list_as_stable() -> None:
    """Of 10, 11 and 12, those ``m.room_versions`` lists as stable."""
    caps = {
        "capabilities": {
            "m.room_versions": {
                "default": "12",
                "available": {"9": "stable", "10": "stable", "11": "unstable", "12": "stable"},
            }
        }
    }
    assert supported_versions(caps) == ["10", "12"]
    assert supported_versions({}) == []


def test_the_suite_has_unique_ids_and_a_spec_section_each() -> None:
    """Every built-in test has a unique id and names its spec section; per-version tests
    exist for each version asked."""
    suite = build_suite(["10", "11", "12"])
    ids = [t.id for t in suite]
    assert len(ids) == len(set(ids))
    assert all(t.spec for t in suite)
    assert {t.room_version for t in suite} == {None, "10", "11", "12"}
    assert len(build_suite(["12"])) < len(suite)


def test_bad_usage_exits_2() -> None:
    """Missing credentials is bad usage: exit 2 (argparse)."""
    try:
        cli_main(
            [
                "conformance",
                "--homeserver-name",
                "hs",
                "--homeserver-url",
                "http://127.0.0.1:1",
                "-c",
                "peer.yaml",
            ]
        )
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("no exit")


def test_an_unusable_peer_config_exits_2(tmp_path: object) -> None:
    """A peer config that cannot be driven (no file) is exit 2, before any test runs."""
    argv = [
        "conformance",
        "--homeserver-name",
        "hs",
        "--homeserver-url",
        "http://127.0.0.1:1",
        "-c",
        "/nonexistent/peer.yaml",
        "--homeserver-token",
        "t",
    ]
    args = build_parser(argv).parse_args(argv)
    out = io.StringIO()
    try:
        status = conformance_main(args, out)
    except Exception as e:  # ConfigError reaches cli.main, which maps it to 2
        assert type(e).__name__ == "ConfigError"
    else:
        assert status == 2
    assert out.getvalue() == ""


def test_a_long_reason_is_wrapped_whole_in_the_table_and_as_each_test_ends() -> None:
    """A reason longer than a line (the 51-PDU answer, which once was cut before its
    verdict) is wrapped, never cut: every word is there, in order, in the table and in
    the line printed as the test ends; the reason's own lines are kept."""
    answer = json.dumps({"pdus": {f"$event{i}:peer.test": {} for i in range(12)}})
    reason = f"a transaction of 51 PDUs (answer {answer}): expected 400, got 200\nnext line"
    result = Result("transactions.51_pdus_refused/v12", "Transactions", "12", "failed", reason, 1.5)
    for text in (format_table("hs.test", [result], 1.5), format_progress(result)):
        lines = text.splitlines()
        assert all(len(line) <= 100 for line in lines if "$event" in line)
        assert " ".join(" ".join(lines).split()).count("expected 400, got 200") == 1
        assert " ".join(reason.split()) in " ".join(" ".join(lines).split())
    progress = format_progress(result).splitlines()
    assert progress[0].split() == ["FAIL", "v12", "transactions.51_pdus_refused/v12", "1.5s"]
    assert progress[-2].strip() == "next line"
    assert progress[-1].strip() == (
        "spec: https://spec.matrix.org/v1.19/server-server-api/#transactions"
    )
    passed = Result("keys.version", VERSION, None, "passed", None, 0.2)
    assert format_progress(passed) == "ok     -    keys.version  0.2s"


def test_every_spec_section_of_the_suite_links_to_its_anchor() -> None:
    """Each section the suite names links to the spec's anchor for it: a heading in lower
    case joined by dashes (the part after the last colon), an endpoint as the spec's
    pages spell its anchor (in lower case: ``{roomId}`` is ``roomid``)."""
    anchors = {spec_url(t.spec).split("#")[1] for t in build_suite(["12"])}
    assert anchors == {
        "publishing-keys",
        "get_matrixfederationv1version",
        "get_matrixfederationv1state_idsroomid",
        "get_matrixfederationv1stateroomid",
        "get_matrixfederationv1eventeventid",
        "get_matrixfederationv1event_authroomideventid",
        "get_matrixfederationv1backfillroomid",
        "post_matrixfederationv1get_missing_eventsroomid",
        "get_matrixfederationv1make_joinroomiduserid",
        "put_matrixfederationv2send_joinroomideventid",
        "put_matrixfederationv2inviteroomideventid",
        "put_matrixfederationv2send_leaveroomideventid",
        "put_matrixfederationv1send_knockroomideventid",
        "restricted-rooms",
        "querying-keys-through-another-server",
        "request-authentication",
        "joining-rooms",
        "inviting-to-a-room",
        "leaving-rooms-rejecting-invites",
        "transactions",
        "backfilling-and-retrieving-missing-events",
        "validating-hashes-and-signatures-on-received-events",
        "rejection",
        "soft-failure",
        "authorization-rules",
        "room-state-resolution",
        "pdus",
        "typing-notifications",
        "receipts",
        "server-access-control-lists-acls",
        "device-management",
        "end-to-end-encryption",
        "send-to-device-messaging",
        "presence",
        "get_matrixfederationv1queryprofile",
        "get_matrixfederationv1querydirectory",
        "public-room-directory",
        "spaces",
        "get_matrixfederationv1timestamp_to_eventroomid",
        "content-repository",
        "checks-performed-on-receipt-of-a-pdu",
    }


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_each_test_is_shown_as_it_ends_on_a_terminal_only() -> None:
    """On a terminal, each result's line is printed as the test ends; into a pipe or a
    file, nothing (the table and the JSON say it all at the end)."""
    terminal = _Terminal()
    show = _progress(terminal, format_progress)
    assert show is not None
    clock = _clock()
    results = run_tests(FAKE, object(), concurrency=1, clock=clock, on_result=show)  # type: ignore[arg-type]
    printed = [line.split()[2] for line in terminal.getvalue().splitlines() if line[:1] != " "]
    assert printed == [r.id for r in results]
    assert _progress(io.StringIO(), format_progress) is None
