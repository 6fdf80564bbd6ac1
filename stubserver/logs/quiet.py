"""Twisted's connection machinery, made without its start/stop lines (issue 24).

Twisted writes an ``info`` line whenever a factory or a datagram protocol starts or stops
(``Factory.doStart``/``doStop`` and ``AbstractDatagramProtocol.doStart``/``doStop``, unless
the instance's ``noisy`` is False) and whenever a UDP port opens or closes (``udp.Port``'s
``startListening`` and ``connectionLost``: always, through the legacy ``log.msg``). A
twisted.names resolver opens a new UDP port with a new protocol for every query (a random
source port per query, against spoofed answers), and an ``HTTPConnectionPool`` makes a new
``_HTTP11ClientFactory`` for every connection: four lines per DNS query and two per
outbound connection, 99 % of a busy peer's log. Each is quieted where it is made, with the
hook Twisted offers for it (Synapse does the same with ``noisy = False``):

- :class:`QuietHTTPConnectionPool`: an ``HTTPConnectionPool`` whose connection factories
  are not noisy (the pool's ``_factory`` class attribute names the factory it makes).
- :func:`quiet_udp_reactor`: the reactor to give a twisted.names ``client.Resolver``: its
  ``listenUDP`` makes the resolver's per-query protocol not noisy and opens a
  :class:`QuietUDPPort`; everything else goes to the real reactor.
- :class:`QuietUDPPort` opens and closes under
  :func:`stubserver.logs.legacy.at_debug_level`, which ``run`` binds its listeners under
  too (our own "Listening on" line says what Twisted's "starting on" says).

At ``debug`` (``log_level: debug``, ``stubserver run --verbose``) the UDP ports' lines come
back; the factories' and protocols' do not (``noisy`` is read when they start).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import AbstractDatagramProtocol
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from zope.interface import implementer

from stubserver.logs.legacy import at_debug_level

#: Twisted's default largest datagram read by a UDP port, in bytes (IReactorUDP.listenUDP).
DEFAULT_MAX_PACKET_BYTES = 8192


class _QuietHTTP11ClientFactory(_HTTP11ClientFactory):
    """The pool's per-connection factory, without "Starting factory"/"Stopping factory"."""

    noisy = False


class QuietHTTPConnectionPool(HTTPConnectionPool):
    """An ``HTTPConnectionPool`` whose connections start and stop without a log line."""

    _factory = _QuietHTTP11ClientFactory


class QuietUDPPort(udp.Port):
    """A ``udp.Port`` whose "<protocol> starting on N" and "(UDP Port N Closed)" lines,
    written unconditionally by Twisted, are at debug level."""

    def startListening(self) -> None:
        """Bind and connect the protocol (``udp.Port.startListening``), at debug level."""
        at_debug_level(super().startListening)

    def connectionLost(self, reason: Any = None) -> None:
        """Close the socket (``udp.Port.connectionLost``), at debug level."""
        at_debug_level(super().connectionLost, reason)


@implementer(IReactorUDP)
class QuietUDPReactor:
    """The reactor a twisted.names resolver is given: quiet UDP ports, and the real
    reactor's ``callLater`` (query timeouts) and ``connectTCP`` (truncated answers)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def listenUDP(
        self,
        port: int,
        protocol: AbstractDatagramProtocol,
        interface: str = "",
        maxPacketSize: int = DEFAULT_MAX_PACKET_BYTES,
    ) -> QuietUDPPort:
        """Open a :class:`QuietUDPPort` on the real reactor for a protocol made not noisy;
        ``CannotListenError`` as ``IReactorUDP.listenUDP``."""
        protocol.noisy = False
        opened = QuietUDPPort(  # type: ignore[no-untyped-call]
            port, protocol, interface, maxPacketSize, self._reactor
        )
        opened.startListening()
        return opened

    def callLater(self, delay: float, function: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """The real reactor's ``callLater``."""
        return self._reactor.callLater(delay, function, *args, **kw)

    def connectTCP(self, host: str, port: int, factory: Any, *args: Any, **kw: Any) -> Any:
        """The real reactor's ``connectTCP``."""
        return self._reactor.connectTCP(host, port, factory, *args, **kw)


def quiet_udp_reactor(reactor: Any) -> Any:
    """The reactor for a twisted.names resolver: a :class:`QuietUDPReactor` over one of
    Twisted's socket reactors (whose ``listenUDP`` builds the ``udp.Port`` that
    :class:`QuietUDPPort` extends); any other, a fake whatever it provides, is returned as
    it is (a fake that declares UDP must not get real sockets behind its back)."""
    if isinstance(reactor, PosixReactorBase):
        return QuietUDPReactor(reactor)
    return reactor
