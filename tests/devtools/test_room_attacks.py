"""The in-memory rooms attack cases that scripts/soak.py reports (issue 22 rows 3-5)."""

from __future__ import annotations

from stubserver.devtools import room_attacks


def test_the_auth_chain_case_answers_the_whole_chain() -> None:
    """Row 3: after 300 displayname changes, state_ids at the last one answers an auth
    chain holding all 300 (and the room's 3 older events), no error."""
    case = room_attacks.auth_chain_case(300)
    assert case["state_ids_auth_chain"] >= 300
    assert case["state_ids_state"] == 6


def test_the_extremities_case_resolves_nothing_per_event() -> None:
    """Row 4: 200 message forks or 100 conflicting ones cost no state resolution per
    message sent on a tip, as one extremity does."""
    case = room_attacks.extremities_case(200, 10)
    for label in ("one_extremity", "message_forks", "conflicting_forks"):
        assert case[label]["resolutions_per_event"] == 0
        assert case[label]["state_sets_per_event"] == 0
    assert case["message_forks"]["forward_extremities"] == 200


def test_the_extremities_case_caps_the_forks_with_dummy_events() -> None:
    """Row 4: our sends into 200 message forks resolve no state and look at no more
    than twice the 10 extremities each cites; the dummy events then leave at most 10
    extremities, without a state resolution; with conflicting forks our merges resolve
    state (the forks' states differ) and no dummy event is needed after them (10 left)."""
    case = room_attacks.extremities_case(200, 10)
    forks = case["message_forks"]
    assert forks["our_sends"]["state_sets_per_event"] == 0
    assert forks["our_sends"]["heap_entries_per_event"] <= 20
    assert forks["dummy_events"]["sent"] >= 1
    assert forks["dummy_events"]["forward_extremities_after"] <= 10
    assert forks["dummy_events"]["state_sets"] == 0
    conflicting = case["conflicting_forks"]
    assert conflicting["our_sends"]["resolutions_per_event"] > 0
    assert conflicting["our_sends"]["forward_extremities_after"] <= 10
    assert conflicting["dummy_events"]["sent"] == 0


def test_the_history_case_visits_as_many_events_after_a_long_history() -> None:
    """Row 4: one resolution of two conflicting displaynames visits as many events after
    500 earlier changes as after 5."""
    case = room_attacks.resolution_history_case((5, 500))
    assert case["after_5_changes"] == case["after_500_changes"]
    assert case["after_5_changes"]["resolutions"] == 1


def test_the_visibility_case_serves_no_secret_in_full() -> None:
    """Row 5: a server that joined after history_visibility joined gets every earlier
    message redacted from backfill, and the redaction takes effect."""
    case = room_attacks.visibility_case(20)
    assert case["secrets_served_in_full"] == 0
    assert case["secrets_served_redacted"] == 20
    assert case["redacted_to_members"] == 1
