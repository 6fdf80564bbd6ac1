"""Canary (issue 11): the private twisted.web internals ``stubserver.server.limits`` relies on.

``LimitedHTTPChannel`` and ``LimitedRequest`` override or read private parts of
``twisted.web.http.HTTPChannel``, ``twisted.protocols.basic.LineReceiver`` and
``twisted.web.server.Request``. We do not pin an upper bound on Twisted (that would hold
back its security fixes); instead, these tests fail with a message naming the internal that
changed, so that a Twisted upgrade which moves one is caught in CI, not in production.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http, server

#: (owner, method name, its parameters after ``self``) for every method we override or call.
METHODS: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (http.HTTPChannel, "lineReceived", ("line",)),
    (http.HTTPChannel, "rawDataReceived", ("data",)),
    (http.HTTPChannel, "dataReceived", ("data",)),
    (http.HTTPChannel, "allHeadersReceived", ()),
    (http.HTTPChannel, "allContentReceived", ()),
    (http.HTTPChannel, "requestDone", ("request",)),
    (http.HTTPChannel, "connectionMade", ()),
    (http.HTTPChannel, "connectionLost", ("reason",)),
    (http.HTTPChannel, "_respondToBadRequestAndDisconnect", ()),
    (http.HTTPChannel, "loseConnection", ()),
    (http.HTTPChannel, "forceAbortClient", ()),
    (LineReceiver, "lineLengthExceeded", ("line",)),
    (server.Request, "process", ()),
    (server.Request, "processingFailed", ("reason",)),
    (server.Request, "_handleStar", ()),
    (server.Request, "render", ("resrc",)),
    (server.Request, "gotLength", ("length",)),
    (server.Request, "handleContentChunk", ("data",)),
)

#: (owner, class attribute, its type) read or set by the channel.
CLASS_ATTRIBUTES: tuple[tuple[type, str, type], ...] = (
    (http.HTTPChannel, "totalHeadersSize", int),
    (http.HTTPChannel, "_receivedHeaderSize", int),
    (http.HTTPChannel, "_abortingCall", type(None)),
    (http.HTTPChannel, "length", int),
    (LineReceiver, "MAX_LENGTH", int),
    (LineReceiver, "_buffer", bytes),
    (server.Request, "_disconnected", bool),
    (server.Request, "finished", int),
    (server.Request, "startedWriting", int),
)


def _parameters(function: Callable[..., object]) -> tuple[str, ...]:
    names = list(inspect.signature(function).parameters)
    return tuple(names[1:]) if names and names[0] == "self" else tuple(names)


class TwistedInternalsCanaryTests(SynchronousTestCase):
    def test_overridden_methods_keep_their_shape(self) -> None:
        """Every twisted.web method limits.py overrides or calls exists with the same parameters."""
        for owner, name, expected in METHODS:
            method = getattr(owner, name, None)
            assert callable(method), (
                f"twisted changed: {owner.__module__}.{owner.__qualname__}.{name} is gone; "
                "stubserver/server/limits.py overrides or calls it"
            )
            got = _parameters(method)
            assert got == expected, (
                f"twisted changed: {owner.__qualname__}.{name}{got} was {name}{expected}; "
                "check stubserver/server/limits.py's override"
            )

    def test_class_attributes_keep_their_type(self) -> None:
        """Every private twisted.web attribute limits.py reads has its default of the same type."""
        for owner, name, kind in CLASS_ATTRIBUTES:
            assert hasattr(owner, name), (
                f"twisted changed: {owner.__qualname__}.{name} is gone; "
                "stubserver/server/limits.py reads it"
            )
            value = getattr(owner, name)
            assert isinstance(value, kind), (
                f"twisted changed: {owner.__qualname__}.{name} is {type(value).__name__}, "
                f"was {kind.__name__}; stubserver/server/limits.py reads it"
            )

    def test_handling_request_is_an_instance_flag(self) -> None:
        """``HTTPChannel()._handlingRequest`` is set (False) by the constructor."""
        channel = http.HTTPChannel()  # type: ignore[no-untyped-call]
        assert getattr(channel, "_handlingRequest", None) is False, (
            "twisted changed: HTTPChannel._handlingRequest is no longer a bool set in "
            "__init__; stubserver/server/limits.py reads it to tell idle connections apart"
        )

    def test_request_line_parts_kept_until_the_content(self) -> None:
        """After the request line, ``HTTPChannel._command`` and ``_path`` hold its method
        and target (the body cap is worked out from them when a body is over the ordinary
        cap)."""
        channel = http.HTTPChannel()  # type: ignore[no-untyped-call]
        channel.makeConnection(StringTransport())  # type: ignore[no-untyped-call]
        channel.dataReceived(b"PUT /_matrix/x HTTP/1.1\r\nHost: a\r\n")  # type: ignore[no-untyped-call]
        parts = (getattr(channel, "_command", None), getattr(channel, "_path", None))
        assert parts == (b"PUT", b"/_matrix/x"), (
            "twisted changed: HTTPChannel no longer keeps the request line as _command and "
            "_path; stubserver/server/limits.py reads them for the body cap"
        )
        channel.connectionLost(Exception("done"))  # type: ignore[no-untyped-call]

    def test_site_constructor_takes_our_keywords(self) -> None:
        """``Site(resource, reactor=, timeout=, parsePOSTFormSubmission=)`` is accepted."""
        parameters = {
            *inspect.signature(server.Site.__init__).parameters,
            *inspect.signature(http.HTTPFactory.__init__).parameters,  # Site's **kwargs
        }
        for name in ("reactor", "timeout", "parsePOSTFormSubmission"):
            assert name in parameters, (
                f"twisted changed: Site() no longer takes {name}=; "
                "stubserver/server/limits.py's LimitedSite passes it"
            )
