"""Calling a room endpoint group's handler directly, without a router."""

from __future__ import annotations

import io
import json
from typing import Any, cast

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from stubserver.rooms.hooks import CallbackHooks
from stubserver.rooms.intake import Intake
from stubserver.rooms.routes_common import RoomEndpointParts
from stubserver.rooms.store import RoomStore
from stubserver.rooms.transaction import TransactionMemory
from stubserver.server.router import request_annotations
from tests.rooms.room_fixtures import A_SIGNER, B_SIGNER, TS


def parts() -> RoomEndpointParts:
    """a.test's endpoint parts: an empty store, b.test's key known, the clock at TS."""
    clock = Clock()
    clock.advance(TS / 1000)
    store = RoomStore("a.test", TransactionMemory(clock))
    key = B_SIGNER.signing_key.verify_key
    return RoomEndpointParts(store, A_SIGNER, Intake(lambda s, k, t: succeed(key)), clock)


def no_hooks() -> CallbackHooks:
    """Hooks that are told nothing."""
    return CallbackHooks()


def signed_in(
    method: str,
    path: str,
    body: Any = None,
    *,
    origin: str = "b.test",
    args: dict[bytes, list[bytes]] | None = None,
) -> IRequest:
    """A request as the X-Matrix filter leaves it: ``origin`` authenticated, the body
    parsed into the annotations."""
    dummy: Any = DummyRequest([])
    dummy.method = method.encode()
    dummy.uri = dummy.path = path.encode()
    dummy.args = args or {}
    request = cast(IRequest, dummy)
    request_annotations(request).update(
        origin=origin, authenticated=True, auth_error=None, content=body
    )
    dummy.content = None if body is None else io.BytesIO(json.dumps(body).encode())
    return request
