"""The device endpoints, called without a router."""

from __future__ import annotations

import pytest

from stubserver.rooms.routes_devices import DeviceEndpoints
from stubserver.server.router import MatrixError
from tests.rooms.endpoint_fixtures import parts, signed_in

ALICE = "@alice:a.test"
KEYS = {"user_id": ALICE, "device_id": "D1", "keys": {"ed25519:D1": "k"}}


def test_user_devices_answers_our_users_devices() -> None:
    """``GET /user/devices/{userId}``: the store's answer for a user of ours."""
    p = parts()
    p.store.devices.update(ALICE, "D1", KEYS, "phone")
    request = signed_in("GET", "/_matrix/federation/v1/user/devices/%40alice%3Aa.test")
    response = DeviceEndpoints(p).user_devices(request, {"userId": ALICE})
    assert (response.status, response.body) == (
        200,
        {
            "user_id": ALICE,
            "stream_id": 1,
            "devices": [{"device_id": "D1", "keys": KEYS, "device_display_name": "phone"}],
        },
    )


def test_keys_query_answers_the_keys_of_our_users_devices() -> None:
    """``POST /user/keys/query``: the device keys of the devices named (or all)."""
    p = parts()
    p.store.devices.update(ALICE, "D1", KEYS)
    body: dict[str, object] = {"device_keys": {ALICE: []}}
    request = signed_in("POST", "/_matrix/federation/v1/user/keys/query", body)
    response = DeviceEndpoints(p).keys_query(request, {})
    assert (response.status, response.body) == (200, {"device_keys": {ALICE: {"D1": KEYS}}})


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"device_keys": {"@bob:b.test": []}}, "M_INVALID_PARAM"),
        ({"device_keys": {ALICE: "D1"}}, "M_BAD_JSON"),
        ({"device_keys": [ALICE]}, "M_BAD_JSON"),
        ({}, "M_BAD_JSON"),
    ],
    ids=["another server's user", "devices not a list", "not an object", "missing"],
)
def test_a_bad_keys_query_is_400(body: object, errcode: str) -> None:
    """A user of another server, or a body of the wrong shape, is 400."""
    request = signed_in("POST", "/_matrix/federation/v1/user/keys/query", body)
    with pytest.raises(MatrixError) as raised:
        DeviceEndpoints(parts()).keys_query(request, {})
    assert (raised.value.status, raised.value.errcode) == (400, errcode)


def test_devices_of_another_servers_user_are_400() -> None:
    """``/user/devices`` of a user who is not ours: 400 M_INVALID_PARAM."""
    request = signed_in("GET", "/_matrix/federation/v1/user/devices/%40bob%3Ab.test")
    with pytest.raises(MatrixError) as raised:
        DeviceEndpoints(parts()).user_devices(request, {"userId": "@bob:b.test"})
    assert (raised.value.status, raised.value.errcode) == (400, "M_INVALID_PARAM")
