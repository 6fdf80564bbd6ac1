"""One log line per refused inbound federation request (stubserver.server.refusals)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from twisted.internet.address import IPv4Address
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from stubserver.server.refusals import MAX_SHOWN_CHARS, RefusalLog, refusal_reason
from stubserver.server.router import request_annotations


def _request(uri: bytes, origin: str | None) -> IRequest:
    path = uri.partition(b"?")[0]
    dummy = DummyRequest(path.strip(b"/").split(b"/"))
    dummy.method = b"PUT"
    dummy.uri = uri
    dummy.path = path  # type: ignore[attr-defined]  # the real Request has it
    request = cast(IRequest, dummy)
    request_annotations(request).update(origin=origin)
    return request


def _logged(request: IRequest, status: int, body: Any) -> list[str]:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)  # an ILogObserver is a callable of events
    RefusalLog(Logger(observer=observer))(request, status, body)
    return [str(formatEvent(e)) for e in events]


def test_a_refusal_is_one_line_with_the_origin_and_the_answer() -> None:
    """A 401 to a.test is one line: method, target, origin, status, errcode, error."""
    request = _request(b"/_matrix/federation/v1/send/1", "a.test")
    body = {"errcode": "M_UNAUTHORIZED", "error": "Invalid signature"}
    assert _logged(request, 401, body) == [
        "Refused PUT /_matrix/federation/v1/send/1 from a.test: 401 M_UNAUTHORIZED:"
        " Invalid signature"
    ]


def test_a_request_without_an_origin_is_named_by_its_address() -> None:
    """Without X-Matrix the line names the client's address instead."""
    request = _request(b"/_matrix/federation/v1/send/1", None)
    cast(DummyRequest, request).client = IPv4Address("TCP", "192.0.2.7", 41234)
    [line] = _logged(request, 401, {"errcode": "M_UNAUTHORIZED", "error": "Missing"})
    assert " from 192.0.2.7 (no X-Matrix origin): 401 M_UNAUTHORIZED: Missing" in line


@pytest.mark.parametrize(
    ("status", "uri"),
    [
        (200, b"/_matrix/federation/v1/send/1"),
        (302, b"/_matrix/federation/v1/send/1"),
        (499, b"/_matrix/federation/v1/send/1"),
        (500, b"/_matrix/federation/v1/send/1"),
        (404, b"/.well-known/matrix/server"),
    ],
)
def test_answers_that_are_not_refusals_of_federation_requests_are_not_logged(
    status: int, uri: bytes
) -> None:
    """Success, a client that went away (499), our own failure (5xx, logged where it
    happens) and paths outside /_matrix/ give no refusal line."""
    assert _logged(_request(uri, "a.test"), status, {}) == []


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (403, {"errcode": "M_FORBIDDEN", "error": "no"}, "403 M_FORBIDDEN: no"),
        (404, {"errcode": "M_NOT_FOUND"}, "404 M_NOT_FOUND"),
        (429, None, "429"),
        (400, "not JSON", "400"),
        (400, {"errcode": 7, "error": ""}, "400"),
    ],
)
def test_refusal_reason(status: int, body: Any, reason: str) -> None:
    """The reason is the status, then the errcode and error when the body has them."""
    assert refusal_reason(status, body) == reason


def test_a_long_error_is_cut() -> None:
    """An error text longer than MAX_SHOWN_CHARS is cut there (a peer cannot fill the log)."""
    reason = refusal_reason(400, {"errcode": "M_BAD_JSON", "error": "x" * 10_000})
    assert reason == "400 M_BAD_JSON: " + "x" * MAX_SHOWN_CHARS + "…"
