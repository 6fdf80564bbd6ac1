"""A ``stubserver run`` child process: started, awaited until ready, stopped.

The child's stdout carries exactly one line, the ready line (DESIGN.md, "Command line");
its stderr (the log) goes to a file beside the config, kept for the failure report.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Final

from stubserver.testing._errors import PeerStartFailed

#: How long ``Peer.start`` waits for the ready line, in seconds.
READY_TIMEOUT_SECONDS: Final = 30.0
#: How long a stop waits after SIGTERM before SIGKILL, in seconds.
STOP_TIMEOUT_SECONDS: Final = 10.0
#: Longest ready line read, in bytes.
MAX_READY_LINE_BYTES: Final = 64 * 1024


def read_line(stream: IO[bytes], deadline: float) -> bytes | None:
    """One line from ``stream``; None at end of file or when ``deadline`` (monotonic) passes."""
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while len(buffer) < MAX_READY_LINE_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                return None
            buffer += chunk
            if b"\n" in buffer:
                return buffer.split(b"\n", 1)[0]
    return None


class PeerProcess:
    """A running ``python -m stubserver run -c CONFIG`` and its parsed ready line."""

    def __init__(self, process: subprocess.Popen[bytes], ready: dict[str, Any], stderr_path: Path):
        self.process = process
        self.ready = ready
        self.stderr_path = stderr_path

    @classmethod
    def start(
        cls, config_path: Path, *, timeout: float = READY_TIMEOUT_SECONDS, python: str | None = None
    ) -> PeerProcess:
        """Start the child and wait up to ``timeout`` s for its ready line.

        Raises :class:`PeerStartFailed` (with its stderr) when it exits first, stays
        silent, or prints something that is not a ready line; it is not left running.
        """
        stderr_path = config_path.with_suffix(".stderr.log")
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [python or sys.executable, "-m", "stubserver", "run", "-c", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=config_path.parent,
            )
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        line = read_line(process.stdout, deadline)
        ready: Any = None
        if line is not None:
            try:
                ready = json.loads(line)
            except ValueError:
                ready = None
        if not isinstance(ready, dict) or ready.get("ready") is not True:
            returncode = process.poll()
            if returncode is None and line is None and time.monotonic() < deadline:
                # Its stdout closed before the deadline: it is exiting; its status comes
                # a moment after the end of file, so wait for it rather than report None.
                try:
                    returncode = process.wait(STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    returncode = None
            what = "no ready line" if line is None else f"not a ready line: {line[:200]!r}"
            _stop(process, STOP_TIMEOUT_SECONDS)
            raise PeerStartFailed(
                f"stubserver run -c {config_path}: {what} within {timeout:g} s",
                returncode,
                stderr_path.read_text("utf-8", "replace"),
            )
        return cls(process, ready, stderr_path)

    @property
    def running(self) -> bool:
        """True while the child has not exited."""
        return self.process.poll() is None

    def stderr_text(self) -> str:
        """Everything the child wrote to stderr so far."""
        return self.stderr_path.read_text("utf-8", "replace")

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; the exit status."""
        return _stop(self.process, timeout)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        returncode = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        returncode = process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return returncode


class AttachedProcess:
    """A peer started by someone else (:meth:`stubserver.testing.Peer.attach`): the same
    surface as :class:`PeerProcess`, but never stopped by us and without a stderr of ours.

    ``ready`` is built from the config, in the shape of ``run``'s ready line.
    """

    def __init__(self, ready: dict[str, Any], stderr_path: Path) -> None:
        self.ready = ready
        self.stderr_path = stderr_path

    @property
    def running(self) -> bool:
        """Assumed true: its control API answers or the calls say otherwise."""
        return True

    def stderr_text(self) -> str:
        """Nothing: its stderr is not ours to read."""
        return ""

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """Nothing: whoever started it stops it."""
        return 0


class MemberProcess:
    """A server's view of a process serving several (``stubserver.testing.PeerGroup``):
    running and stderr are the process's; stopping is the group's, so a member's stop
    does nothing. ``ready`` holds the control listener and the server's federation
    listener (``address``, ``port``)."""

    def __init__(
        self, process: PeerProcess | AttachedProcess, server_name: str, address: str, port: int
    ) -> None:
        #: The process every member shares (stopped by whoever started it).
        self.owner = process
        self.stderr_path = process.stderr_path
        control = [e for e in process.ready["listeners"] if "control" in e["resources"]]
        self.ready = {
            "server_name": server_name,
            "listeners": [
                *control,
                {"address": address, "port": port, "resources": ["federation"]},
            ],
        }

    @property
    def running(self) -> bool:
        """True while the group's process runs."""
        return self.owner.running

    def stderr_text(self) -> str:
        """Everything the group's process wrote to stderr so far."""
        return self.owner.stderr_text()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """Nothing: the group stops the process."""
        return 0
