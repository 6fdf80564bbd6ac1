"""Work in slices: the reactor is handed back once a slice's time is spent."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from stubserver.slices import SLICE_SECONDS, TimeSlices
from tests.support import result_now


def test_within_a_slice_a_pause_returns_at_once() -> None:
    """While the slice's time is not spent, pause() returns without a reactor turn."""
    clock = Clock()
    slices = TimeSlices(clock)
    clock.advance(SLICE_SECONDS / 2)
    result_now(Deferred.fromCoroutine(slices.pause()))
    assert (slices.pauses, clock.getDelayedCalls()) == (0, [])


def test_a_slice_is_five_milliseconds() -> None:
    """The reactor is handed back once 5 ms are spent (issue 22: at 20 ms a slice per
    reactor turn of a /version on a new TLS connection added up to 60-80 ms of CPU)."""
    clock = Clock()
    slices = TimeSlices(clock)
    clock.advance(0.004)
    assert not slices.due()
    clock.advance(0.001)
    paused = Deferred.fromCoroutine(slices.pause())
    clock.advance(0)
    result_now(paused)
    assert slices.pauses == 1


def test_once_the_slice_is_spent_a_pause_waits_for_the_next_turn() -> None:
    """Once the slice's time is spent, pause() waits for a callLater(0) (other ready work
    runs first), then a new slice starts."""
    clock = Clock()
    slices = TimeSlices(clock)
    clock.advance(SLICE_SECONDS)
    paused = Deferred.fromCoroutine(slices.pause())
    assert not paused.called
    assert [call.getTime() for call in clock.getDelayedCalls()] == [clock.seconds()]
    clock.advance(0)
    result_now(paused)
    assert slices.pauses == 1
    result_now(Deferred.fromCoroutine(slices.pause()))
    assert slices.pauses == 1


def test_pause_now_hands_the_reactor_back_within_a_slice() -> None:
    """pause_now() waits for a callLater(0) even when the slice's time is not spent
    (before a step long in one go), and starts a new slice."""
    clock = Clock()
    slices = TimeSlices(clock)
    paused = Deferred.fromCoroutine(slices.pause_now())
    assert not paused.called
    clock.advance(0)
    result_now(paused)
    assert slices.pauses == 1
