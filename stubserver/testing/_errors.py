"""The typed failures of ``stubserver.testing``.

Failures that mean "the test's expectation was not met" (:class:`WaitTimeout`,
:class:`StrictModeViolation`) are :class:`AssertionError` subclasses, so that pytest and
trial report them as test failures rather than errors; each message lists what did
arrive, so a failing test explains itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

#: How many items a failure message lists before it says "... and N more".
MAX_LISTED_ITEMS = 20


def _listing(items: Sequence[str]) -> str:
    if not items:
        return "  (nothing)"
    lines = [f"  {item}" for item in items[:MAX_LISTED_ITEMS]]
    if len(items) > MAX_LISTED_ITEMS:
        lines.append(f"  ... and {len(items) - MAX_LISTED_ITEMS} more")
    return "\n".join(lines)


class PeerStartFailed(Exception):
    """``stubserver run`` exited, or printed no ready line within the deadline.

    ``returncode`` is None when it was still running (and was killed); ``stderr`` is
    everything it wrote there (its log, or the one line naming a bad config key).
    """

    def __init__(self, message: str, returncode: int | None, stderr: str) -> None:
        super().__init__(f"{message} (exit status {returncode}); its stderr:\n{stderr}")
        self.returncode = returncode
        self.stderr = stderr


class ControlUnreachable(Exception):
    """The peer's control API could not be reached, or answered something that is not JSON."""


class ControlError(Exception):
    """The peer's control API refused an operation.

    ``status`` and ``errcode``/``error`` are its answer; when a remote server refused
    the request made on the test's behalf (HTTP 502), ``remote_status`` and
    ``remote_body`` are the remote's answer (else None).
    """

    def __init__(
        self,
        operation: str,
        status: int,
        *,
        errcode: str | None,
        error: str | None,
        remote_status: int | None = None,
        remote_body: Any = None,
    ) -> None:
        text = f"{operation}: HTTP {status} {errcode}: {error}"
        if remote_status is not None:
            text += f"; the remote answered HTTP {remote_status}: {json.dumps(remote_body)}"
        super().__init__(text)
        self.operation = operation
        self.status = status
        self.errcode = errcode
        self.error = error
        self.remote_status = remote_status
        self.remote_body = remote_body


class HomeserverError(Exception):
    """The homeserver under test answered a client-server API request with a non-2xx.

    ``body`` is its JSON answer (or None); ``errcode`` and ``error`` are taken from it.
    """

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        fields = body if isinstance(body, dict) else {}
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        self.errcode: str | None = fields.get("errcode")
        self.error: str | None = fields.get("error")
        super().__init__(f"{method} {path}: HTTP {status} {json.dumps(body)}")


class HomeserverUnreachable(Exception):
    """The homeserver could not be reached (connection, TLS, timeout) or sent no JSON."""


class WaitTimeout(AssertionError):
    """What a test waited for did not arrive in time; ``arrived`` is what did (summaries)."""

    def __init__(self, waited_for: str, timeout: float, arrived: Sequence[str]) -> None:
        super().__init__(
            f"timed out after {timeout:g} s waiting for {waited_for}; "
            f"what arrived:\n{_listing(arrived)}"
        )
        self.waited_for = waited_for
        self.timeout = timeout
        self.arrived = list(arrived)


class StrictModeViolation(AssertionError):
    """A strict peer received requests that no handler expected; ``requests`` lists them."""

    def __init__(self, server_name: str, requests: Sequence[dict[str, Any]]) -> None:
        lines = [summarize_request(r) for r in requests]
        super().__init__(
            f"strict peer {server_name} received {len(requests)} unexpected "
            f"request(s):\n{_listing(lines)}"
        )
        self.server_name = server_name
        self.requests = list(requests)


def summarize_request(entry: dict[str, Any]) -> str:
    """One line for a request log object: ``PUT /path from origin -> 200``."""
    origin = entry.get("origin") or "(unsigned)"
    return f"{entry.get('method')} {entry.get('uri')} from {origin} -> {entry.get('status')}"
