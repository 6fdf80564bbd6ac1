"""The request log: line format, non-blocking buffered writes, flush on shutdown."""

from __future__ import annotations

import json
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from stubserver.server.request_log import (
    FLUSH_BATCH_LINES,
    FLUSH_DELAY_SECONDS,
    MAX_KEPT_LINE_PARTS,
    MAX_LOGGED_BODY_BYTES,
    LineParts,
    ObservedRequest,
    RequestLog,
    WriterThread,
    encode_line,
    log_entry,
    observed_entry,
    observed_request,
)
from stubserver.server.router import request_annotations
from stubserver.signing.canonical_json import encode_json


class FakeThreads:
    """A thread runner whose 'threads' run only when the test says so."""

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[[], None], Deferred[None]]] = []

    def __call__(self, f: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.queue.append((f, d))
        return d

    def run_all(self) -> None:
        while self.queue:
            f, d = self.queue.pop(0)
            f()
            d.callback(None)


class ShutdownClock(Clock):
    """A Clock that records system event triggers, as a reactor would run them."""

    def __init__(self) -> None:
        super().__init__()
        self.triggers: list[tuple[str, str, Callable[..., Any], tuple[object, ...]]] = []

    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[..., Any], *args: object
    ) -> None:
        self.triggers.append((phase, eventType, callable, args))


def entry(n: int) -> dict[str, Any]:
    return log_entry(n, b"GET", b"/_matrix/x", 200, {})


class EntryTests(SynchronousTestCase):
    def test_only_matrix_paths_logged(self) -> None:
        """Requests outside /_matrix/ (e.g. .well-known) are not logged."""
        threads = FakeThreads()
        log = RequestLog(Path(tempfile.mkdtemp()) / "r.jsonl", Clock(), threads)
        dummy = DummyRequest([b".well-known", b"matrix", b"server"])
        dummy.uri = b"/.well-known/matrix/server"
        dummy.path = dummy.uri  # type: ignore[attr-defined]  # the real Request has it
        log(cast(IRequest, dummy), 200, {})
        self.successResultOf(log.close())
        assert threads.queue == []

    def test_entry_fields(self) -> None:
        """An entry carries exactly the contract's fields, filled from the annotations."""
        e = log_entry(
            1234,
            b"PUT",
            b"/_matrix/federation/v1/send/1?a=%20",
            401,
            {
                "origin": "o.test",
                "authenticated": False,
                "auth_error": "bad sig",
                "content": {"a": 1},
            },
        )
        assert e == (
            {
                "ts": 1234,
                "method": "PUT",
                "uri": "/_matrix/federation/v1/send/1?a=%20",
                "origin": "o.test",
                "authenticated": False,
                "auth_error": "bad sig",
                "status": 401,
                "content": {"a": 1},
            }
        )

    def test_entry_defaults(self) -> None:
        """Without annotations: no origin, not authenticated, no error, no content."""
        e = log_entry(1, b"GET", b"/x", 404, {})
        assert (e["origin"], e["authenticated"], e["auth_error"], e["content"]) == (
            None,
            False,
            None,
            None,
        )

    def test_lines_without_content_are_the_json_encoders_bytes(self) -> None:
        """A line without content (written by a format, issue 22) is byte for byte the
        JSON encoder's, whatever its strings hold; lone surrogates are escaped as before."""
        texts = ["", "a", 'q"uo\\te', "ctl\x00\x1f\x7f\n\t", "é中😀", "\u2028\u2029", "</x>"]
        for method in (b"GET", b"P\xffT"):
            for uri in [t.encode("utf-8") for t in texts] + [b"/bad\xff\xfe"]:
                for origin in [None, *texts]:
                    for auth_error in (None, "Missing Authorization headers", "\ud800"):
                        notes = {"origin": origin, "auth_error": auth_error}
                        entry = log_entry(1_700_000_000_123, method, uri, 401, notes)
                        line = encode_line(entry)
                        if auth_error == "\ud800":
                            assert b"\\ud800" in line
                        else:
                            assert line == encode_json(entry) + b"\n"
                        assert json.loads(line) == entry
        authenticated = log_entry(5, b"GET", b"/k", 200, {"origin": "o.test", "authenticated": 1})
        assert encode_line(authenticated) == encode_json(authenticated) + b"\n"
        for server in ("s1.test", "", 'q"\u00e9'):
            served = log_entry(5, b"GET", b"/k", 200, {"origin": "o.test", "server": server})
            assert encode_line(served) == encode_json(served) + b"\n"
            assert json.loads(encode_line(served))["server"] == server

    def test_an_observed_requests_line_is_its_entrys_line(self) -> None:
        """``ObservedRequest.line`` (formatted without the log object when there is no
        content, issue 22) is ``encode_line`` of its entry, for every kind of notes."""
        noted: list[dict[str, Any]] = [
            {},
            {"origin": None, "authenticated": False, "auth_error": None, "content": None},
            {"origin": "o.test", "authenticated": True, "auth_error": None, "content": None},
            {"origin": 'o\u00e9"', "authenticated": False, "auth_error": "bad \ud800"},
            {"origin": 5, "auth_error": ["not", "a", "string"]},
            {"content": {"pdus": []}, "body_bytes": 11, "origin": "o.test"},
            {"content": {"pdus": []}, "body_bytes": MAX_LOGGED_BODY_BYTES + 1},
            # The answering server's name (issue 23), in the line by a format too.
            {"origin": "o.test", "authenticated": True, "server": "s1.test"},
            {"server": 'S\u00e9"\ud800', "auth_error": "x"},
            {"server": None, "origin": "o.test"},
            {"server": 7},
        ]
        for notes in noted:
            for method, uri in ((b"GET", b"/_matrix/key/v2/server"), (b"P\xff", b"/\xfe?a=\xe9")):
                request: Any = DummyRequest([b"_matrix"])
                request.method, request.path, request.uri = method, b"/_matrix/x", uri
                request_annotations(request).update(notes)
                taken = observed_request(request, 401, Clock())
                assert taken is not None
                assert taken.line() == encode_line(taken.entry()), (notes, method, uri)
                kept: LineParts = {}
                assert taken.line(kept) == encode_line(taken.entry())
                later = taken._replace(ts_ms=1_700_000_000_456)  # made from the kept parts
                assert later.line(kept) == encode_line(later.entry()), (notes, method, uri)

    def test_the_line_parts_kept_are_bounded(self) -> None:
        """Requests to ever new URIs keep at most MAX_KEPT_LINE_PARTS line parts, and
        their lines stay right."""
        kept: LineParts = {}
        for n in range(MAX_KEPT_LINE_PARTS + 50):
            uri = b"/_matrix/federation/v1/send/%d" % n
            taken = ObservedRequest(n, b"PUT", uri, 200, {"origin": "o.test"})
            assert taken.line(kept) == encode_line(taken.entry())
            assert len(kept) <= MAX_KEPT_LINE_PARTS

    def test_only_the_logged_annotations_are_kept(self) -> None:
        """What an observer keeps holds the annotations the log reads and nothing else a
        handler left on the request."""
        request: Any = DummyRequest([b"_matrix"])
        request.path = request.uri = b"/_matrix/x"
        request_annotations(request).update(origin="o.test", big=object())
        taken = observed_request(request, 200, Clock())
        assert taken is not None and dict(taken.notes) == {"origin": "o.test"}
        request_annotations(request).clear()
        request_annotations(request).update(origin="o.test", authenticated=True)
        taken = observed_request(request, 200, Clock())
        assert taken is not None and dict(taken.notes) == {
            "origin": "o.test",
            "authenticated": True,
        }

    def test_lone_surrogate_in_content_is_escaped(self) -> None:
        """Content with a lone surrogate (from a ``\\ud800`` escape) is written escaped."""
        e = log_entry(1, b"POST", b"/_matrix/x", 200, {"content": {"k\udc00": "\ud800"}})
        line = encode_line(e)
        assert b"\\ud800" in line
        assert json.loads(line) == e

    def test_content_that_is_not_json_is_noted(self) -> None:
        """Content that is not JSON at all leaves the line whole: content null and a note."""
        e = log_entry(1, b"POST", b"/_matrix/x", 200, {"content": {"f": 1.5e400}})
        line = json.loads(encode_line(e))
        assert (line["content"], line["log_note"], line["status"]) == (
            None,
            "content is not JSON",
            200,
        )

    def test_what_an_observer_keeps_is_taken_once_per_request(self) -> None:
        """The request log and the request feed share what they keep of a request: taken
        once (its time included), not built by each observer (issue 22, key endpoint)."""
        request: Any = DummyRequest([b"_matrix", b"key", b"v2", b"server"])
        request.path = request.uri = b"/_matrix/key/v2/server"
        clock = Clock()
        first = observed_request(request, 200, clock)
        clock.advance(1)
        assert observed_request(request, 200, clock) is first
        assert first is not None and first.ts_ms == 0
        assert observed_request(request, 499, clock) is not first

    def test_a_body_over_the_cap_is_cut_with_a_note(self) -> None:
        """A request whose 8 MiB body was parsed is written as a short line: content null
        and a note giving the body's size (it was written whole, 8 MiB a line)."""
        pdus: list[dict[str, Any]] = [{}] * (8 * 1024 * 1024 // 3)
        raw = json.dumps({"pdus": pdus}, separators=(",", ":")).encode()
        request: Any = DummyRequest([b"_matrix", b"federation", b"v1", b"send", b"1"])
        request.path = request.uri = b"/_matrix/federation/v1/send/1"
        request.content = BytesIO(raw)
        request_annotations(request).update(content={"pdus": pdus}, body_bytes=len(raw))
        entry = observed_entry(request, 200, Clock())
        assert entry is not None
        line = encode_line(entry)
        assert len(line) < 1024
        assert (json.loads(line)["content"], json.loads(line)["log_note"]) == (
            None,
            f"content cut: the body was {len(raw)} bytes, over the {MAX_LOGGED_BODY_BYTES}"
            " bytes kept",
        )

    def test_a_body_at_the_cap_is_kept(self) -> None:
        """A body of exactly :data:`MAX_LOGGED_BODY_BYTES` is logged whole, without a note."""
        notes = {"content": {}, "body_bytes": MAX_LOGGED_BODY_BYTES}
        e = log_entry(1, b"PUT", b"/_matrix/x", 200, notes)
        assert (e["content"], "log_note" in e) == ({}, False)

    def test_non_utf8_uri_is_escaped(self) -> None:
        """A URI that is not UTF-8 is logged with backslash escapes, not lost."""
        assert (log_entry(1, b"GET", b"/\xff", 400, {})["uri"]) == "/\\xff"


class WriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(tempfile.mkdtemp()) / "requests.jsonl"
        self.reactor = ShutdownClock()
        self.threads = FakeThreads()
        self.log = RequestLog(self.path, self.reactor, self.threads)

    def lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def test_nothing_written_on_the_reactor_thread(self) -> None:
        """Recording and the flush timer only hand work to the thread runner."""
        self.log.record(entry(1))
        self.reactor.advance(FLUSH_DELAY_SECONDS)
        assert not self.path.exists()
        assert len(self.threads.queue) == 1
        self.threads.run_all()
        assert [x["ts"] for x in self.lines()] == [1]

    def test_timer_batches_lines(self) -> None:
        """Lines recorded within the flush interval are written as one batch."""
        for n in range(3):
            self.log.record(entry(n))
        assert self.threads.queue == []
        self.reactor.advance(FLUSH_DELAY_SECONDS)
        assert len(self.threads.queue) == 1
        self.threads.run_all()
        assert [x["ts"] for x in self.lines()] == [0, 1, 2]

    def test_line_handed_to_the_writer_within_50_ms(self) -> None:
        """Under light load a line goes to the writer within 50 ms of being recorded."""
        self.log.record(entry(1))
        self.reactor.advance(0.05)
        self.threads.run_all()
        assert [x["ts"] for x in self.lines()] == [1]

    def test_lines_batch_while_a_write_runs(self) -> None:
        """Lines recorded during a write go as one batch as soon as it ends, with no timer."""
        self.log.record(entry(1))
        self.reactor.advance(FLUSH_DELAY_SECONDS)
        for n in (2, 3, 4):
            self.log.record(entry(n))
        assert self.reactor.getDelayedCalls() == []
        f, d = self.threads.queue.pop(0)
        f()
        d.callback(None)
        assert len(self.threads.queue) == 1
        self.threads.run_all()
        assert [x["ts"] for x in self.lines()] == [1, 2, 3, 4]

    def test_full_batch_written_at_once(self) -> None:
        """A full batch goes to the writer without waiting for the timer."""
        for n in range(FLUSH_BATCH_LINES):
            self.log.record(entry(n))
        assert len(self.threads.queue) == 1

    def test_order_kept_while_writer_busy(self) -> None:
        """Lines recorded while a write runs follow it, in order, in the next batch."""
        self.log.record(entry(1))
        self.reactor.advance(FLUSH_DELAY_SECONDS)
        self.log.record(entry(2))
        self.reactor.advance(FLUSH_DELAY_SECONDS)
        assert len(self.threads.queue) == 1  # one write at a time
        self.threads.run_all()
        self.reactor.advance(FLUSH_DELAY_SECONDS)
        self.threads.run_all()
        assert [x["ts"] for x in self.lines()] == [1, 2]

    def test_shutdown_flushes_everything(self) -> None:
        """The before-shutdown trigger writes every buffered line, even mid-write."""
        self.log.install_shutdown_flush(self.reactor)
        self.log.record(entry(1))
        self.reactor.advance(FLUSH_DELAY_SECONDS)  # write of [1] in flight
        self.log.record(entry(2))
        self.log.record(entry(3))
        ((phase, event, trigger, args),) = self.reactor.triggers
        assert (phase, event) == ("before", "shutdown")
        d = trigger(*args)
        assert not d.called
        self.threads.run_all()
        self.successResultOf(d)
        assert [x["ts"] for x in self.lines()] == [1, 2, 3]

    def test_observed_and_recorded_lines_keep_their_order(self) -> None:
        """Requests the observer saw (their lines made when their batch goes, issue 22)
        and entries recorded directly are written in the order they came, each line as
        ``encode_line`` makes it."""
        requests = []
        for n in range(3):
            dummy = DummyRequest([b"_matrix", b"key", b"v2", b"server"])
            dummy.path = dummy.uri = b"/_matrix/key/v2/server/%d" % n  # type: ignore[attr-defined]
            requests.append(cast(IRequest, dummy))
        self.log(requests[0], 200, {})
        self.log.record(log_entry(7, b"PUT", b"/_matrix/r", 201, {}))
        self.log(requests[1], 404, {})
        self.reactor.advance(1)
        self.log(requests[2], 200, {})
        d = self.log.close()
        self.threads.run_all()
        self.successResultOf(d)
        assert [(x["uri"][-1], x["status"], x["ts"]) for x in self.lines()] == [
            ("0", 200, 0),
            ("r", 201, 7),
            ("1", 404, 0),
            ("2", 200, 1000),
        ]
        expected = encode_line(log_entry(1000, b"GET", b"/_matrix/key/v2/server/2", 200, {}))
        assert self.path.read_bytes().endswith(expected)

    def test_observer_reads_annotations(self) -> None:
        """As an observer, the log takes origin/auth/content from the request annotations."""
        dummy = DummyRequest([b"_matrix", b"federation", b"v1", b"x"])
        dummy.uri = b"/_matrix/federation/v1/x?q=1"
        dummy.path = b"/_matrix/federation/v1/x"  # type: ignore[attr-defined]
        request = cast(IRequest, dummy)
        request_annotations(request).update(
            origin="o.test", authenticated=True, auth_error=None, content=None
        )
        self.reactor.advance(5)
        self.log(request, 404, {"errcode": "M_UNRECOGNIZED"})
        d = self.log.close()
        self.threads.run_all()
        self.successResultOf(d)
        (line,) = self.lines()
        assert line == (
            {
                "ts": 5000,
                "method": "GET",
                "uri": "/_matrix/federation/v1/x?q=1",
                "origin": "o.test",
                "authenticated": True,
                "auth_error": None,
                "status": 404,
                "content": None,
            }
        )


class _Calls:
    """A reactor's ``callFromThread`` that queues the calls for the test thread."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[tuple[Callable[..., object], tuple[object, ...]]] = (
            queue.SimpleQueue()
        )

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.calls.put((f, args))

    def run_next(self) -> None:
        """Run the next call, waiting for it at most 10 s."""
        f, args = self.calls.get(timeout=10)
        f(*args)


class WriterThreadTests(SynchronousTestCase):
    def test_functions_run_in_order_off_the_calling_thread(self) -> None:
        """The writer runs each function in its own thread, in the order given, and fires
        each Deferred through the reactor's ``callFromThread``."""
        reactor = _Calls()
        writer = WriterThread(reactor)  # type: ignore[arg-type]
        ran: list[tuple[int, str]] = []
        done: list[int] = []

        def job(n: int) -> Callable[[], None]:
            return lambda: ran.append((n, threading.current_thread().name))

        def finished(_: None, n: int) -> None:
            done.append(n)

        for n in range(3):
            writer(job(n)).addCallback(finished, n)
        for _ in range(3):
            reactor.run_next()
        assert [n for n, _ in ran] == [0, 1, 2]
        assert {name for _, name in ran} == {"stubserver-request-log"}
        assert done == [0, 1, 2]

    def test_a_failed_function_fails_its_deferred(self) -> None:
        """An exception in the function reaches its Deferred's errback."""
        reactor = _Calls()
        writer = WriterThread(reactor)  # type: ignore[arg-type]

        def broken() -> None:
            raise OSError("disk full")

        d = writer(broken)
        reactor.run_next()
        failure = self.failureResultOf(d, OSError)  # type: ignore[no-untyped-call]
        assert failure.getErrorMessage() == "disk full"

    def test_a_write_is_reported_done_no_sooner_than_the_interval(self) -> None:
        """With ``min_interval_s`` a function is reported done no sooner than that after
        it started: lines that come in meanwhile gather into the next batch."""
        reactor = _Calls()
        writer = WriterThread(reactor, min_interval_s=0.05)  # type: ignore[arg-type]
        started = time.monotonic()
        d = writer(lambda: None)
        reactor.run_next()
        self.successResultOf(d)
        assert time.monotonic() - started >= 0.05

    def test_the_log_writes_through_the_writer_thread(self) -> None:
        """A RequestLog on a WriterThread appends its lines to the file, in order."""
        path = Path(tempfile.mkdtemp()) / "requests.jsonl"
        reactor = _Calls()
        clock = ShutdownClock()
        request_log = RequestLog(path, clock, WriterThread(reactor))  # type: ignore[arg-type]
        for n in range(3):
            request_log.record(entry(n))
        d = request_log.close()
        reactor.run_next()
        self.successResultOf(d)
        assert [json.loads(line)["ts"] for line in path.read_text().splitlines()] == [0, 1, 2]
