"""The room version 12 state resolution area (pure): which tests it makes for the room
versions the homeserver offers, and the check of our own resolution's premise."""

from __future__ import annotations

import pytest

from stubserver.conformance import suite_stateres_v12 as area
from stubserver.conformance.runner import Skipped
from stubserver.conformance.suite_stateres_v12 import JOIN_RULES, unmet

IDS = [
    "stateres.creator_sorts_before_admin/v12",
    "stateres.v21_starts_from_empty_set/v12",
    "stateres.v21_includes_conflicted_subgraph/v12",
]


def test_the_three_tests_run_in_room_version_12_only() -> None:
    """With v12 offered: the three tests, in v12 only, whatever else is offered."""
    for versions in (["12"], ["10", "11", "12"]):
        made = area.tests(versions)
        assert [t.id for t in made] == IDS
        assert {t.room_version for t in made} == {"12"}


def test_without_room_version_12_the_same_ids_skip_saying_why() -> None:
    """Without v12 (Dendrite v0.13.8 offers 10 and 11): the same ids, in no room version,
    each skipped because the homeserver does not offer room version 12."""
    made = area.tests(["10", "11"])
    assert [t.id for t in made] == IDS
    assert {t.room_version for t in made} == {None}
    for test in made:
        with pytest.raises(Skipped, match="does not offer room version 12"):
            test.run(object())  # type: ignore[arg-type]


def test_unmet_names_each_wanted_key_the_state_does_not_hold() -> None:
    """A wanted key held by another event, or missing, is named with what is there;
    a state holding all of them leaves nothing."""
    member = ("m.room.member", "@a:p")
    wanted = {JOIN_RULES: "$invite", member: "$leave"}
    assert unmet({JOIN_RULES: "$invite", member: "$leave", ("x", ""): "$x"}, wanted) == {}
    assert unmet({JOIN_RULES: "$public", member: "$leave"}, wanted) == {
        "m.room.join_rules/": "$public"
    }
    assert unmet({member: "$join"}, wanted) == {
        "m.room.join_rules/": None,
        "m.room.member/@a:p": "$join",
    }
