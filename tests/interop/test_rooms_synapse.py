"""Rooms against a real Synapse 1.163.2, for room versions 10, 11 and 12 (issue 13): the
cases of tests/interop/rooms_cases.py.

Each room version runs on a different stub, so that room traffic crosses every delegation
method both ways: v10 on ``direct.test``, v11 on ``wk.test`` (``.well-known``), v12 on
``srv.test`` (SRV).
"""

from __future__ import annotations

import pytest

from tests.interop.harness import InteropEnvironment
from tests.interop.rooms_cases import RoomsInteropCases, World, world_of

pytestmark = pytest.mark.interop

#: (room version, the stub that plays it): each version through another delegation method.
VERSIONS = [("10", "direct.test"), ("11", "wk.test"), ("12", "srv.test")]
IDS = ["v10-direct", "v11-well_known", "v12-srv"]


class TestSynapseRooms(RoomsInteropCases):
    """Rooms both ways between the stubs and Synapse."""

    @pytest.fixture(params=VERSIONS, ids=IDS)
    def world(self, request: pytest.FixtureRequest, interop_env: InteropEnvironment) -> World:
        """(room version, our stub's control API, Synapse's bob)."""
        version, stub_name = request.param
        return world_of(interop_env, version, stub_name)
