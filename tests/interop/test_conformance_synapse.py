"""``stubserver conformance`` against the interop environment's real Synapse 1.163.2
(issue 14): run as a user would, inside the namespace, driving the running ``direct.test``
stub through its control API."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.conformance_run import check_preflight_stops_a_lost_peer, run_whole_suite
from tests.interop.harness import InteropEnvironment

pytestmark = pytest.mark.interop


def test_every_conformance_test_passes_against_synapse(
    interop_env: InteropEnvironment, tmp_path: Path
) -> None:
    """Every test of the suite passes against Synapse for v10, v11 and v12 (exit 0) but
    those the shipped expected-failures file names, which fail as expected; the JSON has
    the documented shape, and the JUnit file lists every test."""
    run_whole_suite(
        interop_env,
        "synapse",
        tmp_path,
        versions={"10", "11", "12"},
        known=[
            "keys.notary_minimum_valid_until_ts_optional",
            *(f"edus.typing_of_a_non_member_ignored/v{v}" for v in ("10", "11", "12")),
            "devices.its_joining_user_announced",
        ],
    )


def test_a_peer_synapse_cannot_reach_stops_the_run_in_seconds(
    interop_env: InteropEnvironment, tmp_path: Path
) -> None:
    """A peer whose name Synapse cannot resolve (no DNS record): the preflight finds that
    Synapse cannot fetch its keys and stops the run, exit 2, within seconds rather than
    after every test's time-out, with stubserver check's way-back hint; no test ran."""
    check_preflight_stops_a_lost_peer(interop_env, tmp_path)
