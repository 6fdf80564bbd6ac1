"""A server's own federation listeners, closed while it is down and opened again after.

:class:`OwnFederationListeners` is the :class:`~stubserver.server.faults.ListenerControl`
of ``stubserver run``: fault injection's ``down`` stops its federation sockets (a client
then gets a real ``ECONNREFUSED``) and listens again on the same addresses and ports on
recovery (SO_REUSEADDR, which Twisted sets, lets the port be taken back at once despite
the connections just closed). Sockets serving no ``federation`` resource (control,
``well_known`` alone, report) stay open. It keeps the list of every socket bound now,
which shutdown closes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort

from stubserver.server.faults import ListenerReopenFailed

#: The resource whose listeners go down with the server.
FEDERATION_RESOURCE = "federation"


class BoundSocket(Protocol):
    """One bound socket, as ``stubserver.app.run.BoundListener`` is."""

    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def resources(self) -> tuple[str, ...]: ...
    @property
    def listening(self) -> IListeningPort: ...


_B = TypeVar("_B", bound=BoundSocket)


class OwnFederationListeners(Generic[_B]):
    """The bound sockets of one server; the federation ones can be closed and reopened.

    ``rebind`` listens again where a closed socket listened (same address, port, site and
    TLS) and answers its new record; it raises CannotListenError.
    """

    def __init__(self, bound: Sequence[_B], rebind: Callable[[_B], _B]) -> None:
        #: Every socket bound now (the federation ones only while listening).
        self.bound: list[_B] = list(bound)
        self._rebind = rebind
        self._closed: list[_B] = []

    def close(self) -> Deferred[None]:
        """Stop listening on the federation sockets; fires once all are closed."""
        closing = [b for b in self.bound if FEDERATION_RESOURCE in b.resources]
        self.bound = [b for b in self.bound if FEDERATION_RESOURCE not in b.resources]
        self._closed += closing
        stopped: list[Deferred[Any]] = []
        for b in closing:
            d = b.listening.stopListening()
            if isinstance(d, Deferred):
                stopped.append(d)
        done: Deferred[Any] = DeferredList(stopped, consumeErrors=True)
        return done.addCallback(lambda _: None)

    def reopen(self) -> None:
        """Listen again on every closed federation socket's address and port; on a
        failure close those reopened and raise ListenerReopenFailed (all stay closed)."""
        reopened: list[_B] = []
        for b in self._closed:
            try:
                reopened.append(self._rebind(b))
            except CannotListenError as e:
                for r in reopened:
                    r.listening.stopListening()
                raise ListenerReopenFailed(
                    f"cannot listen again on {b.address}:{b.port}: {e.socketError}"
                ) from None
        self._closed = []
        self.bound += reopened
