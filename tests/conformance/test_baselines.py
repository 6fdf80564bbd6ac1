"""Negative tests give a verdict only over their positive baseline: the request-auth
refusals run against a fake homeserver that answers 401 to everything are skipped with why
(they once passed it), and pass against one that checks signatures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from stubserver.conformance import suite_keys
from stubserver.conformance.context import AreaEntry, Context, once_in_newest, per_version
from stubserver.conformance.runner import (
    ConformanceTest,
    Skipped,
    run_tests,
    select,
    without_baseline,
)
from stubserver.conformance.runner import TestResult as Result
from stubserver.conformance.suite import build_suite
from stubserver.signing.keys import ServerSigningKey

KEY = ServerSigningKey.generate("a")
REFUSALS = ["auth.bad_signature_refused", "auth.other_destination_refused", "auth.unsigned_refused"]


class FakeContext:
    """What the request-auth tests use of the context: ``raw`` answered by ``judge``."""

    server_name = "hs.test"
    user = SimpleNamespace(user_id="@alice:hs.test")

    def __init__(self, accepts_ours: bool) -> None:
        self.accepts_ours = accepts_ours

    def our_key(self) -> ServerSigningKey:
        return KEY

    def raw(
        self, method: str, path: str, *, key: ServerSigningKey | None, destination: str, **_: Any
    ) -> tuple[int, Any]:
        ours = key is KEY and destination == self.server_name
        if ours and self.accepts_ours:
            return 200, {"displayname": "alice"}
        return 401, {"errcode": "M_UNAUTHORIZED"}


def _auth_results(ctx: FakeContext, concurrency: int) -> dict[str, Result]:
    tests = select(suite_keys.tests(), "auth.*")
    results = run_tests(tests, ctx, concurrency=concurrency)  # type: ignore[misc]
    return {r.id: r for r in results}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_server_that_refuses_everything_gets_no_verdict_on_the_refusals(
    concurrency: int,
) -> None:
    """401 to every request: the baseline fails, the three refusals are skipped naming
    it and its failure, never passed."""
    results = _auth_results(FakeContext(accepts_ours=False), concurrency)
    assert results["auth.signed_request_accepted"].result == "failed"
    for test_id in REFUSALS:
        assert results[test_id].result == "skipped"
        assert (results[test_id].reason or "").startswith(
            "no verdict: its baseline auth.signed_request_accepted did not pass (failed: "
            "a correctly signed profile query"
        )


def test_a_server_that_checks_signatures_passes_baseline_and_refusals() -> None:
    """Our signed request answered, the others refused 401: all four pass."""
    results = _auth_results(FakeContext(accepts_ours=True), 4)
    assert {r.result for r in results.values()} == {"passed"}
    assert set(results) == {"auth.signed_request_accepted", *REFUSALS}


def test_selecting_a_negative_test_brings_its_baseline() -> None:
    """``--only auth.unsigned_refused`` runs the baseline too, first."""
    chosen = [t.id for t in select(suite_keys.tests(), "auth.unsigned_refused")]
    assert chosen == ["auth.signed_request_accepted", "auth.unsigned_refused"]


def _skip(ctx: object) -> None:
    raise Skipped("needs two users")


def test_a_skipped_or_missing_baseline_gives_no_verdict_and_order_is_checked() -> None:
    """A baseline skipped (or never run) skips its dependents with why; a suite listing a
    test before its baseline is refused."""
    base: ConformanceTest[object] = ConformanceTest("base", "Rejection", None, _skip)
    negative: ConformanceTest[object] = ConformanceTest(
        "neg", "Rejection", None, lambda ctx: None, depends_on=("base",)
    )
    [_, skipped] = run_tests([base, negative], object(), concurrency=1)
    assert skipped.result == "skipped"
    assert skipped.reason == (
        "no verdict: its baseline base did not pass (skipped: needs two users)"
    )
    assert without_baseline("base", None) == "no verdict: its baseline base was not run"
    with pytest.raises(ValueError, match="neg comes before its baselines"):
        run_tests([negative, base], object(), concurrency=1)


def test_a_per_version_entry_names_its_baselines_in_the_same_version() -> None:
    """An area entry's fourth item becomes ``depends_on`` of the same room version, so a
    negative test of v11 waits for (and is skipped without) its v11 baseline."""

    def noop(ctx: Context, version: str) -> None:
        return None

    area: list[AreaEntry] = [("a.base", "S", noop), ("a.refused", "S", noop, ("a.base",))]
    tests = {t.id: t for t in per_version(area, ["10", "11"])}
    assert tests["a.refused/v11"].depends_on == ("a.base/v11",)
    assert tests["a.base/v10"].depends_on == ()
    assert list(tests) == ["a.base/v10", "a.refused/v10", "a.base/v11", "a.refused/v11"]


def test_the_new_negative_tests_each_have_a_baseline() -> None:
    """Every refusal of the serving, joins and invites areas (and the hidden-history and
    over-the-limit transaction tests) depends on a positive test that comes before it in
    the suite."""
    suite = build_suite(["10", "11", "12"])
    position = {t.id: i for i, t in enumerate(suite)}
    hidden_history = ("history_visibility_joined", "history_visibility_invited")
    negatives = [
        t
        for t in suite
        if (
            t.id.split(".")[0] in ("serving", "joins", "invites")
            and ("refused" in t.id or any(h in t.id for h in hidden_history))
        )
        or "another_event_id" in t.id
        or "not_processed_whole" in t.id
    ]
    # 17 per version and the two over-the-limit transactions, run once (the limits are the
    # transaction's, not the room version's).
    assert len(negatives) == 3 * 17 + 2
    for test in negatives:
        assert test.depends_on, test.id
        assert all(position[d] < position[test.id] for d in test.depends_on), test.id


def test_the_membership_areas_tests_each_have_a_baseline() -> None:
    """Every test of the leaves, knocks, restricted-join, partial-state and new invites
    areas but the positive ones depends on a positive test that comes before it: 6
    refusals per leave and knock kind (two knock join rules), 1 restricted refusal per
    join rule, 4 invite tests and the omit_members join, in each of 3 versions."""
    suite = build_suite(["10", "11", "12"])
    position = {t.id: i for i, t in enumerate(suite)}
    areas = ("leaves", "knocks", "knocks_restricted", "restricted", "partial_state", "invites")
    tests = [t for t in suite if t.id.split(".")[0] in areas]
    positive = [t.id for t in tests if not t.depends_on]
    assert sorted({p.rsplit("/", 1)[0] for p in positive}) == [
        "knocks.hand_built_knock_accepted",
        "knocks_restricted.hand_built_knock_accepted",
        "leaves.hand_built_leave_accepted",
        "restricted.join_authorised_by_its_user",
        "restricted.knock_restricted.join_authorised_by_its_user",
    ]
    negatives = [t for t in tests if t.depends_on]
    assert len(negatives) == 3 * (6 * 3 + 2 + 5 + 1)
    for test in negatives:
        assert test.depends_on, test.id
        assert all(position[d] < position[test.id] for d in test.depends_on), test.id


def test_a_once_entry_runs_in_the_newest_version_without_a_version_in_its_id() -> None:
    """``once_in_newest``: one test per entry, id and baselines without ``/vN``, no room
    version of its own, run in the newest version given; nothing without versions."""
    seen: list[str] = []

    def note(ctx: Context, version: str) -> None:
        seen.append(version)

    area: list[AreaEntry] = [("a.base", "S", note), ("a.refused", "S", note, ("a.base",))]
    tests = once_in_newest(area, ["10", "11", "12"])
    assert [(t.id, t.room_version, t.depends_on) for t in tests] == [
        ("a.base", None, ()),
        ("a.refused", None, ("a.base",)),
    ]
    for test in tests:
        test.run(cast("Context", None))
    assert seen == ["12", "12"]
    assert once_in_newest(area, []) == []


def test_the_negative_tests_of_guards_devices_and_queries_have_baselines() -> None:
    """Every refusal or ignored EDU of the spoofing, ACL, presence, device and query
    areas depends on positive tests that come before it in the suite."""
    suite = build_suite(["10", "11", "12"])
    position = {t.id: i for i, t in enumerate(suite)}
    negatives = [
        t
        for t in suite
        if t.id.split(".")[0] in ("edus", "acl", "queries", "media", "devices", "presence")
        and any(w in t.id for w in ("ignored", "refused", "dropped", "served", "our_presence"))
        and t.id.split("/")[0]
        not in (
            "devices.keys_claim_served",
            "queries.profile_served",
            "media.download_served",
            "media.thumbnail_served",
        )
    ]
    assert len(negatives) == 3 * 5 + 5
    for test in negatives:
        assert test.depends_on, test.id
        assert all(position[d] < position[test.id] for d in test.depends_on), test.id
