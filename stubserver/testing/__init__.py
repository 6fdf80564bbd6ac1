"""``stubserver.testing``: the public Python API for writing federation tests.

This package is stubserver's one public Python API (every other module is internal and
may change without notice). It is synchronous and plain: no reactor runs in the test
process. docs/testing.md is its guide, with a complete example.

- :class:`Peer`: a running ``stubserver run`` (federation and control listeners) as a
  context manager, driven through its control API: rooms, membership, events, EDUs,
  signed federation requests, waits that explain themselves, and strict mode.
- :class:`PeerGroup` (:meth:`Peer.start_many`): many servers served by one
  ``stubserver run`` (issue 23), each member a :class:`Peer` of its own.
- :class:`Homeserver` and :class:`HomeserverUser`: a client of the homeserver under
  test's client-server API, enough for the homeserver's side of a federation test.
- The pytest plugin (:mod:`stubserver.testing.plugin`, registered through the
  ``pytest11`` entry point): fixtures ``stubserver_peer``, ``homeserver`` and
  ``homeserver_user``, and the ``--homeserver-*`` and ``--peer-*`` options.
- Typed failures: :class:`ControlError`, :class:`ControlUnreachable`,
  :class:`HomeserverError`, :class:`HomeserverUnreachable`, :class:`PeerStartFailed`,
  and the test failures :class:`WaitTimeout` and :class:`StrictModeViolation`
  (``AssertionError`` subclasses).
"""

from stubserver.testing._errors import (
    ControlError,
    ControlUnreachable,
    HomeserverError,
    HomeserverUnreachable,
    PeerStartFailed,
    StrictModeViolation,
    WaitTimeout,
)
from stubserver.testing._files import free_port
from stubserver.testing._group import PeerGroup
from stubserver.testing._homeserver import Homeserver, HomeserverUser, registration_mac
from stubserver.testing._peer import DEFAULT_USER, Peer, PeerFactory
from stubserver.testing._records import (
    CreatedRoom,
    FederationAnswer,
    JoinedRoom,
    ReceivedEdu,
    RoomEvent,
)

__all__ = [
    "DEFAULT_USER",
    "ControlError",
    "ControlUnreachable",
    "CreatedRoom",
    "FederationAnswer",
    "Homeserver",
    "HomeserverError",
    "HomeserverUnreachable",
    "HomeserverUser",
    "JoinedRoom",
    "Peer",
    "PeerFactory",
    "PeerGroup",
    "PeerStartFailed",
    "ReceivedEdu",
    "RoomEvent",
    "StrictModeViolation",
    "WaitTimeout",
    "free_port",
    "registration_mac",
]
