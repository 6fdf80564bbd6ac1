"""The to-device test's recipient: a device no other test reads the /sync of, when the
homeserver gave a third user (a device's to-device messages are gone once one /sync of
it has passed them)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from stubserver.conformance.context import Context
from stubserver.conformance.suite_devices import _to_device_recipient
from stubserver.testing import Homeserver, HomeserverUser, Peer


def _context(count: int) -> tuple[Context, list[HomeserverUser]]:
    users = [cast(HomeserverUser, object()) for _ in range(count)]
    ctx = Context(cast(Peer, object()), cast(Homeserver, object()), users, "hs.test", Path("x"))
    return ctx, users


def test_the_third_user_gets_it_when_there_is_one() -> None:
    """Three users: the third (whose /sync the device list and presence tests never read)."""
    ctx, users = _context(3)
    assert _to_device_recipient(ctx) is users[2]


def test_the_second_user_gets_it_otherwise() -> None:
    """Two users: the second, as before."""
    ctx, users = _context(2)
    assert _to_device_recipient(ctx) is users[1]
