"""Fault injection: one server made down, slow, lossy or failing at run time (issue 23).

A :class:`ServerFaults` belongs to one server (today's single server; after the
multi-server composition, one per virtual server) and is switched through the control API
(``stubserver.control.faults_api``). It acts on the server's federation listeners only,
never on the control listener, and on ``/_matrix/...`` requests only:

- **down** (:attr:`FaultSettings.down`): connections refused. ``True``: where the server
  has listeners of its own (:meth:`ServerFaults.attach_listeners`), they stop listening
  (a client sees a real ``ECONNREFUSED``, which nobody can count: the kernel answers it)
  and listen again on the same ports on recovery; without them, as ``"reset"``.
  ``"reset"``: the listeners stay open and every connection is reset as it is accepted
  (before any TLS handshake), counted in ``connections_refused``: the way a server on
  shared listeners is down (a dispatcher consults :attr:`ServerFaults.down` and calls
  :meth:`ServerFaults.reset_connection`). Either way the connections already open are
  closed (counted in ``connections_closed``), and a request that still arrives while the
  server is down is reset too (fault ``"refused"``).
- **slow** (:attr:`FaultSettings.latency_ms`): every request is handled that long after
  it arrived (a timer on the clock, never a sleep), at most :data:`MAX_LATENCY_MS`. The
  latency counts against the listener's handler deadline (60 s,
  ``stubserver.server.limits``): a request whose latency and handling together pass it
  is answered 504.
- **dropped** (:attr:`FaultSettings.drop_share`): that share of requests is reset
  without an answer.
- **failing** (:attr:`FaultSettings.fail`): requests whose path matches one of the rule's
  globs (``fnmatch``, ``*`` crossing ``/``) are answered with its 4xx or 5xx status and
  ``{"errcode": <the rule's errcode, M_UNKNOWN by default>, "error": "injected fault"}``,
  for the rule's share of them (a 404 ``M_NOT_FOUND`` on ``make_join`` is a server that
  does not know the room).

Shares are drawn from the RNG given (seedable: :meth:`ServerFaults.seed`), so a test that
seeds it sees the same requests dropped or failed every run. A dropped or failed request
and a delayed one still reach the request observers (the request log, the control API's
feed) with the annotation ``fault`` (``"dropped"``, ``"failed"``, ``"refused"`` or
``"delayed"``; the first three win over ``"delayed"``) and ``delay_ms`` when delayed; a
dropped one is observed with status 499 (no answer was sent). :meth:`ServerFaults.gate` is
the :class:`~stubserver.server.router.RequestFilter` that does this: put it after the
X-Matrix filter, so that the observers see who sent what was dropped.
"""

from __future__ import annotations

import contextlib
import fnmatch
import random
import re
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from stubserver.server.router import MatrixError, request_annotations

if TYPE_CHECKING:
    from stubserver.server.limits import LimitedSite

#: Longest added latency, in milliseconds.
MAX_LATENCY_MS: Final = 60_000
#: Most route globs one ``fail`` rule may name, and the longest glob, in characters.
MAX_FAIL_ROUTES: Final = 32
MAX_ROUTE_GLOB_CHARS: Final = 256
#: The statuses a ``fail`` rule may answer (client and server errors).
FAIL_STATUSES: Final = range(400, 600)
#: The longest errcode a ``fail`` rule may answer, in characters.
MAX_ERRCODE_CHARS: Final = 64
#: The requests faults act on (the federation API: what the request log logs).
FAULTY_PATH_PREFIX: Final = b"/_matrix/"
#: The error body of a failed request.
INJECTED_ERRCODE: Final = "M_UNKNOWN"
INJECTED_ERROR: Final = "injected fault"
MS_PER_SECOND: Final = 1000

#: What :attr:`FaultSettings.down` holds: False (up), True (refused), "reset".
DownMode = bool | Literal["reset"]
#: The annotation ``fault`` of a request a fault acted on.
FaultKind = Literal["dropped", "failed", "refused", "delayed"]

log = Logger()


@dataclass(frozen=True)
class FailRule:
    """Answer ``status`` with ``errcode`` to ``share`` of the requests whose path matches
    a glob of ``routes`` (empty: every request)."""

    status: int
    routes: tuple[str, ...] = ()
    share: float = 1.0
    errcode: str = INJECTED_ERRCODE
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = "|".join(fnmatch.translate(glob) for glob in self.routes)
        object.__setattr__(self, "_pattern", re.compile(pattern) if self.routes else None)

    def matches(self, path: str) -> bool:
        """Whether the rule covers a request to ``path`` (pure)."""
        return self._pattern is None or self._pattern.match(path) is not None

    def to_json(self) -> dict[str, Any]:
        """The rule as the control API shows it (and accepts it back)."""
        shown: dict[str, Any] = {"status": self.status, "share": self.share}
        if self.errcode != INJECTED_ERRCODE:
            shown["errcode"] = self.errcode
        if self.routes:
            shown["routes"] = list(self.routes)
        return shown


@dataclass(frozen=True)
class FaultSettings:
    """The faults of one server; the defaults are none."""

    down: DownMode = False
    latency_ms: int = 0
    drop_share: float = 0.0
    fail: FailRule | None = None

    def to_json(self) -> dict[str, Any]:
        """The settings as the control API shows them (and accepts them back)."""
        return {
            "down": self.down,
            "latency_ms": self.latency_ms,
            "drop_share": self.drop_share,
            "fail": None if self.fail is None else self.fail.to_json(),
        }


NO_FAULTS: Final = FaultSettings()


@dataclass(frozen=True)
class RequestFault:
    """What the faults do to one request: wait ``delay_ms``, then drop it, fail it with
    ``status`` and ``errcode``, or (``outcome`` None) serve it."""

    delay_ms: int = 0
    outcome: Literal["dropped", "failed", "refused"] | None = None
    status: int = 0
    errcode: str = INJECTED_ERRCODE

    @property
    def kind(self) -> FaultKind | None:
        """The request's ``fault`` annotation (None: untouched)."""
        if self.outcome is not None:
            return self.outcome
        return "delayed" if self.delay_ms else None


UNTOUCHED: Final = RequestFault()


def decide(settings: FaultSettings, path: str, draw: Callable[[], float]) -> RequestFault:
    """What ``settings`` do to a request to ``path`` (pure but for ``draw``, the RNG's
    ``random``: called once per share that is neither 0 nor 1).

    Down wins, then dropped, then failed; the latency applies to every one of them.
    """
    if settings.down:
        return RequestFault(outcome="refused")
    delay = settings.latency_ms
    if _drawn(settings.drop_share, draw):
        return RequestFault(delay, "dropped")
    rule = settings.fail
    if rule is not None and rule.matches(path) and _drawn(rule.share, draw):
        return RequestFault(delay, "failed", rule.status, rule.errcode)
    return RequestFault(delay) if delay else UNTOUCHED


def _drawn(share: float, draw: Callable[[], float]) -> bool:
    if share <= 0:
        return False
    return share >= 1 or draw() < share


@dataclass
class FaultCounters:
    """What the faults did since start-up (never reset)."""

    connections_refused: int = 0
    connections_closed: int = 0
    requests_dropped: int = 0
    requests_failed: int = 0
    requests_delayed: int = 0

    def to_json(self) -> dict[str, int]:
        """The counters as the control API shows them."""
        return dict(vars(self))


class ListenerControl(Protocol):
    """A server's own federation listeners: closed while it is down (``stubserver.app``)."""

    def close(self) -> Deferred[None]:
        """Stop listening; fires once every socket is closed."""

    def reopen(self) -> None:
        """Listen again on the same addresses and ports; raises ListenerReopenFailed."""


class ListenerReopenFailed(Exception):
    """The listeners could not listen again (the port was taken meanwhile, say)."""


class _Channel(Protocol):
    """The part of a ``LimitedHTTPChannel`` the faults use."""

    site: LimitedSite
    transport: Any


def reset_transport(transport: Any) -> None:
    """Abort ``transport`` with a TCP reset (``SO_LINGER`` 0) rather than a FIN.

    A TLS transport wraps the TCP one (``.transport``); the socket is the innermost
    handle. Where there is no socket (an in-memory transport), it is only aborted.
    """
    inner = transport
    for _ in range(4):  # TLS over TCP is two levels; never loop for ever
        handle = getattr(inner, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            # An OSError: already closed; the abort below still ends it.
            with contextlib.suppress(OSError):
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            break
        inner = getattr(inner, "transport", None)
        if inner is None:
            break
    transport.abortConnection()


class ServerFaults:
    """The faults of one server, what they did, and the hooks that apply them.

    ``clock`` times the latency; ``rng`` draws the shares (:meth:`seed` makes it
    deterministic). Hooks: :meth:`gate` (a request filter), :meth:`attach_sites` (the
    federation sites: their connections are reset while down, and closed on going down),
    :meth:`attach_listeners` (listeners of its own, closed while down).
    """

    def __init__(self, clock: IReactorTime, rng: random.Random) -> None:
        self._clock = clock
        self._rng = rng
        self.settings: FaultSettings = NO_FAULTS
        self.counters = FaultCounters()
        self._sites: list[LimitedSite] = []
        self._listeners: ListenerControl | None = None
        #: Whether the own listeners are closed now.
        self.listeners_closed = False
        self._switching = DeferredLock()

    # -- hooks ---------------------------------------------------------------------------

    def attach_sites(self, sites: Iterable[LimitedSite]) -> None:
        """The server's federation sites: their accepted connections consult us."""
        for site in sites:
            site.faults = self
            self._sites.append(site)

    def attach_listeners(self, listeners: ListenerControl) -> None:
        """The server's own federation listeners: ``down`` closes them."""
        self._listeners = listeners

    @property
    def down(self) -> bool:
        """Whether the server is down (a dispatcher on shared listeners resets its
        connections then: :meth:`reset_connection`)."""
        return bool(self.settings.down)

    def admits_connection(self, transport: Any) -> bool:
        """Called as a connection is accepted: False (and the connection reset, counted)
        while the server is down."""
        if not self.down:
            return True
        self.reset_connection(transport)
        return False

    def reset_connection(self, transport: Any) -> None:
        """Reset a connection to this server while it is down, and count it."""
        self.counters.connections_refused += 1
        reset_transport(transport)

    def gate(self, request: IRequest) -> Deferred[None] | None:
        """The request filter applying the faults to one request (module docstring)."""
        settings = self.settings
        if settings is NO_FAULTS or not request.path.startswith(FAULTY_PATH_PREFIX):
            return None
        fault = decide(settings, request.path.decode("utf-8", "replace"), self._rng.random)
        kind = fault.kind
        if kind is None:
            return None
        notes = request_annotations(request)
        notes["fault"] = kind
        if fault.outcome == "refused":
            self.counters.connections_refused += 1
            return self._abort(request)
        if fault.delay_ms:
            notes["delay_ms"] = fault.delay_ms
            self.counters.requests_delayed += 1
        if fault.outcome == "dropped":
            self.counters.requests_dropped += 1
        elif fault.outcome == "failed":
            self.counters.requests_failed += 1
        if not fault.delay_ms:
            return self._act(request, fault)
        delayed: Deferred[None] = deferLater(self._clock, fault.delay_ms / MS_PER_SECOND, _nothing)
        return delayed.addCallback(lambda _: self._act(request, fault))

    def _act(self, request: IRequest, fault: RequestFault) -> Deferred[None] | None:
        if fault.outcome == "dropped":
            return self._abort(request)
        if fault.outcome == "failed":
            raise MatrixError(fault.status, fault.errcode, INJECTED_ERROR)
        return None

    @staticmethod
    def _abort(request: IRequest) -> Deferred[None]:
        """Reset the request's connection; the Deferred never fires (the router cancels
        it when the connection is lost, and tells its observers)."""
        channel = getattr(request, "channel", None)
        transport = getattr(channel, "transport", None)
        if transport is not None:
            reset_transport(transport)
        return Deferred()

    # -- switching -------------------------------------------------------------------------

    def seed(self, value: int) -> None:
        """Restart the share draws from ``value``."""
        self._rng.seed(value)

    def apply(self, settings: FaultSettings) -> Deferred[None]:
        """Switch to ``settings``; fires once they hold (down: the listeners are closed and
        the open connections with them; up again: listening). Fails with
        ListenerReopenFailed when the listeners cannot listen again (still down then).
        Switches run one at a time, in order."""
        return self._switching.run(self._apply, settings)

    def _apply(self, settings: FaultSettings) -> Deferred[None]:
        keep_closed = settings.down is True and self._listeners is not None
        if self.listeners_closed and not keep_closed:
            assert self._listeners is not None
            self._listeners.reopen()  # ListenerReopenFailed: still down, settings kept
            self.listeners_closed = False
            log.info("Up again: the federation listeners listen")
        self.settings = settings
        if settings.down:
            self._close_open_connections()
        if keep_closed and not self.listeners_closed:
            assert self._listeners is not None
            self.listeners_closed = True
            log.info("Down: the federation listeners are closed")
            return self._listeners.close()
        return succeed(None)

    def _close_open_connections(self) -> None:
        channels: list[_Channel] = []
        seen: set[int] = set()
        for site in self._sites:
            if id(site.connections) in seen:
                continue
            seen.add(id(site.connections))
            counted = cast(Iterable[_Channel], site.connections.channels)
            channels += [c for c in counted if c.site in self._sites]
        for channel in channels:
            if channel.transport is not None:
                self.counters.connections_closed += 1
                reset_transport(channel.transport)

    def to_json(self) -> dict[str, Any]:
        """``{"faults": ..., "counters": ..., "listening": ...}``: the control API's answer."""
        return {
            "faults": self.settings.to_json(),
            "counters": self.counters.to_json(),
            "listening": not self.listeners_closed,
        }


def _nothing() -> None:
    return None
