"""The judging of ``send_join``/``send_leave`` v1 answers (``stubserver.conformance.handshakes``)
and the v1 area's baselines, fed with canned answers."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.conformance.handshakes import answer_body, unrecognised
from stubserver.conformance.runner import CheckFailed
from stubserver.conformance.suite import build_suite
from stubserver.testing import FederationAnswer


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        (405, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        (400, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        (404, "404 page not found"),
        (404, {}),
    ],
)
def test_an_unserved_endpoint_is_recognised(status: int, body: Any) -> None:
    """404, 405 or 400 ``M_UNRECOGNIZED``, or a 404 with no Matrix error: the endpoint
    is not served (the v1 tests then skip: the spec removed v1 in v1.18)."""
    assert unrecognised(FederationAnswer(status, body))


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, [200, {}]),
        (400, {"errcode": "M_BAD_JSON", "error": "not a join"}),
        (403, {"errcode": "M_FORBIDDEN", "error": "banned"}),
        (404, {"errcode": "M_NOT_FOUND", "error": "Unknown room"}),
    ],
)
def test_an_answer_of_a_served_endpoint_is_not_taken_for_unserved(status: int, body: Any) -> None:
    """A refusal (400, 403, 404 ``M_NOT_FOUND``) or a success comes from an endpoint that
    is served: judged as such, never skipped."""
    assert not unrecognised(FederationAnswer(status, body))


def test_a_v1_answer_is_unwrapped() -> None:
    """``[200, {...}]`` gives its object, for send_join and send_leave v1."""
    state: dict[str, Any] = {"state": [], "auth_chain": []}
    assert answer_body("join", "v1", FederationAnswer(200, [200, state])) == state
    assert answer_body("leave", "v1", FederationAnswer(200, [200, {}])) == {}


@pytest.mark.parametrize(
    "body",
    [{"state": [], "auth_chain": []}, [200], [201, {}], [200, {}, {}], [200, []], None],
)
def test_a_v1_answer_of_another_shape_fails(body: Any) -> None:
    """A v1 answer that is not ``[200, {...}]`` (the v2 object, a wrong code, a third
    item, a list where the object goes) fails, naming the shape the spec gives."""
    with pytest.raises(CheckFailed) as failure:
        answer_body("join", "v1", FederationAnswer(200, body))
    assert "its send_join v1 answer" in str(failure.value)
    assert "[200, {...}]" in str(failure.value)


def test_v2_and_knock_answers_are_the_object_itself() -> None:
    """v2 send_join and send_leave, and v1 send_knock (which has no v2), answer the
    object."""
    assert answer_body("join", "v2", FederationAnswer(200, {"state": []})) == {"state": []}
    assert answer_body("knock", "v1", FederationAnswer(200, {"knock_room_state": []})) == {
        "knock_room_state": []
    }


def test_the_v1_refusals_each_have_their_v1_baseline() -> None:
    """The v1 tests run once (in the newest version, ids without ``/vN``): each of the
    six v1 refusals of joins and leaves depends on its v1 baseline, which comes before
    it."""
    suite = build_suite(["10", "11", "12"])
    position = {t.id: i for i, t in enumerate(suite)}
    v1 = [t for t in suite if t.id.split(".")[0] in ("joins_v1", "leaves_v1")]
    assert len(v1) == 2 * 7
    for test in v1:
        area = test.id.split(".")[0]
        assert "/" not in test.id
        kind = "join" if area == "joins_v1" else "leave"
        baseline = f"{area}.hand_built_{kind}_accepted"
        if test.id == baseline:
            assert test.depends_on == ()
        else:
            assert test.depends_on == (baseline,)
            assert position[baseline] < position[test.id]
