"""The request log: one JSON object a line per inbound federation request.

Contract (DESIGN.md, "Request log")::

    {"ts": <ms>, "method": "GET", "uri": "/_matrix/...", "origin": <str or null>,
     "authenticated": true, "auth_error": null, "status": 200, "content": <body or null>}

plus ``server``, the name of the server that answered (``run`` serves several: issue 23).

:class:`RequestLog` is a :class:`stubserver.server.router.RequestObserver`: it reads what the
X-Matrix filter left in :func:`stubserver.server.router.request_annotations` (``origin``,
``authenticated``, ``auth_error``, ``content``). Lines are handed to a writer thread so
the reactor never blocks on the disk, and written strictly in order. The writer is one
long-lived thread of its own (:class:`WriterThread`), not the reactor's thread pool:
it writes at most once per :data:`FLUSH_DELAY_SECONDS` (see :class:`WriterThread`:
written as soon as the last write ended, lines of ten at a time cost the key endpoint a
quarter of its CPU; issue 22, bench/README.md).
Under light load a line goes to the writer :data:`FLUSH_DELAY_SECONDS` after its request
was answered (a test reading the log right after a response finds it within
:data:`FLUSH_DELAY_SECONDS` plus one write); under load, lines that arrive while a write
runs wait for it and go together as the next batch (or at once when
:data:`FLUSH_BATCH_LINES` are waiting).

A request that fault injection touched (``stubserver.server.faults``, issue 23) carries
``fault`` (``"failed"``, ``"dropped"``, ``"delayed"`` or ``"refused"``) and, when it was
delayed, ``delay_ms``; the others have neither field.

Bodies are kept up to :data:`MAX_LOGGED_BODY_BYTES` (64 KiB, the body cap of every endpoint
but the four that carry several PDUs): a larger body is logged with ``content`` null and a
``log_note`` saying how large it was and that it was cut (issue 22, row 1). Synapse keeps
no bodies at all; we keep them because tests read them, but an 8 MiB ``/send`` must not
cost 8 MiB of log line (nor of the control API's request feed, which keeps these objects).

No line is lost to its content: a value that cannot be encoded as UTF-8 JSON (a lone
surrogate from a ``\ud800`` escape in a body, say) is written with the string escaped
(``ensure_ascii``), and an entry that cannot be encoded at all is written with
``content`` null and a ``log_note`` saying why. On reactor shutdown (a ``before
shutdown`` trigger) every buffered line is written before the reactor goes on stopping.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorFromThreads,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from stubserver.server.router import MAX_REQUEST_BODY_BYTES, request_annotations
from stubserver.signing.canonical_json import encode_json

#: How long a line waits for companions before it is handed to the writer when no write is
#: running, in seconds (issue 12: a line must be on disk within 50 ms of the answer).
FLUSH_DELAY_SECONDS = 0.01
#: Lines that make a batch worth writing at once.
FLUSH_BATCH_LINES = 256
#: Most lines held in memory while the writer is busy; beyond it lines are dropped
#: (counted and reported) rather than growing without bound.
MAX_PENDING_LINES = 100_000
MS_PER_SECOND = 1000
#: Largest request body kept in a log line or the request feed, in bytes (counted as
#: received); a larger one is replaced by a ``log_note``.
MAX_LOGGED_BODY_BYTES = MAX_REQUEST_BODY_BYTES
#: Requests logged: the federation API (``/_matrix/federation/...``, ``/_matrix/key/...``).
LOGGED_PATH_PREFIX = b"/_matrix/"

log = Logger()

#: Runs a blocking function off the reactor thread; fires when it has returned.
ThreadRunner = Callable[[Callable[[], None]], Deferred[None]]


class ShutdownHooks(Protocol):
    """The part of ``IReactorCore`` the log uses to flush on shutdown."""

    def addSystemEventTrigger(
        self, phase: str, eventType: str, callable: Callable[..., Any], *args: object
    ) -> Any:
        """Call ``callable`` at ``phase`` of ``eventType``."""


def log_entry(
    ts_ms: int, method: bytes, uri: bytes, status: int, annotations: Mapping[str, Any]
) -> dict[str, Any]:
    """The log object for one request (pure).

    ``server`` (the name of the server that answered, noted by ``run``'s listeners,
    ``stubserver.app.hosting``) is added when noted: DESIGN.md's object plus one field.
    A body (``content``) that was over :data:`MAX_LOGGED_BODY_BYTES` as received
    (``body_bytes``, noted by whoever parsed it) is not kept: ``content`` is null and
    ``log_note`` says so.
    """
    body_bytes = annotations.get("body_bytes", 0)
    entry = {
        "ts": ts_ms,
        "method": method.decode("ascii", "backslashreplace"),
        "uri": uri.decode("utf-8", "backslashreplace"),
        "origin": annotations.get("origin"),
        "authenticated": bool(annotations.get("authenticated", False)),
        "auth_error": annotations.get("auth_error"),
        "status": status,
        "content": annotations.get("content"),
    }
    if "server" in annotations:
        entry["server"] = annotations["server"]
    fault = annotations.get("fault")
    if fault is not None:
        # What fault injection did to the request (stubserver.server.faults).
        entry["fault"] = fault
        if "delay_ms" in annotations:
            entry["delay_ms"] = annotations["delay_ms"]
    if body_bytes > MAX_LOGGED_BODY_BYTES:
        entry["content"] = None
        entry["log_note"] = (
            f"content cut: the body was {body_bytes} bytes,"
            f" over the {MAX_LOGGED_BODY_BYTES} bytes kept"
        )
    return entry


#: The parts of lines made: the line without its ``ts``, cut there (None: the line takes
#: the general path), by what the line is made of (:meth:`ObservedRequest.line`).
LineParts = dict[tuple[Any, ...], tuple[bytes, bytes] | None]


class ObservedRequest(NamedTuple):
    """What the request log and the request feed keep of one answered request, cheap to
    take (an immutable tuple: a third of a frozen dataclass's making): :meth:`entry`
    builds the log object from it (the feed builds it only when a control client reads
    it), :meth:`line` the log line. ``notes`` holds the annotations the log object reads,
    a body over :data:`MAX_LOGGED_BODY_BYTES` already left out (:func:`log_entry`'s rule)."""

    ts_ms: int
    method: bytes
    uri: bytes
    status: int
    notes: Mapping[str, Any]

    @property
    def kept_body_bytes(self) -> int:
        """The bytes of the body kept (0 when none is)."""
        if self.notes.get("content") is None:
            return 0
        body_bytes: int = self.notes.get("body_bytes", 0)
        return body_bytes if body_bytes <= MAX_LOGGED_BODY_BYTES else 0

    def entry(self) -> dict[str, Any]:
        """The log object (:func:`log_entry`)."""
        return log_entry(self.ts_ms, self.method, self.uri, self.status, self.notes)

    def line(self, kept: LineParts | None = None) -> bytes:
        """The log line, :func:`encode_line` of :meth:`entry`: a request without content
        (every GET) is formatted without the log object, or made from the parts in
        ``kept`` of the line of the same request at another time (issue 22; at most
        :data:`MAX_KEPT_LINE_PARTS` are kept there)."""
        if kept is None:
            kept = {}
        notes = self.notes
        if (
            notes.get("content") is None
            and notes.get("body_bytes", 0) <= MAX_LOGGED_BODY_BYTES
            and "fault" not in notes  # the general path writes what a fault did
        ):
            origin, auth_error = notes.get("origin"), notes.get("auth_error")
            server = notes.get("server")  # absent (None), or the answering server's name
            if (
                type(origin) in _STR_OR_NONE
                and type(auth_error) in _STR_OR_NONE
                and ("server" not in notes or type(server) is str)
            ):
                authenticated = bool(notes.get("authenticated", False))
                key = (
                    self.method,
                    self.uri,
                    self.status,
                    origin,
                    authenticated,
                    auth_error,
                    server,
                )
                parts = kept.get(key, _MISSING)
                if parts is _MISSING:
                    parts = _line_parts(
                        auth_error=auth_error,
                        authenticated=authenticated,
                        method=self.method.decode("ascii", "backslashreplace"),
                        origin=origin,
                        server=server,
                        status=self.status,
                        uri=self.uri.decode("utf-8", "backslashreplace"),
                    )
                    if len(kept) >= MAX_KEPT_LINE_PARTS:
                        kept.clear()
                    kept[key] = parts
                if parts is not None and type(self.ts_ms) is int:
                    head, tail = cast(tuple[bytes, bytes], parts)
                    return head + b"%d" % self.ts_ms + tail
        return encode_line(self.entry())


#: Most line parts :meth:`ObservedRequest.line` keeps (then it starts again).
MAX_KEPT_LINE_PARTS = 256
_MISSING = object()


#: The key of :func:`request_annotations` under which :func:`observed_request` keeps
#: what it took, so that the log and the feed take it once per request.
_OBSERVED_KEY = "_observed"
_NOTE_KEYS = (
    "origin",
    "authenticated",
    "auth_error",
    "content",
    "body_bytes",
    "server",
    "fault",
    "delay_ms",
)
_NOTE_KEY_SET = frozenset(_NOTE_KEYS)


def observed_request(request: IRequest, status: int, clock: IReactorTime) -> ObservedRequest | None:
    """What an observer keeps of ``request``, answered ``status`` (taken once per request
    and answer, then shared); None outside the Matrix paths (e.g.
    /.well-known/matrix/server on a well_known listener)."""
    if not request.path.startswith(LOGGED_PATH_PREFIX):
        return None
    annotations = request_annotations(request)
    taken: ObservedRequest | None = annotations.get(_OBSERVED_KEY)
    if taken is not None and taken.status == status:
        return taken
    if annotations.keys() <= _NOTE_KEY_SET:
        notes = dict(annotations)  # the usual case (the X-Matrix filter's notes), in C
    else:
        notes = {k: annotations[k] for k in _NOTE_KEYS if k in annotations}
    if notes.get("body_bytes", 0) > MAX_LOGGED_BODY_BYTES:
        notes.pop("content", None)  # not kept: log_entry notes the cut
    taken = ObservedRequest(
        int(clock.seconds() * MS_PER_SECOND), request.method, request.uri, status, notes
    )
    annotations[_OBSERVED_KEY] = taken
    return taken


def observed_entry(request: IRequest, status: int, clock: IReactorTime) -> dict[str, Any] | None:
    """The log object of a request an observer was told about, answered ``status``; None
    outside the Matrix paths (e.g. /.well-known/matrix/server on a well_known listener)."""
    taken = observed_request(request, status, clock)
    return None if taken is None else taken.entry()


#: The line of an entry without content (most requests: every GET), keys in
#: ``encode_json``'s order, up to its ``ts`` and after it; :func:`encode_line` fills them
#: in without the JSON encoder.
_LINE_HEAD = '{"auth_error":%s,"authenticated":%s,"content":null,"method":%s,"origin":%s,'
#: The ``server`` field (issue 23), between ``origin`` and ``status`` in that order.
_LINE_SERVER = '"server":%s,'
_LINE_STATUS = '"status":%d,"ts":'
_LINE_TAIL = ',"uri":%s}\n'
_LINE_KEYS = frozenset(
    ("ts", "method", "uri", "origin", "authenticated", "auth_error", "status", "content")
)
_LINE_KEYS_WITH_SERVER = _LINE_KEYS | {"server"}


def _json_text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _line_without_content_fast(entry: Mapping[str, Any]) -> bytes | None:
    """:func:`encode_line` of an entry of the usual shape without content, by a format
    (issue 22: the JSON encoder took ~3 us of every logged key request); None when the
    entry is of another shape."""
    keys = entry.keys()
    if keys not in (_LINE_KEYS, _LINE_KEYS_WITH_SERVER) or entry["content"] is not None:
        return None
    method, uri, authenticated = entry["method"], entry["uri"], entry["authenticated"]
    if type(method) is not str or type(uri) is not str or type(authenticated) is not bool:
        return None
    server = entry.get("server")
    if "server" in entry and type(server) is not str:
        return None
    return _format_line(
        auth_error=entry["auth_error"],
        authenticated=authenticated,
        method=method,
        origin=entry["origin"],
        server=server,
        status=entry["status"],
        ts=entry["ts"],
        uri=uri,
    )


def _format_line(
    *,
    auth_error: object,
    authenticated: bool,
    method: str,
    origin: object,
    server: str | None,
    status: object,
    ts: object,
    uri: str,
) -> bytes | None:
    """The line of an entry without content from its values, byte for byte
    ``encode_json``'s; None when a value is not of the usual type or a string holds a
    lone surrogate (the general path escapes it)."""
    if type(ts) is not int:
        return None
    parts = _line_parts(
        auth_error=auth_error,
        authenticated=authenticated,
        method=method,
        origin=origin,
        server=server,
        status=status,
        uri=uri,
    )
    return None if parts is None else parts[0] + b"%d" % ts + parts[1]


def _line_parts(
    *,
    auth_error: object,
    authenticated: bool,
    method: str,
    origin: object,
    server: str | None,
    status: object,
    uri: str,
) -> tuple[bytes, bytes] | None:
    """:func:`_format_line`'s line without its ``ts``: the bytes before and after it
    (``server`` None: the line has no ``server`` field)."""
    if (
        type(origin) not in _STR_OR_NONE
        or type(auth_error) not in _STR_OR_NONE
        or type(status) is not int
    ):
        return None
    head = _LINE_HEAD % (
        _json_text(cast(str | None, auth_error)),
        "true" if authenticated else "false",
        encode_basestring(method),
        _json_text(cast(str | None, origin)),
    )
    if server is not None:
        head += _LINE_SERVER % encode_basestring(server)
    head += _LINE_STATUS % status
    try:
        return head.encode("utf-8"), (_LINE_TAIL % encode_basestring(uri)).encode("utf-8")
    except UnicodeEncodeError:
        return None


_STR_OR_NONE = (str, type(None))


def encode_line(entry: Mapping[str, Any]) -> bytes:
    """One log line: compact JSON and a newline; never raises (pure).

    Strings that are not valid Unicode (lone surrogates) are written as ``\\uXXXX``
    escapes; an entry that is not JSON at all keeps its fields with ``content`` null and a
    ``log_note`` saying why.
    """
    fast = _line_without_content_fast(entry)
    if fast is not None:
        return fast
    try:
        return encode_json(entry) + b"\n"
    except UnicodeEncodeError:
        pass
    except (ValueError, TypeError, RecursionError):
        return _line_without_content(entry, "content is not JSON")
    try:
        return (
            json.dumps(entry, ensure_ascii=True, sort_keys=True, separators=(",", ":")).encode(
                "ascii"
            )
            + b"\n"
        )
    except (ValueError, TypeError, RecursionError):
        return _line_without_content(entry, "content is not JSON")


def _line_without_content(entry: Mapping[str, Any], note: str) -> bytes:
    safe = {
        k: (v if v is None or isinstance(v, (bool, int)) else str(v))
        for k, v in entry.items()
        if k != "content"
    }
    safe["content"] = None
    safe["log_note"] = note
    return (
        json.dumps(safe, ensure_ascii=True, sort_keys=True, separators=(",", ":")).encode("ascii")
        + b"\n"
    )


def append_lines(path: Path, lines: list[bytes]) -> None:
    """Append ``lines`` to ``path`` (blocking: run it in a thread). Three system calls
    and no buffered file object: each call in a thread gives up and takes back the GIL."""
    data = memoryview(b"".join(lines))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


class WriterThread:
    """A :data:`ThreadRunner` of one thread of its own, started on the first call: it
    runs the functions given in order and fires each one's Deferred on the reactor
    (``callFromThread``). A hand-over is one ``SimpleQueue.put``. The thread is a daemon
    waiting for work: the log's shutdown flush waits for its last write, so nothing
    is lost when the process exits.

    Each function's Deferred fires no sooner than ``min_interval_s`` after the function
    started (the thread waits out the rest, off the GIL): under load the log's lines
    then gather into one batch per interval instead of one per write. Every time the
    writer thread takes the GIL back (after each system call) the reactor thread gives
    it up and waits; writes of ten lines each cost the key endpoint about 30 us of CPU
    per request (issue 22, bench/README.md).
    """

    def __init__(self, reactor: IReactorFromThreads, min_interval_s: float = 0.0) -> None:
        self._reactor = reactor
        self._min_interval_s = min_interval_s
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], Deferred[None]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def __call__(self, f: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._work, name="stubserver-request-log", daemon=True
            )
            self._thread.start()
        self._jobs.put((f, d))
        return d

    def _work(self) -> None:
        while True:
            f, d = self._jobs.get()
            started = time.monotonic()
            failure = None
            try:
                f()
            except BaseException:
                failure = Failure()  # type: ignore[no-untyped-call]
            rest = self._min_interval_s - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)
            if failure is None:
                self._reactor.callFromThread(d.callback, None)
            else:
                self._reactor.callFromThread(d.errback, failure)


class RequestLog:
    """Writes one line per request to ``path`` without blocking the reactor.

    ``clock`` schedules flushes and gives timestamps; ``run_in_thread`` runs the blocking
    writes. Call :meth:`install_shutdown_flush` with the reactor so that no line is lost
    on shutdown, or :meth:`close` yourself.
    """

    def __init__(self, path: Path, clock: IReactorTime, run_in_thread: ThreadRunner) -> None:
        self._path = path
        self._clock = clock
        self._run_in_thread = run_in_thread
        #: Lines waiting for the writer, or what they are made of (made in one go when
        #: their batch goes: a loop over a batch costs less than a line per request).
        self._pending: list[bytes | ObservedRequest] = []
        self._line_parts: LineParts = {}
        self._timer: IDelayedCall | None = None
        self._writing: Deferred[None] | None = None
        self._dropped = 0
        self._closed = False

    def install_shutdown_flush(self, reactor: ShutdownHooks) -> None:
        """Flush every buffered line before ``reactor`` shuts down."""
        reactor.addSystemEventTrigger("before", "shutdown", self.close)

    def __call__(self, request: IRequest, status: int, body: Any) -> None:
        """The observer: log ``request`` answered with ``status`` (Matrix paths only)."""
        taken = observed_request(request, status, self._clock)
        if taken is not None:
            self._buffer(taken)  # its line is made with its batch's (issue 22)

    def record(self, entry: Mapping[str, Any]) -> None:
        """Buffer one entry; with no write running it goes within :data:`FLUSH_DELAY_SECONDS`."""
        self._buffer(encode_line(entry))

    def _buffer(self, line: bytes | ObservedRequest) -> None:
        if len(self._pending) >= MAX_PENDING_LINES:
            self._dropped += 1
            return
        self._pending.append(line)
        if self._closed or len(self._pending) >= FLUSH_BATCH_LINES:
            self._start_write()
        elif self._timer is None and self._writing is None:
            self._timer = self._clock.callLater(FLUSH_DELAY_SECONDS, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._start_write()

    def _start_write(self) -> None:
        if self._writing is not None or not self._pending:
            return  # the running write starts the next batch when it is done
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        pending, self._pending = self._pending, []
        kept = self._line_parts
        batch = [item if isinstance(item, bytes) else item.line(kept) for item in pending]
        if self._dropped:
            log.error(
                "Request log: {dropped} lines dropped, the writer could not keep up",
                dropped=self._dropped,
            )
            self._dropped = 0
        path = self._path
        d = self._run_in_thread(lambda: append_lines(path, batch))
        self._writing = d

        def failed(failure: Failure) -> None:
            log.failure("Request log: writing {path} failed", failure, path=str(path))

        def done(_: None) -> None:
            self._writing = None
            # Lines that came in during the write are the next batch: they go now, so that
            # under load each line waits at most one write.
            self._start_write()

        d.addErrback(failed)
        d.addCallback(done)

    def close(self) -> Deferred[None]:
        """Write every buffered line; fires when all are on disk."""
        self._closed = True
        self._start_write()
        return self._drained()

    def _drained(self) -> Deferred[None]:
        writing = self._writing
        if writing is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()

        def again(result: object) -> object:
            # Runs after the write's own bookkeeping (added earlier), which may have
            # started the next batch: wait for that one too.
            self._drained().chainDeferred(waiter)
            return result

        writing.addBoth(again)
        return waiter
