"""stubserver against a real Dendrite v0.13.8, each finding the other through DNS and
delegation (issue 21): the cases of tests/interop/federation_cases.py, on the Dendrite
environment (tests/interop/dendrite.py). Dendrite resolves the stubs with Go's resolver
through the tests' DNS server, so these also test what the stubs serve to a second
implementation of "Resolving server names"."""

from __future__ import annotations

import pytest

from tests.interop.dendrite import DendriteEnvironment
from tests.interop.federation_cases import FederationInteropCases

pytestmark = pytest.mark.interop


class TestDendrite(FederationInteropCases):
    """Keys, notary and signed requests both ways between the stubs and Dendrite."""

    #: gomatrixserverlib's VerifyHTTPRequest answers ``{"message": ...}``, no errcode.
    auth_failure_errcode = None

    expected_failures = {
        "test_homeserver_rejects_bad_request_the_same_way[wrong_destination]": (
            "Dendrite deviation: a request whose X-Matrix destination is another server"
            " gets 400 'Unrecognised server name for Destination' (gomatrixserverlib"
            " fclient/request.go, VerifyHTTPRequest); the spec says 'the receiving server"
            " must deny the request with an HTTP status code 401 Unauthorized'"
            " (Server-Server API, Request Authentication). No Dendrite issue found."
        ),
    }

    @pytest.fixture
    def peer_env(self, dendrite_env: DendriteEnvironment) -> DendriteEnvironment:
        """The Dendrite environment."""
        return dendrite_env
