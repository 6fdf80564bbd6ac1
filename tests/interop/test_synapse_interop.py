"""stubserver against a real Synapse, each finding the other through DNS and delegation:
the cases of tests/interop/federation_cases.py, on the Synapse environment."""

from __future__ import annotations

import pytest

from tests.interop.federation_cases import FederationInteropCases
from tests.interop.harness import InteropEnvironment

pytestmark = pytest.mark.interop


class TestSynapse(FederationInteropCases):
    """Keys, notary and signed requests both ways between the stubs and Synapse."""

    auth_failure_errcode = "M_UNAUTHORIZED"

    @pytest.fixture
    def peer_env(self, interop_env: InteropEnvironment) -> InteropEnvironment:
        """The Synapse environment."""
        return interop_env
