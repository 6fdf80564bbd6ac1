"""Long work done in slices, so that the reactor answers other requests in between.

A ``/send`` of 50 large PDUs is seconds of work in the reactor thread; done in one go, every
other request waits (issue 22: ``/version`` unanswered for 754 ms during signed 3 MB
transactions). :class:`TimeSlices` is the cooperative alternative: the loop over the work
asks :meth:`TimeSlices.pause` between items, which hands the reactor back once the slice's
time is spent (``callLater(0)``: every ready socket is served first), as
``twisted.internet.task.cooperate`` does with its 10 ms slices. Items stay in order and the
caller's answer still comes after the last one.
"""

from __future__ import annotations

from typing import Final

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

#: Longest stretch of work before the reactor is handed back, in seconds, for work on a
#: request body of megabytes. A request such as ``/version`` on a new TLS connection
#: needs 3-4 reactor turns (accept, the two handshake reads, the request), each of which
#: may wait a slice: at 20 ms, that was 60-80 ms of CPU, 140-258 ms on the busy 2-core
#: machine (issue 22, the soak's longest ``/version``).
SLICE_SECONDS: Final = 0.005
#: The slice for the work on a small body (at most ``SMALL_BODY_BYTES``: an ordinary
#: /send of 50 PDUs, ~10 ms in all), which holds the reactor little however it is cut:
#: every pause costs a turn, and in a turn the control API's long-polls are answered
#: (issue 22: at 5 ms, 25-40 % more answers to the benchmark's watcher, which cost back
#: what the garbage collector's change had saved).
SMALL_BODY_SLICE_SECONDS: Final = 0.02
#: Bodies up to this size get :data:`SMALL_BODY_SLICE_SECONDS` (they are also parsed in
#: one go: ``stubserver.auth.filter.SLICED_PARSE_BYTES`` is the same size).
SMALL_BODY_BYTES: Final = 256 * 1024


def slice_seconds_for(body_bytes: int) -> float:
    """The slice for the work on a body of ``body_bytes`` (the two constants above)."""
    return SMALL_BODY_SLICE_SECONDS if body_bytes <= SMALL_BODY_BYTES else SLICE_SECONDS


class TimeSlices:
    """Cut a loop into slices of ``seconds`` of ``clock`` time (module docstring);
    ``pauses`` counts the times the reactor was handed back."""

    def __init__(self, clock: IReactorTime, seconds: float = SLICE_SECONDS) -> None:
        self._clock = clock
        self._seconds = seconds
        self._started = clock.seconds()
        self.pauses = 0

    def due(self) -> bool:
        """True when this slice's time is spent."""
        return self._clock.seconds() - self._started >= self._seconds

    async def pause(self) -> None:
        """Hand the reactor back when this slice's time is spent (one ``callLater(0)``),
        and start a new slice; else return at once."""
        if not self.due():
            return
        await self.pause_now()

    async def pause_now(self) -> None:
        """Hand the reactor back now (one ``callLater(0)``), and start a new slice: before
        a step that is long in one go, so that it does not add to a slice already begun."""
        await _next_turn(self._clock)
        self.pauses += 1
        self._started = self._clock.seconds()


def _next_turn(clock: IReactorTime) -> Deferred[None]:
    return deferLater(clock, 0, lambda: None)
