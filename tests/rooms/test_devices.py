"""Our users' device lists: the EDU of each change, and the two answers that agree with it."""

from __future__ import annotations

import pytest

from stubserver.rooms import devices
from stubserver.rooms.devices import DeviceLists, TooManyDevices

ALICE = "@alice:stub.test"
KEYS = {"user_id": ALICE, "device_id": "D1", "keys": {"ed25519:D1": "k"}}


def test_each_change_gets_the_next_stream_id_and_names_the_one_before() -> None:
    """The first update has stream_id 1 and no prev_id; the next has 2 and prev_id [1];
    keys and display name are in the EDU only when given."""
    lists = DeviceLists()
    first = lists.update(ALICE, "D1", KEYS, "phone")
    assert first == {
        "user_id": ALICE,
        "stream_id": 1,
        "prev_id": [],
        "device_id": "D1",
        "keys": KEYS,
        "device_display_name": "phone",
    }
    second = lists.update(ALICE, "D2")
    assert (second["stream_id"], second["prev_id"]) == (2, [1])
    assert "keys" not in second and "device_display_name" not in second


def test_user_devices_lists_every_device_at_the_latest_stream_id() -> None:
    """``/user/devices``: the user, its stream_id, each device as last given; a user
    without devices gets none at stream_id 0."""
    lists = DeviceLists()
    lists.update(ALICE, "D1", {"old": True})
    lists.update(ALICE, "D1", KEYS)
    lists.update(ALICE, "D0")
    assert lists.devices_answer(ALICE) == {
        "user_id": ALICE,
        "stream_id": 3,
        "devices": [{"device_id": "D0"}, {"device_id": "D1", "keys": KEYS}],
    }
    assert lists.devices_answer("@bob:stub.test") == {
        "user_id": "@bob:stub.test",
        "stream_id": 0,
        "devices": [],
    }


def test_keys_query_gives_the_keys_of_the_devices_asked_or_all() -> None:
    """``/user/keys/query``: the named devices' keys, every device's for an empty list;
    devices without keys, unknown devices and unknown users give nothing."""
    lists = DeviceLists()
    lists.update(ALICE, "D1", KEYS)
    lists.update(ALICE, "D2")
    assert lists.keys_answer({ALICE: []}) == {"device_keys": {ALICE: {"D1": KEYS}}}
    assert lists.keys_answer({ALICE: ["D2", "D9"], "@bob:stub.test": []}) == {
        "device_keys": {ALICE: {}, "@bob:stub.test": {}}
    }


def test_the_lists_are_bounded() -> None:
    """More devices of one user than the bound is refused; replacing one is not."""
    lists = DeviceLists()
    for i in range(devices.MAX_DEVICES_PER_USER):
        lists.update(ALICE, f"D{i}")
    lists.update(ALICE, "D0", KEYS)
    with pytest.raises(TooManyDevices):
        lists.update(ALICE, "one-too-many")
