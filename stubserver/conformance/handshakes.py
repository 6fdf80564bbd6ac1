"""The membership handshakes a test drives by hand, for joins, leaves and knocks alike:
``make_<kind>`` for a user of ours, the template signed by us, ``send_<kind>``; and the
ways Complement's ``testValidationForSendMembershipEndpoint`` turns a template into an
event the send endpoint must refuse (:data:`CORRUPTIONS`), with the check that follows
a refusal (:func:`refused_send`).

Spec: Server-Server API v1.19, "Joining Rooms", "Knocking upon a room", "Leaving Rooms
(Rejecting Invites)": each ``send_*`` endpoint "MUST apply certain validation before
accepting the event ... The event type is not ``m.room.member``. The ``membership``
field inside the event content is not ``<kind>`` ... The ``state_key`` is not equal to
the ``sender``".
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from stubserver.conformance.context import Context, expect, membership_is, q, wait_until
from stubserver.conformance.runner import CheckFailed, Skipped
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.signing import sign_event
from stubserver.rooms.versions import room_version
from stubserver.testing import FederationAnswer, Peer

Kind = Literal["join", "leave", "knock"]
#: What a refused send may answer: the spec's 400 (invalid) and 403 (not permitted).
REFUSALS: Final = (400, 403)
#: The ``send_*`` endpoints' versions (``send_knock`` has only v1).
SEND_VERSION: Final[dict[Kind, str]] = {"join": "v2", "leave": "v2", "knock": "v1"}
#: Why a server may leave ``send_join``/``send_leave`` v1 unserved.
V1_REMOVED: Final = (
    'the spec deprecated v1 send_join and send_leave ("Servers should instead prefer to use '
    'the v2 /send_join endpoint", up to v1.17) and removed them in v1.18 (MSC4376)'
)


def local(prefix: str) -> str:
    """A fresh localpart of ours."""
    return f"{prefix}-{secrets.token_hex(4)}"


def make(
    ctx: Context,
    kind: Kind,
    room_id: str,
    user_id: str,
    version: str,
    *,
    server: Peer | None = None,
) -> FederationAnswer:
    """``GET /v1/make_<kind>`` (with ``ver`` the room's version for joins and knocks),
    asked by our server ``server`` (by default the peer)."""
    query = "" if kind == "leave" else f"?ver={q(version)}"
    path = f"/_matrix/federation/v1/make_{kind}/{q(room_id)}/{q(user_id)}{query}"
    return (server or ctx.peer).federation_request(ctx.server_name, "GET", path)


def template(
    ctx: Context,
    kind: Kind,
    room_id: str,
    user_id: str,
    version: str,
    *,
    server: Peer | None = None,
) -> dict[str, Any]:
    """Its ``make_<kind>`` template for ``user_id``, asked by ``server`` (by default the
    peer): a 200 whose ``event`` is an object (and whose ``room_version``, where given,
    is the room's) is required."""
    answer = make(ctx, kind, room_id, user_id, version, server=server)
    expect(f"its make_{kind} status", 200, answer.status, answer=answer.body)
    body = answer.body if isinstance(answer.body, dict) else {}
    if kind != "leave" or "room_version" in body:
        expect(f"the room_version of its make_{kind}", version, body.get("room_version"))
    event = body.get("event")
    if not isinstance(event, dict):
        raise CheckFailed(f"its make_{kind} event template", "an object", body)
    return event


def signed(
    ctx: Context, pdu: dict[str, Any], version: str, server: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The template filled (``origin``, ``origin_server_ts``) and signed by us (by our
    server ``server``, by default the peer); its ID."""
    origin = server or ctx.peer.server_name
    pdu = copy.deepcopy(pdu)
    pdu["origin"] = origin
    pdu["origin_server_ts"] = int(time.time() * 1000)
    key = ctx.our_key(server)
    rv = room_version(version)
    pdu = sign_event(pdu, rv, origin, key.key_id, key.key)
    return compute_event_id(pdu, rv), pdu


def send(
    ctx: Context,
    kind: Kind,
    room_id: str,
    event_id: str,
    pdu: dict[str, Any],
    *,
    query: str = "",
    endpoint: str | None = None,
) -> FederationAnswer:
    """``PUT /<endpoint>/send_<kind>`` (``endpoint`` by default :data:`SEND_VERSION`'s;
    ``query``: e.g. ``?omit_members=true``). Skipped when a v1 ``send_join`` or
    ``send_leave`` is not served at all (:data:`V1_REMOVED`)."""
    endpoint = endpoint or SEND_VERSION[kind]
    path = f"/_matrix/federation/{endpoint}/send_{kind}/{q(room_id)}/{q(event_id)}{query}"
    answer = ctx.peer.federation_request(ctx.server_name, "PUT", path, pdu)
    if endpoint != SEND_VERSION[kind] and unrecognised(answer):
        raise Skipped(
            f"it does not serve PUT /_matrix/federation/{endpoint}/send_{kind} "
            f"({answer.status} {str(answer.body)[:100]}): {V1_REMOVED}"
        )
    return answer


def unrecognised(answer: FederationAnswer) -> bool:
    """True when ``answer`` says the endpoint is not served (pure): 404, 405 or 400
    ``M_UNRECOGNIZED``, or a 404 without a Matrix error."""
    errcode = answer.body.get("errcode") if isinstance(answer.body, dict) else None
    if errcode == "M_UNRECOGNIZED":
        return answer.status in (400, 404, 405)
    return answer.status == 404 and errcode is None


def answer_body(kind: Kind, endpoint: str, answer: FederationAnswer) -> dict[str, Any]:
    """The object of a 200 ``send_<kind>`` answer: v1 ``send_join`` and ``send_leave``
    answer ``[200, {...}]``, which is required (the spec up to v1.17: an array of two
    items, "The value ``200``" and the room state, or "An empty object" for a leave);
    the others the object itself."""
    if endpoint == "v1" and kind != "knock":
        body = answer.body
        shaped = isinstance(body, list) and len(body) == 2 and body[0] == 200
        if not shaped or not isinstance(body[1], dict):
            raise CheckFailed(f"its send_{kind} v1 answer", "[200, {...}]", str(body)[:300])
        return body[1]
    return answer.body if isinstance(answer.body, dict) else {}


def by_hand(
    ctx: Context,
    kind: Kind,
    room_id: str,
    version: str,
    user_id: str,
    *,
    query: str = "",
    endpoint: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """``user_id``'s ``kind`` built from its template, signed by us and sent (to
    ``endpoint``'s version of ``send_<kind>``, by default :data:`SEND_VERSION`'s): a 200
    is required, then its client must list the user with that membership. The event ID
    and the send answer's object (:func:`answer_body`)."""
    endpoint = endpoint or SEND_VERSION[kind]
    event_id, pdu = signed(ctx, template(ctx, kind, room_id, user_id, version), version)
    answer = send(ctx, kind, room_id, event_id, pdu, query=query, endpoint=endpoint)
    expect(f"its send_{kind} status", 200, answer.status, answer=answer.body)
    body = answer_body(kind, endpoint, answer)
    wait_until(
        f"{user_id} in its member list",
        membership_is(ctx.user, room_id, user_id, kind),
        expected=f"membership {kind!r}",
    )
    return event_id, body


def joined_user(ctx: Context, room_id: str, prefix: str) -> str:
    """A new user of ours (localpart from ``prefix``) joined to ``room_id`` through the
    peer (its make_join/send_join), once its member list shows the user joined."""
    return ctx.peer_joins(room_id, local(prefix))


# -- the events a send endpoint must refuse ----------------------------------------------


def _membership(value: str) -> Callable[[Context, dict[str, Any]], None]:
    def change(ctx: Context, pdu: dict[str, Any]) -> None:
        pdu["content"] = {**pdu["content"], "membership": value}

    return change


def _regular(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu["type"] = "m.room.message"
    pdu.pop("state_key", None)
    pdu["content"] = {"msgtype": "m.text", "body": "not a membership event"}


def _non_state(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu.pop("state_key", None)


def _other_state_key(ctx: Context, pdu: dict[str, Any]) -> None:
    pdu["state_key"] = ctx.peer_user_id(local("someone-else"))


@dataclass(frozen=True)
class Corruption:
    """A way of spoiling a template: the id part, what it makes, and the change."""

    name: str
    what: str
    change: Callable[[Context, dict[str, Any]], None]


def corruptions(kind: Kind) -> list[Corruption]:
    """Complement's six: a regular event, a membership event without ``state_key``, the
    two memberships other than ``kind`` among join/leave/knock, an invite, and a
    ``state_key`` other than the ``sender``."""
    others = [m for m in ("join", "leave", "knock") if m != kind]
    return [
        Corruption("regular_event", "a message event", _regular),
        Corruption("non_state_membership", "an m.room.member event without state_key", _non_state),
        *(Corruption(f"{m}_event", f"a {m}", _membership(m)) for m in others),
        Corruption("invite_event", "an invite", _membership("invite")),
        Corruption("mismatched_state_key", "a state_key other than the sender", _other_state_key),
    ]


def refused_send(
    ctx: Context,
    kind: Kind,
    room_id: str,
    version: str,
    corruption: Corruption,
    *,
    fresh_user: Callable[[], str],
    before: str | None,
    endpoint: str | None = None,
) -> str:
    """A template for a user of ours (``fresh_user()``: ready for ``kind``) turned into
    ``corruption.what``, signed and sent to ``send_<kind>`` (``endpoint``'s version, by
    default :data:`SEND_VERSION`'s): refused 400 or 403. Then, as
    the marker, a right ``kind`` of another user of ours is accepted; after it, the first
    user's membership is still ``before`` (None: none) and the other user a mismatched
    ``state_key`` named has none. The note: the status and errcode seen."""
    user_id = fresh_user()
    pdu = template(ctx, kind, room_id, user_id, version)
    corruption.change(ctx, pdu)
    event_id, pdu = signed(ctx, pdu, version)
    answer = send(ctx, kind, room_id, event_id, pdu, endpoint=endpoint)
    if answer.status not in REFUSALS:
        raise CheckFailed(
            f"its send_{kind} of {corruption.what}",
            " or ".join(map(str, REFUSALS)),
            answer.status,
            answer.body,
        )
    by_hand(ctx, kind, room_id, version, fresh_user(), endpoint=endpoint)
    members = ctx.user.members(room_id)
    named = {user_id: before, str(pdu.get("state_key", user_id)): None, **{user_id: before}}
    for user, expected in named.items():
        expect(
            f"{user}'s membership after its refusal of {corruption.what} (and a later "
            f"{kind} accepted)",
            expected,
            members.get(user),
        )
    errcode = answer.body.get("errcode") if isinstance(answer.body, dict) else None
    return f"{answer.status} {errcode}"
