"""The judging code of the join failover tests (stubserver.conformance.suite_join_failover,
issue 23), fed with canned request feeds of our servers A and B: which requests are the
homeserver's attempts, their order, and which sequences show a join done through the
servers the faults left able to answer."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.conformance import suite_join_failover
from stubserver.conformance.runner import CheckFailed
from stubserver.conformance.suite_join_failover import (
    Attempt,
    attempts,
    first_tried,
    judge,
    story,
)

ROOM = "!room:a.test"
HS = "hs.test"
ROOM_Q = "%21room%3Aa.test"


def entry(
    kind: str, ts: int, status: int = 200, *, origin: str = HS, room: str = ROOM_Q, **more: Any
) -> dict[str, Any]:
    """A request log object of ``kind`` (make_join, send_join) for ``room``."""
    version = "v1" if kind == "make_join" else "v2"
    tail = "%40u%3Ahs.test?ver=12" if kind == "make_join" else "%24event"
    uri = f"/_matrix/federation/{version}/{kind}/{room}/{tail}"
    method = "GET" if kind == "make_join" else "PUT"
    return {"ts": ts, "method": method, "uri": uri, "origin": origin, "status": status, **more}


def test_attempts_are_the_homeservers_joins_of_the_room_in_order() -> None:
    """Attempts come from both feeds, ordered by arrival; requests of another room, of
    another origin, and other routes are left out; a refused one shows its fault."""
    feeds = {
        "a.test": [
            entry("make_join", 10, 499, fault="refused"),
            entry("make_join", 11, origin="other.test"),
            entry("make_join", 12, room="%21other%3Aa.test"),
            {"ts": 13, "uri": "/_matrix/key/v2/server", "origin": None, "status": 200},
        ],
        "b.test": [entry("send_join", 30), entry("make_join", 20)],
    }
    assert attempts(feeds, ROOM, HS) == [
        Attempt("a.test", "make_join", "refused", 10),
        Attempt("b.test", "make_join", "200", 20),
        Attempt("b.test", "send_join", "200", 30),
    ]


def test_v1_send_join_counts_too() -> None:
    """A ``send_join`` of the v1 API is an attempt as the v2 one is."""
    raw = entry("send_join", 5)
    raw["uri"] = raw["uri"].replace("/v2/", "/v1/")
    assert attempts({"b.test": [raw]}, ROOM, HS) == [Attempt("b.test", "send_join", "200", 5)]


A_REFUSED = Attempt("a.test", "make_join", "refused", 1)
A_404 = Attempt("a.test", "make_join", "404", 1)
A_MADE = Attempt("a.test", "make_join", "200", 1)
A_500 = Attempt("a.test", "send_join", "500", 2)
B_MADE = Attempt("b.test", "make_join", "200", 3)
B_SENT = Attempt("b.test", "send_join", "200", 4)
A_SENT = Attempt("a.test", "send_join", "200", 4)


def test_story_counts_runs() -> None:
    """Repeated attempts are counted (a retried send_join is one part, ``x4``)."""
    assert story([A_MADE, A_500, A_500, A_500, A_500, B_SENT]) == (
        "make_join at a.test 200, then send_join at a.test 500 x4, then send_join at b.test 200"
    )
    assert story([]) == "no make_join or send_join from it at our servers"


@pytest.mark.parametrize(
    ("seen", "make_at", "send_at"),
    [
        # A down: template and join both from B, after A's refusal or without trying A.
        ([A_REFUSED, A_REFUSED, B_MADE, B_SENT], ["b.test"], ["b.test"]),
        ([B_MADE, B_SENT], ["b.test"], ["b.test"]),
        # A's make_join 404: B's template, sent to B, or to A (any candidate may take it).
        ([A_404, B_MADE, B_SENT], ["b.test"], ["a.test", "b.test"]),
        ([A_404, B_MADE, A_SENT], ["b.test"], ["a.test", "b.test"]),
        # A's send_join failing: A's template sent to B (Synapse), or B's own (Dendrite).
        ([A_MADE, A_500, B_SENT], ["a.test", "b.test"], ["b.test"]),
        ([A_MADE, A_500, B_MADE, B_SENT], ["a.test", "b.test"], ["b.test"]),
    ],
)
def test_every_allowed_path_passes(
    seen: list[Attempt], make_at: list[str], send_at: list[str]
) -> None:
    """Every sequence the spec allows passes, and the note is the sequence."""
    assert judge(seen, make_join_at=make_at, send_join_at=send_at) == story(seen)


@pytest.mark.parametrize(
    ("seen", "make_at", "send_at", "named"),
    [
        ([], ["b.test"], ["b.test"], "the make_join behind its join"),
        ([A_REFUSED, B_SENT], ["b.test"], ["b.test"], "the make_join behind its join"),
        ([A_MADE, A_500], ["a.test", "b.test"], ["b.test"], "the send_join behind its join"),
        (
            [B_MADE, Attempt("b.test", "send_join", "403", 4)],
            ["b.test"],
            ["b.test"],
            "the send_join behind its join",
        ),
    ],
)
def test_a_join_not_done_through_our_servers_fails(
    seen: list[Attempt], make_at: list[str], send_at: list[str], named: str
) -> None:
    """A join with no template answered 200 where one could come from, or no send_join
    answered 200 where one could be taken, fails naming which, with what was seen."""
    with pytest.raises(CheckFailed) as caught:
        judge(seen, make_join_at=make_at, send_join_at=send_at)
    assert str(caught.value).startswith(named)
    assert story(seen) in str(caught.value)


def test_first_tried() -> None:
    """The note on A: tried first, tried later, or not tried."""
    assert first_tried([A_REFUSED, B_MADE], "a.test") == "a.test tried first"
    assert first_tried([B_MADE, A_SENT], "a.test") == "a.test tried, not first"
    assert first_tried([B_MADE, B_SENT], "a.test") == "a.test not tried"
    assert first_tried([], "a.test") == "a.test not tried"


def test_run_once_and_the_room_id_test_where_room_ids_name_a_server() -> None:
    """The tests run once, in the newest version; the room ID test in the newest version
    whose room IDs name a server (v11 of 10, 11, 12), and not at all without one."""
    chosen = {t.id: t for t in suite_join_failover.tests(["10", "11", "12"])}
    assert sorted(chosen) == [
        "join_failover.first_server_down",
        "join_failover.make_join_refused_404",
        "join_failover.send_join_failing_retried_at_next",
        "join_failover.via_not_room_id_domain",
    ]
    assert {t.room_version for t in chosen.values()} == {None}
    assert [t.id for t in suite_join_failover.tests(["12"])] == [
        "join_failover.first_server_down",
        "join_failover.make_join_refused_404",
        "join_failover.send_join_failing_retried_at_next",
    ]
