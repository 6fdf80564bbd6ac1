"""Server ACLs with two of our servers in one room of the homeserver: one the room's
``m.room.server_acl`` allows, one it denies (issue 23). Once, in the newest version.

Both servers join first (two users each; every member may invite) and fetch the
make_join and make_leave templates their send_join and send_leave will use; then the
homeserver's user sets the ACL (allow ``*``, deny the denied server's name, no IP
literals). Not asked: make_knock and send_knock (knocking needs a room whose join rule
allows it), nor the v1 send_join, send_leave and invite beside the v2 ones. Every
refusal has the allowed server's same request, taken, as its baseline; every absence is
judged after a marker of the allowed server that was sent after the denied server's
transaction was answered, and arrived.
``acl.*`` (suite_guards) checks the same rules with the primary server alone, the ACL
switched on and off around it.

Spec: Server-Server API v1.19, "Server Access Control Lists (ACLs)": "When a remote
server makes a request, it MUST be verified to be allowed by the server ACLs. If the
server is denied access to a room, the receiving server MUST reply with a 403 HTTP
status code and an errcode of M_FORBIDDEN"; for /send, "ACLs MUST be applied to all
PDUs on a per-PDU basis. If the sending server is denied access to the room identified
by room_id, the PDU MUST be ignored with an appropriate error included in the response
for the respective event ID", and to typing and receipts (MSC4163); Client-Server API,
"Server Access Control Lists (ACLs) for rooms" (m.room.server_acl).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from stubserver.conformance import handshakes
from stubserver.conformance.context import (
    PEER_USER,
    PEER_USER_2,
    AreaEntry,
    Context,
    NotYet,
    SyncStream,
    ephemeral,
    expect,
    once_in_newest,
    q,
    visible_event,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.conformance.suite_guards import ACL_EVENT, ACLS, EphemeralLog, _receipt, _typing
from stubserver.conformance.suite_pdus import _put_transaction
from stubserver.testing import ControlError, Peer

FEDERATION = "/_matrix/federation"
#: Our servers' users: the one that makes its make_join template before the ACL and
#: sends it after (never joined before), and the second joined one, which leaves so.
NEWCOMER = "acl-newcomer"
LEAVER = PEER_USER_2
#: The room's power levels let every member invite (the invite tests' servers' users).
INVITE_0 = {"invite": 0}


@dataclass(frozen=True)
class AclRoom:
    """The homeserver's room of these tests: our two servers joined, then the ACL set."""

    room_id: str
    version: str
    allowed: Peer
    denied: Peer
    #: The ACL's event ID, and a message of the homeserver's user sent after it.
    acl: str
    message: str
    #: Per server name, its make_join template for a user not in the room (NEWCOMER) and
    #: its make_leave template for its joined user LEAVER, both fetched before the ACL.
    templates: Mapping[str, Mapping[str, dict[str, Any]]]


def acl_content(denied: str) -> dict[str, Any]:
    """The ACL of these tests: every server but ``denied``, no IP literals."""
    return {"allow": ["*"], "deny": [denied], "allow_ip_literals": False}


def _acl_room(ctx: Context, version: str) -> AclRoom:
    """The room these tests share, made by the first that asks (the servers are taken
    once for all of them)."""

    def make() -> AclRoom:
        allowed, denied = ctx.servers(2, "the server ACL tests (an allowed and a denied server)")
        room_id = ctx.user.create_room(
            preset="public_chat",
            room_version=version,
            extra={"power_level_content_override": INVITE_0},
        )
        templates = {}
        for peer in (allowed, denied):
            for localpart in (PEER_USER, LEAVER):
                ctx.peer_joins(room_id, localpart, server=peer)
            newcomer, leaver = peer.user_id(NEWCOMER), peer.user_id(LEAVER)
            templates[peer.server_name] = {
                "join": handshakes.template(ctx, "join", room_id, newcomer, version, server=peer),
                "leave": handshakes.template(ctx, "leave", room_id, leaver, version, server=peer),
            }
        acl = ctx.user.send_state(room_id, ACL_EVENT, acl_content(denied.server_name))
        message = ctx.user.send_message(room_id, "after the ACL")
        return AclRoom(room_id, version, allowed, denied, acl, message, templates)

    return ctx.shared(("acls", version), make)


def _put(ctx: Context, origin: Peer, pdus: list[Any], edus: list[Any]) -> Any:
    """One transaction of ``origin``'s, answered 200 (else CheckFailed): its answer's body."""
    answer = _put_transaction(ctx, secrets.token_hex(8), pdus, edus, origin)
    expect(f"the status of {origin.server_name}'s transaction ({answer.body})", 200, answer.status)
    return answer.body


def _withheld_message(peer: Peer, room_id: str, text: str) -> tuple[str, dict[str, Any]]:
    """A message of ``peer``'s user added to its copy of the room but sent to nobody:
    (ID, PDU)."""
    content = {"msgtype": "m.text", "body": text}
    event_id = peer.send(room_id, "m.room.message", content, sender=PEER_USER, destinations=[])
    [pdu] = [e.pdu for e in peer.events(room_id) if e.event_id == event_id]
    return event_id, pdu


def pdu_error(body: Any, event_id: str) -> str | None:
    """The error a /send answer gives for ``event_id`` (pure): its result's ``error``, or
    None when the result has none ("If no error is present, the PDU can be considered
    successfully handled") or the answer lists no result for it."""
    pdus = body.get("pdus") if isinstance(body, dict) else None
    result = pdus.get(event_id) if isinstance(pdus, dict) else None
    if isinstance(result, dict) and "error" in result:
        return str(result["error"])
    return None


def allowed_server_message_taken(ctx: Context, version: str) -> str:
    """The allowed server's message, in a /send transaction of its own, is taken with no
    error in the answer and is readable through the homeserver's client (the baseline of
    the denied server's; "Server Access Control Lists": the ACL denies only the servers
    it names)."""
    room = _acl_room(ctx, version)
    event_id, pdu = _withheld_message(room.allowed, room.room_id, "from the allowed server")
    error = pdu_error(_put(ctx, room.allowed, [pdu], []), event_id)
    if error is not None:
        raise CheckFailed(
            "the allowed server's PDU's result in the /send answer", "no error", error
        )
    ctx.wait_visible(room.room_id, event_id, "the allowed server's message")
    return f"allowed {room.allowed.server_name}, denied {room.denied.server_name}"


def denied_server_message_dropped(ctx: Context, version: str) -> str:
    """The denied server's message, in a /send transaction of its own, gets an error in
    the answer's ``pdus`` and is never readable: once the allowed server's message sent
    after that answer is readable, the denied one still is not ("Server Access Control
    Lists": "the PDU MUST be ignored with an appropriate error included in the response
    for the respective event ID")."""
    room = _acl_room(ctx, version)
    event_id, pdu = _withheld_message(room.denied, room.room_id, "from the denied server")
    error = pdu_error(_put(ctx, room.denied, [pdu], []), event_id)
    marker = room.allowed.send_message(
        room.room_id, "marker after the denied PDU", sender=PEER_USER
    )
    ctx.wait_visible(room.room_id, marker, "the allowed server's marker")
    expect(
        "the denied server's PDU, as its client sees it once the marker is readable",
        None,
        visible_event(ctx.user, room.room_id, event_id),
    )
    if error is None:
        raise CheckFailed(
            "the denied server's PDU's result in the /send answer", "an error", "none"
        )
    return f"its error for the denied PDU: {error}"


# -- the endpoints the ACL protects ---------------------------------------------------------


#: A request: method, path, body.
Request = tuple[str, str, Any]


@dataclass(frozen=True)
class Endpoint:
    """A room endpoint the spec says the ACL protects, and ``build``, which makes the
    request ``server`` sends it in the room."""

    name: str
    build: Callable[[Context, AclRoom, Peer], Request]


def _v1(
    name: str, tail: Callable[[AclRoom, Peer], str], body: Callable[[AclRoom], Any] | None = None
) -> Endpoint:
    """``/v1/{name}/{room ID}{tail}``: a GET, or a POST of ``body``."""

    def build(ctx: Context, room: AclRoom, server: Peer) -> Request:
        path = f"{FEDERATION}/v1/{name}/{q(room.room_id)}{tail(room, server)}"
        return ("GET", path, None) if body is None else ("POST", path, body(room))

    return Endpoint(name, build)


def _v2_send(kind: str) -> Endpoint:
    """``PUT /v2/send_{kind}``: the server's template (fetched before the ACL), signed."""

    def build(ctx: Context, room: AclRoom, server: Peer) -> Request:
        template = room.templates[server.server_name][kind]
        event_id, pdu = handshakes.signed(ctx, template, room.version, server.server_name)
        return "PUT", f"{FEDERATION}/v2/send_{kind}/{q(room.room_id)}/{q(event_id)}", pdu

    return Endpoint(f"send_{kind}", build)


def _at_acl(room: AclRoom, server: Peer) -> str:
    return f"?event_id={q(room.acl)}"


ENDPOINTS = (
    _v1("make_join", lambda r, p: f"/{q(p.user_id('acl-asker'))}?ver={q(r.version)}"),
    _v2_send("join"),
    _v1("make_leave", lambda r, p: f"/{q(p.user_id(PEER_USER))}"),
    _v2_send("leave"),
    _v1("state", _at_acl),
    _v1("state_ids", _at_acl),
    _v1("backfill", lambda r, p: f"?v={q(r.message)}&limit=2"),
    _v1("event_auth", lambda r, p: f"/{q(r.acl)}"),
    _v1(
        "get_missing_events",
        lambda r, p: "",
        lambda r: {"earliest_events": [], "latest_events": [r.message], "limit": 2},
    ),
)


def refusal_verdict(status: int, body: Any) -> str | None:
    """Why an answer is not the ACL's refusal (pure): None for 403 ``M_FORBIDDEN``."""
    errcode = body.get("errcode") if isinstance(body, dict) else None
    if status == HTTPStatus.FORBIDDEN and errcode == "M_FORBIDDEN":
        return None
    return f"{status} {errcode or body}"


def _ask(ctx: Context, endpoint: Endpoint, room: AclRoom, server: Peer) -> Any:
    method, path, body = endpoint.build(ctx, room, server)
    return server.federation_request(ctx.server_name, method, path, body)


def _served(endpoint: Endpoint) -> Callable[[Context, str], None]:
    def test(ctx: Context, version: str) -> None:
        room = _acl_room(ctx, version)
        answer = _ask(ctx, endpoint, room, room.allowed)
        expect(
            f"the status of the allowed server's {endpoint.name}", 200, answer.status, answer.body
        )

    test.__doc__ = (
        f"The allowed server's {endpoint.name} in the room is served"
        " (200), as it is without an ACL (the baseline of the denied server's; \"Server"
        ' Access Control Lists": the ACL denies only the servers it names).'
    )
    return test


def _refused(endpoint: Endpoint) -> Callable[[Context, str], None]:
    def test(ctx: Context, version: str) -> None:
        room = _acl_room(ctx, version)
        answer = _ask(ctx, endpoint, room, room.denied)
        got = refusal_verdict(answer.status, answer.body)
        if got is not None:
            raise CheckFailed(
                f"the answer to the denied server's {endpoint.name}", "403 M_FORBIDDEN", got
            )

    test.__doc__ = (
        f"The denied server's {endpoint.name} in the room gets 403"
        f' M_FORBIDDEN ("Server Access Control Lists": {endpoint.name} is among "The following'
        ' endpoint prefixes MUST be protected"; "If the server is'
        " denied access to a room, the receiving server MUST reply with a 403 HTTP status"
        ' code and an errcode of M_FORBIDDEN").'
    )
    return test


def allowed_server_invite_taken(ctx: Context, version: str) -> str:
    """The allowed server's invite of the homeserver's second user into the room (PUT
    /v2/invite, the peer's own invite event) is taken: signed and returned (the baseline
    of the denied server's)."""
    room = _acl_room(ctx, version)
    invitee = ctx.second_user().user_id
    return f"invite {room.allowed.invite(room.room_id, invitee, sender=PEER_USER)}"


def denied_server_invite_refused(ctx: Context, version: str) -> None:
    """The denied server's invite of the homeserver's second user into the room (PUT
    /v2/invite) gets 403 M_FORBIDDEN ("Server Access Control Lists": invite is among
    "The following endpoint prefixes MUST be protected"; "If the server is denied access
    to a room, the receiving server MUST reply with a 403 HTTP status code and an errcode
    of M_FORBIDDEN")."""
    room = _acl_room(ctx, version)
    invitee = ctx.second_user().user_id
    try:
        room.denied.invite(room.room_id, invitee, sender=PEER_USER)
    except ControlError as e:
        if e.remote_status is None:
            raise
        got = refusal_verdict(e.remote_status, e.remote_body)
    else:
        got = "200: our invite signed and returned"
    if got is not None:
        raise CheckFailed("the answer to the denied server's invite", "403 M_FORBIDDEN", got)


# -- typing and receipts (MSC4163) ----------------------------------------------------------


def allowed_server_edus_shown(ctx: Context, version: str) -> None:
    """The allowed server's m.typing and m.receipt for the room show in its client's
    /sync (the baseline of the denied server's; "Typing Notifications", "Receipts");
    then its typing stops, so that a later typing of it is news."""
    room = _acl_room(ctx, version)
    log = EphemeralLog(SyncStream(ctx.user), room.room_id)
    user_id = room.allowed.user_id(PEER_USER)
    edus = [_typing(room.room_id, user_id), _receipt(room.room_id, user_id, room.message)]
    _put(ctx, room.allowed, [], edus)
    log.wait_for_typing("the allowed server's typing in its /sync", user_id)
    wait_until(
        "the allowed server's receipt in its /sync",
        _log_until_receipt(log, user_id, room.message),
        expected="shown",
    )
    stop = _typing(room.room_id, user_id)
    stop["content"]["typing"] = False
    _put(ctx, room.allowed, [], [stop])


def _log_until_receipt(
    log: EphemeralLog, user_id: str, event_id: str
) -> Callable[[], bool | NotYet]:
    """A wait's probe: one more /sync of ``log`` (at most 2 s); has the receipt shown?"""

    def probe() -> bool | NotYet:
        if (user_id, event_id) in log.receipts:
            return True
        answer = log.stream.user.sync(since=log.stream.since, timeout_ms=2000)
        log.stream.since = str(answer["next_batch"])
        found = ephemeral(answer, log.room_id)
        for read_id, kinds in (found.get("m.receipt") or {}).items():
            for reader in (kinds or {}).get("m.read") or {}:
                log.receipts.append((reader, read_id))
        return True if (user_id, event_id) in log.receipts else NotYet(log.receipts[-3:])

    return probe


def denied_server_edus_dropped(ctx: Context, version: str) -> None:
    """The denied server's m.typing and m.receipt for the room are dropped: once the
    allowed server's typing, sent after the homeserver answered the denied server's
    transaction, shows in its client's /sync, neither ever did ("Server Access Control
    Lists": for typing, "if the sending server is denied access to the room identified by
    room_id, the EDU MUST be ignored"; for receipts, "all receipts for a particular room
    ID MUST be ignored if the sending server is denied access")."""
    room = _acl_room(ctx, version)
    log = EphemeralLog(SyncStream(ctx.user), room.room_id)
    denied, marker = room.denied.user_id(PEER_USER), room.allowed.user_id(PEER_USER)
    edus = [_typing(room.room_id, denied), _receipt(room.room_id, denied, room.message)]
    _put(ctx, room.denied, [], edus)
    _put(ctx, room.allowed, [], [_typing(room.room_id, marker)])
    log.wait_for_typing("the allowed server's typing (the marker) in its /sync", marker)
    if denied in log.typing:
        raise CheckFailed("the denied server's typing", "dropped", "shown typing")
    if (denied, room.message) in log.receipts:
        raise CheckFailed("the denied server's receipt", "dropped", "shown")


AREA: list[AreaEntry] = [
    ("acls.allowed_server_message_taken", ACLS, allowed_server_message_taken),
    (
        "acls.denied_server_message_dropped",
        ACLS,
        denied_server_message_dropped,
        ("acls.allowed_server_message_taken",),
    ),
    *[(f"acls.{e.name}_served_to_allowed", ACLS, _served(e)) for e in ENDPOINTS],
    *[
        (
            f"acls.{e.name}_refused_to_denied",
            ACLS,
            _refused(e),
            (f"acls.{e.name}_served_to_allowed",),
        )
        for e in ENDPOINTS
    ],
    ("acls.invite_served_to_allowed", ACLS, allowed_server_invite_taken),
    (
        "acls.invite_refused_to_denied",
        ACLS,
        denied_server_invite_refused,
        ("acls.invite_served_to_allowed",),
    ),
    ("acls.allowed_server_edus_shown", ACLS, allowed_server_edus_shown),
    (
        "acls.denied_server_edus_dropped",
        ACLS,
        denied_server_edus_dropped,
        ("acls.allowed_server_edus_shown",),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests, once (the ACL's rules do not change by room version)."""
    return once_in_newest(AREA, versions)
