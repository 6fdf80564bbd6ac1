"""One log line for each inbound federation request we refuse (issue 24).

A :class:`stubserver.server.router.RequestObserver`: every request on the Matrix paths
answered 4xx (not 499, a client that went away) gets one ``info`` line naming the peer
(the X-Matrix origin, else its address) and the reason (the errcode and error we
answered)::

    Refused PUT /_matrix/federation/v1/send/1 from syn.test: 401 M_UNAUTHORIZED: Could not ...

It is the one place such lines are written, so each refusal is one line whatever refused
it (the X-Matrix filter, a route, the body parser). Every request, refused or not, is in
the request log (``request_log_path``).
"""

from __future__ import annotations

from typing import Any, Final

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from stubserver.server.request_log import LOGGED_PATH_PREFIX
from stubserver.server.router import CLIENT_CLOSED_REQUEST, request_annotations

#: Longest request-target and error text a refusal line shows, in characters.
MAX_SHOWN_CHARS: Final = 300


def shorten(text: str) -> str:
    """``text``, cut at :data:`MAX_SHOWN_CHARS` (pure)."""
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "…"


def refusal_reason(status: int, body: Any) -> str:
    """``"401 M_UNAUTHORIZED: <error>"`` from a status and the JSON body answered with it
    (pure; the outbound side describes the answers it gets with it too)."""
    fields = body if isinstance(body, dict) else {}
    errcode = fields.get("errcode")
    error = fields.get("error")
    reason = f"{status} {errcode}" if isinstance(errcode, str) else str(status)
    return f"{reason}: {shorten(error)}" if isinstance(error, str) and error else reason


def is_refusal(status: int) -> bool:
    """True for the statuses that refuse a request (4xx, except a client that went away)."""
    return 400 <= status < 500 and status != CLIENT_CLOSED_REQUEST


class RefusalLog:
    """Logs one line per refused federation request (see the module docstring)."""

    def __init__(self, log: Logger | None = None) -> None:
        self._log = log if log is not None else Logger()

    def __call__(self, request: IRequest, status: int, body: Any, /) -> None:
        """Log ``request`` if it was refused."""
        if not is_refusal(status) or not request.path.startswith(LOGGED_PATH_PREFIX):
            return
        origin = request_annotations(request).get("origin")
        if not isinstance(origin, str):
            address = request.getClientAddress()  # type: ignore[no-untyped-call]
            origin = f"{getattr(address, 'host', address)} (no X-Matrix origin)"
        self._log.info(
            "Refused {method} {uri} from {origin}: {reason}",
            method=request.method.decode("ascii", "backslashreplace"),
            uri=shorten(request.uri.decode("utf-8", "backslashreplace")),
            origin=origin,
            reason=refusal_reason(status, body),
        )
