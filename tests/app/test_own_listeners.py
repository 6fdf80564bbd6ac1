"""A server's own federation listeners closed and reopened (stubserver.app.own_listeners)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from zope.interface import implementer

from stubserver.app.own_listeners import OwnFederationListeners
from stubserver.server.faults import ListenerReopenFailed
from tests.support import has_fired


@implementer(IListeningPort)
class FakePort:
    """A listening port that counts its stops; a stop completes when ``stopped`` fires."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stops = 0
        self.stopped: Deferred[None] = Deferred()

    def startListening(self) -> None:
        """Never called: the sockets here are bound already."""

    def stopListening(self) -> Deferred[None]:
        self.stops += 1
        return self.stopped

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8448)


@dataclass(frozen=True)
class Bound:
    address: str
    port: int
    resources: tuple[str, ...]
    listening: IListeningPort


def names(own: OwnFederationListeners[Bound]) -> list[str]:
    return [b.listening.name for b in own.bound]  # type: ignore[attr-defined]


def test_close_stops_only_federation_sockets_and_reopen_listens_on_the_same_ports() -> None:
    """Closing stops the federation sockets only and completes once they are closed;
    reopening listens again at each one's address and port, and ``bound`` follows."""
    fed, control, well_known = FakePort("fed"), FakePort("control"), FakePort("wk")
    rebound: list[tuple[str, int]] = []

    def rebind(b: Bound) -> Bound:
        rebound.append((b.address, b.port))
        return replace(b, listening=FakePort("again"))

    own = OwnFederationListeners(
        [
            Bound("127.0.0.1", 8448, ("federation",), fed),
            Bound("127.0.0.1", 8009, ("control",), control),
            Bound("127.0.0.1", 443, ("well_known",), well_known),
        ],
        rebind,
    )
    closing = own.close()
    assert not has_fired(closing)
    assert (fed.stops, control.stops, well_known.stops) == (1, 0, 0)
    assert names(own) == ["control", "wk"]
    fed.stopped.callback(None)
    assert has_fired(closing)
    own.reopen()
    assert rebound == [("127.0.0.1", 8448)]
    assert names(own) == ["control", "wk", "again"]


def test_a_failed_reopen_leaves_everything_closed() -> None:
    """When one socket cannot listen again, those reopened are closed again and
    ListenerReopenFailed names the address and port; a later reopen tries them all."""
    first = Bound("127.0.0.1", 8448, ("federation",), FakePort("f4"))
    second = Bound("::1", 8448, ("federation",), FakePort("f6"))
    first_again = FakePort("again")
    failures_left = [1]

    def rebind(b: Bound) -> Bound:
        if b is second and failures_left:
            failures_left.pop()
            error = OSError(98, "Address already in use")
            raise CannotListenError(b.address, b.port, error)  # type: ignore[no-untyped-call]
        return replace(b, listening=first_again if b is first else FakePort("ok6"))

    own = OwnFederationListeners([first, second], rebind)
    own.close()
    with pytest.raises(ListenerReopenFailed, match=r"::1:8448"):
        own.reopen()
    assert first_again.stops == 1
    assert own.bound == []
    first_again.stopped = succeed(None)
    own.reopen()
    assert names(own) == ["again", "ok6"]
