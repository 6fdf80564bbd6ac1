"""Run ``stubserver`` with a reactor-turn timer (issue 22, the ``/version`` stall).

    python scripts/turn_timer.py OUT run -c CONFIG

A turn is what the reactor does between two looks at its sockets (the epoll waits): the
timed calls that are due, then the handling of every ready socket. A request that
arrives meanwhile waits for the rest of the turn, so the longest turn is the floor of
the longest ``/version`` answer. Each turn is timed on the wall clock and on the
process's CPU time, with the garbage collector's share; while it runs, the Python stack
is sampled on CPU time (``ITIMER_PROF``, once a kernel tick in practice) to say where
the time went. On SIGUSR2 the longest :data:`TOP` turns since the last dump are written
to OUT (JSON, replaced whole) and the count starts again; the soak asks after each case.

Not a test and not part of the server: a launcher for ``scripts/soak.py --rooms``.
"""

from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import sys
import time
from collections import Counter
from types import FrameType
from typing import Any

#: Turns kept per dump.
TOP = 5
#: The sampling interval asked of ITIMER_PROF, in seconds of CPU.
SAMPLE_SECONDS = 0.001
#: Frames of the project, as sampled stacks name them.
PROJECT = os.sep + "stubserver" + os.sep


def _where(frame: FrameType | None) -> str:
    """The innermost frame and the innermost frame of the project, as one label."""
    if frame is None:
        return "?"
    leaf = f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)})"
    while frame is not None and PROJECT not in frame.f_code.co_filename:
        frame = frame.f_back
    if frame is None:
        return leaf
    code = frame.f_code
    own = f"{code.co_filename.rsplit(PROJECT, 1)[-1]}:{code.co_name}"
    return leaf if own in leaf else f"{leaf} < {own}"


class TurnTimer:
    """The turns of one reactor (module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.longest: list[dict[str, Any]] = []
        self.turns = 0
        self.samples: Counter[str] = Counter()
        self.gc_seconds = 0.0
        self.gc_longest = 0.0
        self._gc_started = 0.0
        self._started: tuple[float, float] | None = None

    def install(self, reactor: Any) -> None:
        timer = self

        class Poller:
            """The reactor's epoll object, with its waits marking the turns."""

            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def poll(self, *args: Any) -> Any:
                timer.turn_ended()
                try:
                    return self.inner.poll(*args)
                finally:
                    timer.turn_started()

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

        reactor._poller = Poller(reactor._poller)
        gc.callbacks.append(self._collected)
        signal.signal(signal.SIGPROF, self._sample)
        signal.signal(signal.SIGUSR2, self._dump)
        signal.setitimer(signal.ITIMER_PROF, SAMPLE_SECONDS, SAMPLE_SECONDS)

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        if self._started is not None:
            self.samples[_where(frame)] += 1

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            spent = time.perf_counter() - self._gc_started
            self.gc_seconds += spent
            self.gc_longest = max(self.gc_longest, spent)

    def turn_started(self) -> None:
        self._started = (time.perf_counter(), time.process_time())
        self.samples.clear()
        self.gc_seconds = self.gc_longest = 0.0

    def turn_ended(self) -> None:
        if self._started is None:
            return
        wall = time.perf_counter() - self._started[0]
        cpu = time.process_time() - self._started[1]
        self._started = None
        self.turns += 1
        if len(self.longest) >= TOP and wall <= self.longest[-1]["wall_ms"] / 1000:
            return
        self.longest.append(
            {
                "wall_ms": round(wall * 1000, 1),
                "cpu_ms": round(cpu * 1000, 1),
                "gc_ms": round(self.gc_seconds * 1000, 1),
                "longest_gc_ms": round(self.gc_longest * 1000, 1),
                "samples": dict(self.samples.most_common(6)),
            }
        )
        self.longest.sort(key=lambda t: -t["wall_ms"])
        del self.longest[TOP:]

    def _dump(self, signum: int, frame: FrameType | None) -> None:
        with open(self.path + ".part", "w") as f:
            json.dump({"turns": self.turns, "longest": self.longest}, f)
        os.replace(self.path + ".part", self.path)
        self.longest = []
        self.turns = 0


def main() -> None:
    out = sys.argv.pop(1)
    # Import the server from the directory it is started in, as ``python -m stubserver``
    # would (a script's own directory comes first on the path instead).
    sys.path[0] = os.getcwd()
    from twisted.internet import reactor  # noqa: PLC0415 - installs the default reactor

    TurnTimer(out).install(reactor)
    sys.argv[0] = "stubserver"
    runpy.run_module("stubserver", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
