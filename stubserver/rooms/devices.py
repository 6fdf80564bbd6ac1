"""Our users' devices and their device lists, as a homeserver keeps them for federation
(Server-Server API v1.19, "Device Management", "End-to-End Encryption").

:class:`DeviceLists` holds, per user of ours, the devices a test gave them (an ID, the
device keys, a display name) and the user's device-list stream: each change gets the
next ``stream_id`` and names the one before as its ``prev_id``, so the
``m.device_list_update`` EDU it returns, the ``/user/devices`` answer and the
``/user/keys/query`` answer agree. Pure and in memory; bounded by the module's constants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from stubserver.signing.canonical_json import JsonDict

#: Most users with devices, and most devices of one user.
MAX_DEVICE_USERS: Final = 1_000
MAX_DEVICES_PER_USER: Final = 100


class TooManyDevices(Exception):
    """:data:`MAX_DEVICE_USERS` or :data:`MAX_DEVICES_PER_USER` is reached."""


@dataclass
class _DeviceList:
    stream_id: int = 0
    devices: dict[str, JsonDict] = field(default_factory=dict)


@dataclass
class DeviceLists:
    """Our users' devices by user ID, then device ID."""

    _users: dict[str, _DeviceList] = field(default_factory=dict)

    def update(
        self,
        user_id: str,
        device_id: str,
        keys: Mapping[str, Any] | None = None,
        display_name: str | None = None,
    ) -> JsonDict:
        """Add or replace ``user_id``'s device; the content of the ``m.device_list_update``
        EDU that announces it (``user_id``, ``device_id``, ``stream_id``, ``prev_id``, and
        ``keys`` and ``device_display_name`` when given)."""
        found = self._users.get(user_id)
        if found is None:
            if len(self._users) >= MAX_DEVICE_USERS:
                raise TooManyDevices(f"more than {MAX_DEVICE_USERS} users with devices")
            found = self._users[user_id] = _DeviceList()
        if device_id not in found.devices and len(found.devices) >= MAX_DEVICES_PER_USER:
            raise TooManyDevices(f"more than {MAX_DEVICES_PER_USER} devices of {user_id}")
        device: JsonDict = {"device_id": device_id}
        if keys is not None:
            device["keys"] = dict(keys)
        if display_name is not None:
            device["device_display_name"] = display_name
        found.devices[device_id] = device
        prev = [found.stream_id] if found.stream_id else []
        found.stream_id += 1
        return {"user_id": user_id, "stream_id": found.stream_id, "prev_id": prev, **device}

    def devices_answer(self, user_id: str) -> JsonDict:
        """The ``GET /user/devices/{userId}`` answer (a user with none: no devices,
        ``stream_id`` 0)."""
        found = self._users.get(user_id) or _DeviceList()
        return {
            "user_id": user_id,
            "stream_id": found.stream_id,
            "devices": [dict(d) for _, d in sorted(found.devices.items())],
        }

    def keys_answer(self, wanted: Mapping[str, Sequence[str]]) -> JsonDict:
        """The ``POST /user/keys/query`` answer for ``{user_id: [device_id, ...]}`` (an
        empty list: every device): the keys of those that have keys."""
        device_keys: JsonDict = {}
        for user_id, device_ids in wanted.items():
            found = self._users.get(user_id) or _DeviceList()
            chosen = device_ids or sorted(found.devices)
            device_keys[user_id] = {
                d: dict(found.devices[d]["keys"])
                for d in chosen
                if d in found.devices and "keys" in found.devices[d]
            }
        return {"device_keys": device_keys}
