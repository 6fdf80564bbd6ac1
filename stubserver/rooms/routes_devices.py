"""The device endpoints: ``GET /v1/user/devices/{userId}`` and ``POST /v1/user/keys/query``
for our users, from the store's :class:`~stubserver.rooms.devices.DeviceLists` (spec:
Server-Server API "Device Management", "End-to-End Encryption"). A user of another
server is 400 ``M_INVALID_PARAM`` (as Synapse answers: not hosted here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from twisted.web.iweb import IRequest

from stubserver.auth.filter import require_origin
from stubserver.rooms.routes_common import V1, RoomEndpointParts, json_object
from stubserver.server.router import JsonResponse, MatrixError, Route

#: Most users one keys query may name.
MAX_QUERIED_USERS: Final = 1_000


class DeviceEndpoints:
    """The device endpoints over ``parts``' store."""

    def __init__(self, parts: RoomEndpointParts) -> None:
        self._parts = parts

    def routes(self) -> list[Route]:
        """The route table."""
        return [
            Route("GET", f"{V1}/user/devices/{{userId}}", self.user_devices),
            Route("POST", f"{V1}/user/keys/query", self.keys_query),
        ]

    def _ours(self, user_id: str) -> str:
        if user_id.partition(":")[2] != self._parts.ours or not user_id.startswith("@"):
            raise MatrixError(400, "M_INVALID_PARAM", f"{user_id[:300]!r} is not a user of ours")
        return user_id

    def user_devices(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``GET /v1/user/devices/{userId}``: the user's devices and stream position."""
        require_origin(request)
        user_id = self._ours(params["userId"])
        return JsonResponse(200, self._parts.store.devices.devices_answer(user_id))

    def keys_query(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``POST /v1/user/keys/query`` ``{"device_keys": {userId: [deviceId, ...]}}``."""
        require_origin(request)
        wanted = json_object(request).get("device_keys")
        if not isinstance(wanted, dict) or len(wanted) > MAX_QUERIED_USERS:
            raise MatrixError(400, "M_BAD_JSON", "'device_keys' must be an object of users")
        query: dict[str, list[str]] = {}
        for user_id, device_ids in wanted.items():
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise MatrixError(400, "M_BAD_JSON", f"the devices of {user_id[:300]!r}")
            query[self._ours(user_id)] = device_ids
        return JsonResponse(200, self._parts.store.devices.keys_answer(query))
