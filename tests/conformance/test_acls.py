"""The judging of the two-server ACL tests (``suite_acls``): only 403 ``M_FORBIDDEN``
is the ACL's refusal, only a result with ``error`` is an error for a PDU, each endpoint
is one of the spec's protected prefixes asked by the server under test, and each refusal
has the allowed server's same request as its baseline."""

from __future__ import annotations

from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import quote

import pytest

from stubserver.conformance import suite_acls
from stubserver.conformance.context import Context
from stubserver.conformance.runner import CheckFailed
from stubserver.conformance.suite import build_suite
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.versions import room_version
from stubserver.signing.keys import ServerSigningKey
from stubserver.testing import ControlError, FederationAnswer, Peer

KEYS = {name: ServerSigningKey.generate("a") for name in ("allowed.test", "denied.test")}

#: The Server-Server API's "endpoint prefixes [that] MUST be protected" (v1.19).
PROTECTED = (
    "make_join",
    "make_leave",
    "send_join",
    "send_leave",
    "invite",
    "make_knock",
    "send_knock",
    "state",
    "state_ids",
    "backfill",
    "event_auth",
    "get_missing_events",
)


class FakeServer:
    """One of our servers: its name, and one canned answer to every request (logged)."""

    def __init__(self, name: str, status: int, body: Any) -> None:
        self.server_name = name
        self.answer = FederationAnswer(status, body)
        self.asked: list[tuple[str, str, str, Any]] = []

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def invite(self, room: str, user_id: str, sender: str) -> str:
        """Our invite through the control API: the homeserver's answer (the canned one)
        as the control API gives it, a 502 ControlError when it refused."""
        self.asked.append(("hs.test", "PUT", f"invite {user_id} by {sender}", None))
        if self.answer.status != HTTPStatus.OK:
            raise ControlError(
                "invite",
                502,
                errcode="M_UNKNOWN",
                error="the remote refused",
                remote_status=self.answer.status,
                remote_body=self.answer.body,
            )
        return "$invite"

    def federation_request(
        self, destination: str, method: str, path: str, body: Any = None
    ) -> FederationAnswer:
        self.asked.append((destination, method, path, body))
        return self.answer


def _template(user_id: str, membership: str) -> dict[str, Any]:
    content = {"membership": membership}
    return {
        "type": "m.room.member",
        "room_id": "!room:hs.test",
        "sender": user_id,
        "state_key": user_id,
        "content": content,
        "prev_events": ["$message"],
        "auth_events": ["$acl"],
        "depth": 9,
    }


def _room(allowed: FakeServer, denied: FakeServer) -> suite_acls.AclRoom:
    peers = cast(Peer, allowed), cast(Peer, denied)
    templates = {
        s.server_name: {
            "join": _template(s.user_id(suite_acls.NEWCOMER), "join"),
            "leave": _template(s.user_id(suite_acls.LEAVER), "leave"),
        }
        for s in (allowed, denied)
    }
    return suite_acls.AclRoom("!room:hs.test", "12", *peers, "$acl", "$message", templates)


def _context(allowed: FakeServer, denied: FakeServer) -> Context:
    room = _room(allowed, denied)
    fake = SimpleNamespace(
        server_name="hs.test",
        shared=lambda key, make: room,
        second_user=lambda: SimpleNamespace(user_id="@second:hs.test"),
        our_key=lambda server_name=None: KEYS[server_name],
    )
    return cast(Context, fake)


@pytest.mark.parametrize(
    ("status", "body"),
    [(403, {"errcode": "M_FORBIDDEN", "error": "Server is banned from room"})],
)
def test_403_m_forbidden_is_the_refusal(status: int, body: Any) -> None:
    """403 with errcode M_FORBIDDEN is the refusal the spec names."""
    assert suite_acls.refusal_verdict(status, body) is None


@pytest.mark.parametrize(
    ("status", "body", "got"),
    [
        (200, {"room_version": "12", "event": {}}, "200 "),
        (403, {"errcode": "M_UNKNOWN"}, "403 M_UNKNOWN"),
        (403, None, "403 None"),
        (404, {"errcode": "M_NOT_FOUND"}, "404 M_NOT_FOUND"),
        (401, {"errcode": "M_FORBIDDEN"}, "401 M_FORBIDDEN"),
    ],
    ids=["served", "other-errcode", "no-body", "not-found", "other-status"],
)
def test_any_other_answer_is_not_the_refusal(status: int, body: Any, got: str) -> None:
    """Any other status or errcode is not the refusal: the verdict shows what came."""
    verdict = suite_acls.refusal_verdict(status, body)
    assert verdict is not None
    assert verdict.startswith(got)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"pdus": {"$e": {"error": "Server is banned from room"}}}, "Server is banned from room"),
        ({"pdus": {"$e": {}}}, None),
        ({"pdus": {"$other": {"error": "x"}}}, None),
        ({"pdus": {}}, None),
        ({}, None),
        (None, None),
    ],
    ids=["error", "handled", "another-pdus-error", "not-listed", "no-pdus", "no-body"],
)
def test_only_the_pdus_own_error_counts(body: Any, error: str | None) -> None:
    """The error of a /send answer is its ``pdus`` result's ``error`` for that event ID;
    another event's error, or no result, is none."""
    assert suite_acls.pdu_error(body, "$e") == error


def test_every_endpoint_is_a_protected_prefix_of_the_room() -> None:
    """Each endpoint asked is one the spec lists, in the room, as the server that asks:
    make_join and make_leave for a user of its own; send_join and send_leave (v2) PUT its
    template signed by it, under the event ID that signed event has."""
    allowed = FakeServer("allowed.test", 200, {})
    denied = FakeServer("denied.test", 403, {})
    ctx = _context(allowed, denied)
    room = _room(allowed, denied)
    for endpoint in suite_acls.ENDPOINTS:
        assert endpoint.name in PROTECTED
        method, path, body = endpoint.build(ctx, room, cast(Peer, denied))
        version = "v2" if endpoint.name.startswith("send_") else "v1"
        assert path.startswith(f"/_matrix/federation/{version}/{endpoint.name}/%21room%3Ahs.test")
        if endpoint.name.startswith("make_"):
            assert path.split("?")[0].endswith("%3Adenied.test")
        if endpoint.name.startswith("send_"):
            assert method == "PUT"
            assert body["origin"] == "denied.test"
            assert set(body["signatures"]) == {"denied.test"}
            assert body["sender"].endswith(":denied.test")
            assert path.endswith(quote(compute_event_id(body, room_version("12")), safe=""))
        else:
            assert method == ("POST" if endpoint.name == "get_missing_events" else "GET")


def test_a_denied_server_served_fails_naming_the_endpoint_and_the_answer() -> None:
    """The refusal test fails when the denied server is served (200), naming the endpoint
    and the 403 M_FORBIDDEN expected; it passes on 403 M_FORBIDDEN; it asks the
    homeserver as the denied server, never as the allowed."""
    allowed = FakeServer("allowed.test", 200, {})
    served = FakeServer("denied.test", 200, {"pdus": []})
    backfill = next(e for e in suite_acls.ENDPOINTS if e.name == "backfill")
    with pytest.raises(CheckFailed) as failed:
        suite_acls._refused(backfill)(_context(allowed, served), "12")
    assert "the denied server's backfill: expected 403 M_FORBIDDEN, got 200" in str(failed.value)
    refused = FakeServer("denied.test", 403, {"errcode": "M_FORBIDDEN"})
    suite_acls._refused(backfill)(_context(allowed, refused), "12")
    assert [a[0] for a in refused.asked] == ["hs.test"]
    assert allowed.asked == []


def test_the_allowed_server_refused_fails_the_baseline() -> None:
    """The baseline fails when the allowed server is refused (a 403), naming the endpoint
    and showing the answer; it asks as the allowed server."""
    allowed = FakeServer("allowed.test", 403, {"errcode": "M_FORBIDDEN"})
    denied = FakeServer("denied.test", 403, {"errcode": "M_FORBIDDEN"})
    state_ids = next(e for e in suite_acls.ENDPOINTS if e.name == "state_ids")
    with pytest.raises(CheckFailed) as failed:
        suite_acls._served(state_ids)(_context(allowed, denied), "12")
    assert "the allowed server's state_ids: expected 200, got 403" in str(failed.value)
    assert "M_FORBIDDEN" in str(failed.value)
    assert denied.asked == []


def test_each_refusal_runs_once_over_the_allowed_servers_same_request() -> None:
    """The suite lists the area once (no room version in the ids), each denied test with
    the allowed server's same request (or message, or EDUs) as its baseline."""
    suite = {t.id: t for t in build_suite(["10", "11", "12"])}
    acls = {i: t for i, t in suite.items() if i.startswith("acls.")}
    assert len(acls) == 2 * len(suite_acls.ENDPOINTS) + 6 == 24
    for endpoint in suite_acls.ENDPOINTS:
        refused = acls[f"acls.{endpoint.name}_refused_to_denied"]
        assert refused.depends_on == (f"acls.{endpoint.name}_served_to_allowed",)
        assert refused.room_version is None
    assert acls["acls.invite_refused_to_denied"].depends_on == ("acls.invite_served_to_allowed",)
    assert acls["acls.denied_server_message_dropped"].depends_on == (
        "acls.allowed_server_message_taken",
    )
    assert acls["acls.denied_server_edus_dropped"].depends_on == ("acls.allowed_server_edus_shown",)


@pytest.mark.parametrize(
    ("status", "body", "got"),
    [
        (200, {}, "200: our invite signed and returned"),
        (403, {"errcode": "M_UNKNOWN"}, "403 M_UNKNOWN"),
        (403, {"errcode": "M_FORBIDDEN"}, None),
    ],
    ids=["taken", "other-errcode", "refused"],
)
def test_the_denied_servers_invite_is_judged_by_the_homeservers_answer(
    status: int, body: Any, got: str | None
) -> None:
    """The invite refusal passes on the homeserver's 403 M_FORBIDDEN (which the control
    API reports as a 502 carrying it), and fails, naming what came, when the invite was
    taken or refused otherwise."""
    allowed = FakeServer("allowed.test", 200, {})
    denied = FakeServer("denied.test", status, body)
    ctx = _context(allowed, denied)
    if got is None:
        suite_acls.denied_server_invite_refused(ctx, "12")
    else:
        with pytest.raises(CheckFailed) as failed:
            suite_acls.denied_server_invite_refused(ctx, "12")
        assert f"the denied server's invite: expected 403 M_FORBIDDEN, got {got}" in str(
            failed.value
        )
    assert [a[2] for a in denied.asked] == ["invite @second:hs.test by conformance"]
