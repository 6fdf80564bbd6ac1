"""Two (or more) :class:`RoomService` peers in memory: each signed request of one is
routed straight into the other's :class:`FederationRouter` (its ``room_routes``) through
a ``DummyRequest``, with the authenticated origin set as X-Matrix would. No sockets."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nacl.signing import VerifyKey
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from stubserver.rooms.builder import EventSigner
from stubserver.rooms.room import Room
from stubserver.rooms.routes import room_routes
from stubserver.rooms.service import RoomService
from stubserver.rooms.store import RoomStore
from stubserver.rooms.transaction import TransactionMemory
from stubserver.server.router import FederationRouter, request_annotations
from tests.rooms.room_fixtures import A_SIGNER, B_SIGNER, TS
from tests.support import result_now

ALICE = "@alice:a.test"
BOB = "@bob:b.test"
MESSAGE = "m.room.message"


@dataclass(frozen=True)
class FakeResponse:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Sent:
    """One request as it went over the fake network."""

    origin: str
    method: str
    destination: str
    path: str
    body: Any


class Unreachable(Exception):
    """The fake network's "connection refused"."""


class Network:
    """The peers by server name, a shared clock, the requests seen and the servers down."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(TS / 1000)
        self.peers: dict[str, Peer] = {}
        self.sent: list[Sent] = []
        self.down: set[str] = set()
        #: (destination, path fragment) pairs answered 500 instead of being delivered.
        self.failing: set[tuple[str, str]] = set()
        #: (destination, path fragment) pairs answered with a canned (status, JSON body).
        self.canned: dict[tuple[str, str], tuple[int, Any]] = {}
        #: (destination, path fragment) pairs never answered (until cancelled).
        self.silent: set[tuple[str, str]] = set()
        #: The requests never answered so far (cancelled ones included).
        self.hanging: list[Deferred[Any]] = []
        #: (destination, path fragment) -> a change to the JSON body of its answers.
        self.rewrites: dict[tuple[str, str], Callable[[Any], Any]] = {}

    def add(self, signer: EventSigner, seed: int) -> Peer:
        peer = Peer(self, signer, seed)
        self.peers[signer.server_name] = peer
        return peer

    def fetch_key(
        self, server: str, key_id: str, minimum_valid_until_ts: int
    ) -> Deferred[VerifyKey | None]:
        peer = self.peers.get(server)
        if peer is None or peer.signer.key_id != key_id:
            return succeed(None)
        return succeed(peer.signer.signing_key.verify_key)

    def waiting(self) -> int:
        """Silent requests still waiting for an answer (neither answered nor cancelled)."""
        return sum(1 for d in self.hanging if not d.called)

    def paths(self, origin: str, fragment: str) -> list[str]:
        """The paths ``origin`` requested that contain ``fragment``."""
        return [s.path for s in self.sent if s.origin == origin and fragment in s.path]


class FakeClient:
    """Signed requests of ``origin``, delivered in memory."""

    def __init__(self, network: Network, origin: str) -> None:
        self._network = network
        self._origin = origin

    def request(
        self, method: str, destination: str, path_and_query: str, content: Any = None
    ) -> Deferred[Any]:
        self._network.sent.append(Sent(self._origin, method, destination, path_and_query, content))
        peer = self._network.peers.get(destination)
        if peer is None or destination in self._network.down:
            return fail(Unreachable(f"{destination} is down"))
        if any(d == destination and f in path_and_query for d, f in self._network.failing):
            return succeed(FakeResponse(500, b'{"errcode":"M_UNKNOWN","error":"failing"}'))
        for (d, f), (status, answer) in self._network.canned.items():
            if d == destination and f in path_and_query:
                return succeed(FakeResponse(status, json.dumps(answer).encode()))
        if any(d == destination and f in path_and_query for d, f in self._network.silent):
            hanging: Deferred[Any] = Deferred()
            self._network.hanging.append(hanging)
            return hanging
        parts = urlsplit(path_and_query)
        dummy = DummyRequest([])
        request: Any = dummy  # DummyRequest stands for IRequest (untyped attributes)
        request.method = method.encode()
        request.path = parts.path.encode()
        request.uri = path_and_query.encode()
        request.args = {
            k.encode(): [v.encode() for v in vs]
            for k, vs in parse_qs(parts.query, keep_blank_values=True).items()
        }
        request.content = BytesIO(b"" if content is None else json.dumps(content).encode())
        request_annotations(request).update(
            origin=self._origin, authenticated=True, auth_error=None
        )
        finished: Deferred[None] = dummy.notifyFinish()
        peer.router.render(request)
        rewrites = [
            change
            for (d, f), change in self._network.rewrites.items()
            if d == destination and f in path_and_query
        ]

        def answered(_: None) -> FakeResponse:
            body = b"".join(request.written)
            for change in rewrites:
                body = json.dumps(change(json.loads(body))).encode()
            return FakeResponse(request.responseCode or 200, body)

        return finished.addCallback(answered)


class Peer:
    """One server: its store, service and router."""

    def __init__(self, network: Network, signer: EventSigner, seed: int) -> None:
        self.network = network
        self.signer = signer
        self.name = signer.server_name
        self.store = RoomStore(self.name, TransactionMemory(network.clock))
        self.service = RoomService(
            clock=network.clock,
            signer=signer,
            store=self.store,
            client=FakeClient(network, self.name),
            fetch_verify_key=network.fetch_key,
            rng=random.Random(seed),
        )
        routes = room_routes(
            self.store,
            signer,
            network.fetch_key,
            network.clock,
            invites_accept=True,
            hooks=self.service.inbound,
        )
        self.router = FederationRouter(routes)

    def room(self, room_id: str) -> Room:
        room = self.store.get_room(room_id)
        assert room is not None, f"{self.name} does not hold {room_id}"
        return room


def two_peers() -> tuple[Network, Peer, Peer]:
    network = Network()
    return network, network.add(A_SIGNER, 1), network.add(B_SIGNER, 2)


def hosted(peer: Peer, version: str = "12", creator: str = "alice", **kwargs: Any) -> str:
    created = result_now(peer.service.create_room(creator, room_version=version, **kwargs))
    room_id: str = created["room_id"]
    return room_id


def joined(network: Network, a: Peer, b: Peer, version: str = "12") -> str:
    room_id = hosted(a, version)
    result_now(b.service.join(room_id, "bob", ["a.test"]))
    return room_id


def say(peer: Peer, room_id: str, user: str, text: str) -> str:
    answer = result_now(
        peer.service.send(room_id, user, MESSAGE, {"msgtype": "m.text", "body": text})
    )
    event_id: str = answer["event_id"]
    return event_id
