"""The unverifiable-state area's shape: each refusal over its baseline, every case per
room version."""

from __future__ import annotations

from stubserver.conformance.suite import build_suite


def test_each_unverifiable_case_depends_on_its_rightly_signed_baseline() -> None:
    """The three broken signatures depend on the rightly signed extra join, the
    unverifiable auth event on the rightly signed join-and-leave; six tests a version,
    each baseline before its dependants."""
    suite = build_suite(["10", "11", "12"])
    position = {t.id: i for i, t in enumerate(suite)}
    tests = [t for t in suite if t.id.startswith("unverifiable.")]
    assert len(tests) == 3 * 6
    for test in tests:
        name, version = test.id.split("/")
        if name.endswith("_kept"):
            assert test.depends_on == ()
            continue
        baseline = (
            "unverifiable.verified_auth_event_kept"
            if "auth_event" in name
            else "unverifiable.verified_extra_state_kept"
        )
        assert test.depends_on == (f"{baseline}/{version}",)
        assert position[test.depends_on[0]] < position[test.id]
