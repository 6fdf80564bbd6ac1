"""``send_join`` and ``send_leave`` v1, once, in the newest room version (Complement areas A and B:
``TestCannotSendNonJoinViaSendJoinV1``, ``TestCannotSendNonLeaveViaSendLeaveV1``): a join
and a leave we build by hand from its templates are accepted over v1, answered
``[200, {...}]``, and the six events Complement sends in their place are refused, as
over v2 (``suite_membership``, ``suite_leaves``; the same builders, the endpoint a
parameter).

The spec deprecated both endpoints ("Servers should instead prefer to use the v2
``/send_join`` endpoint", up to v1.17) and removed them in v1.18 (MSC4376): a server that
does not serve them at all (404, or ``M_UNRECOGNIZED``) is right, and its baselines
skip with why, taking the refusals with them. A server that still serves them must
validate what it takes as v2 does (Server-Server API v1.17, "Joining Rooms", "Leaving
Rooms (Rejecting Invites)": the event must be the sender's own membership of the
endpoint's kind).

Run once, not per room version: the endpoints are gone from the current spec, and what
they must refuse (an event other than the sender's own membership of the endpoint's
kind) does not depend on the room version; the v2 tests of the same refusals
(``joins.*``, ``leaves.*``) run in every version. This keeps the whole run against
Synapse within its time budget (the 42 per-version tests cost about 40 test-seconds of a
single-core homeserver).
"""

from __future__ import annotations

from collections.abc import Callable

from stubserver.conformance import handshakes, suite_leaves
from stubserver.conformance.context import AreaEntry, Context, once_in_newest
from stubserver.conformance.runner import ConformanceTest
from stubserver.conformance.suite_membership import check_join_answer

SEND_JOIN_V1 = "PUT /_matrix/federation/v1/send_join (v1.17; removed in v1.18): Joining Rooms"
SEND_LEAVE_V1 = (
    "PUT /_matrix/federation/v1/send_leave (v1.17; removed in v1.18): "
    "Leaving Rooms (Rejecting Invites)"
)
JOIN_BASELINE = "joins_v1.hand_built_join_accepted"
LEAVE_BASELINE = "leaves_v1.hand_built_leave_accepted"


def _joiner(ctx: Context) -> Callable[[], str]:
    """A maker of users of ours not in the room (ready to join)."""
    return lambda: ctx.peer_user_id(handshakes.local("v1-joiner"))


def hand_built_join_accepted(ctx: Context, version: str) -> str:
    """A join we build from its ``make_join`` template and sign is accepted by
    ``send_join`` v1: 200 answered ``[200, {...}]`` whose object has ``state`` holding
    the room's create event and an ``auth_chain`` that is the auth events of that state,
    and its client lists us joined. Skipped (taking the refusals with it) when v1 is not
    served at all: the spec removed it in v1.18."""
    room_id = suite_leaves.leave_room(ctx, version)
    _, body = handshakes.by_hand(ctx, "join", room_id, version, _joiner(ctx)(), endpoint="v1")
    check_join_answer(ctx, version, body)
    return "joined over v1"


def _join_refused(corruption: handshakes.Corruption) -> Callable[[Context, str], str]:
    def test(ctx: Context, version: str) -> str:
        room_id = suite_leaves.leave_room(ctx, version)
        return handshakes.refused_send(
            ctx,
            "join",
            room_id,
            version,
            corruption,
            fresh_user=_joiner(ctx),
            before=None,
            endpoint="v1",
        )

    test.__doc__ = (
        f"``send_join`` v1 with {corruption.what} built from its ``make_join`` template "
        "for a user of ours not in the room is refused (400 or 403); after a later right "
        "join of another user over v1 is accepted, our first user has no membership."
    )
    return test


AREA: list[AreaEntry] = [
    (JOIN_BASELINE, SEND_JOIN_V1, hand_built_join_accepted),
    *(
        (f"joins_v1.send_join_{c.name}_refused", SEND_JOIN_V1, _join_refused(c), (JOIN_BASELINE,))
        for c in handshakes.corruptions("join")
    ),
    (LEAVE_BASELINE, SEND_LEAVE_V1, suite_leaves.hand_built("v1")),
    *(
        (
            f"leaves_v1.send_leave_{c.name}_refused",
            SEND_LEAVE_V1,
            suite_leaves.refused(c, "v1"),
            (LEAVE_BASELINE,),
        )
        for c in handshakes.corruptions("leave")
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests, once, in the newest of ``versions``."""
    return once_in_newest(AREA, versions)
