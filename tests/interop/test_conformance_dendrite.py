"""``stubserver conformance`` against the real Dendrite v0.13.8 of the interop environment
(issue 21): run as a user would, inside the namespace, driving the running ``direct.test``
stub through its control API, for the room versions Dendrite's ``/capabilities`` lists
among the suite's (10 and 11: its gomatrixserverlib predates v12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.conformance_run import check_preflight_stops_a_lost_peer, run_whole_suite
from tests.interop.dendrite import DendriteEnvironment

pytestmark = pytest.mark.interop

#: Dendrite's deviations from the spec, as stubserver/conformance/expected/dendrite.txt
#: names them (each line there says what the spec says).
KNOWN_DEVIATIONS = [
    "acl.denied_edus_dropped/v10",
    "acl.denied_edus_dropped/v11",
    "acls.denied_server_edus_dropped",
    "auth.other_destination_refused",
    "devices.its_joining_user_announced",
    "directory.public_rooms_filtered",
    "directory.space_hierarchy_served",
    "directory.timestamp_to_event_served",
    "edus.typing_of_a_non_member_ignored/v10",
    "edus.typing_of_a_non_member_ignored/v11",
    "invites.its_invite_room_state_holds_the_create_event/v10",
    "invites.its_invite_room_state_holds_the_create_event/v11",
    "knocks.hand_built_knock_accepted/v10",
    "knocks.hand_built_knock_accepted/v11",
    "knocks_restricted.hand_built_knock_accepted/v10",
    "knocks_restricted.hand_built_knock_accepted/v11",
    "pdus.unauthorized_event_rejected/v10",
    "pdus.unauthorized_event_rejected/v11",
    "redaction.ours_applied/v11",
    "rejection.rejected_auth_event_fetched/v10",
    "rejection.rejected_auth_event_fetched/v11",
    "serving.get_missing_events_limit/v10",
    "serving.get_missing_events_limit/v11",
    "serving.refused_to_a_server_not_in_the_room/v10",
    "serving.refused_to_a_server_not_in_the_room/v11",
    "unverifiable.state_with_unverifiable_auth_event_not_taken/v10",
    "unverifiable.state_with_unverifiable_auth_event_not_taken/v11",
]

#: Tests that skip against Dendrite because it takes a way the spec leaves open (each
#: test's skip reason says which): its client refuses to redact an event it does not hold;
#: and the room version 12 state resolution tests, which need room version 12 (its
#: /capabilities offers 10 and 11 only).
SPEC_ALLOWED_SKIPS = [
    "redaction.of_unknown_event_sent/v10",
    "redaction.of_unknown_event_sent/v11",
    "stateres.creator_sorts_before_admin/v12",
    "stateres.v21_starts_from_empty_set/v12",
    "stateres.v21_includes_conflicted_subgraph/v12",
]


def test_every_conformance_test_passes_against_dendrite(
    dendrite_env: DendriteEnvironment, tmp_path: Path
) -> None:
    """Every test of the suite runs against Dendrite for v10 and v11 and passes (exit 0),
    but those the shipped expected-failures file ``dendrite`` names, which fail as
    expected, and the refusal tests over a baseline among them, skipped without a verdict
    (the six ``send_knock`` refusals per join rule and version: Dendrite has no knocking,
    so there is nothing to refuse), and the allowed skips named here (the room version 12
    tests among them, in no room version); the JSON has
    the documented shape, and the JUnit file lists every test."""
    run_whole_suite(
        dendrite_env,
        "dendrite",
        tmp_path,
        versions={"10", "11"},
        known=KNOWN_DEVIATIONS,
        allowed_skips=SPEC_ALLOWED_SKIPS,
    )


def test_a_peer_dendrite_cannot_reach_stops_the_run_in_seconds(
    dendrite_env: DendriteEnvironment, tmp_path: Path
) -> None:
    """The preflight works against Dendrite as against Synapse: a peer whose name Dendrite
    cannot resolve is found out through Dendrite's notary (POST /_matrix/key/v2/query),
    and the run stops, exit 2, within seconds, with the way-back hint; no test ran."""
    check_preflight_stops_a_lost_peer(dendrite_env, tmp_path)
