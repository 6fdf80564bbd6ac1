"""The redaction algorithm per room version (v9 rules for v10, v11 rules for v11/v12)."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.rooms.redaction import redact
from stubserver.rooms.versions import ROOM_VERSIONS

V10 = ROOM_VERSIONS["10"]
V11 = ROOM_VERSIONS["11"]
V12 = ROOM_VERSIONS["12"]

ESSENTIAL = {
    "type": "m.room.message",
    "room_id": "!r:a.test",
    "sender": "@u:a.test",
    "state_key": "",
    "hashes": {"sha256": "abc"},
    "signatures": {"a.test": {"ed25519:1": "sig"}},
    "depth": 4,
    "prev_events": ["$p"],
    "auth_events": ["$a"],
    "origin_server_ts": 7,
}


def event(event_type: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**ESSENTIAL, "type": event_type, "content": content, **extra}


@pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])
def test_essential_top_level_keys_survive(version: Any) -> None:
    """The essential top-level keys are kept unchanged in every version."""
    redacted = redact(event("m.room.message", {"body": "hi"}), version)
    for key, value in ESSENTIAL.items():
        if key != "type":
            assert redacted[key] == value


@pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])
def test_unknown_top_level_keys_and_unsigned_go(version: Any) -> None:
    """Unknown top-level keys and ``unsigned`` are removed in every version."""
    redacted = redact(event("m.room.message", {}, unsigned={"age": 1}, junk=1), version)
    assert "unsigned" not in redacted
    assert "junk" not in redacted


def test_v10_keeps_origin_membership_prev_state() -> None:
    """v9 rules (room v10) keep top-level ``origin``, ``membership`` and ``prev_state``."""
    pdu = event("m.room.message", {}, origin="a.test", membership="join", prev_state=[])
    redacted = redact(pdu, V10)
    assert (redacted["origin"], redacted["membership"], redacted["prev_state"]) == (
        "a.test",
        "join",
        [],
    )


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_v11_drops_origin_membership_prev_state(version: Any) -> None:
    """v11 rules drop top-level ``origin``, ``membership`` and ``prev_state``."""
    pdu = event("m.room.message", {}, origin="a.test", membership="join", prev_state=[])
    redacted = redact(pdu, version)
    assert not {"origin", "membership", "prev_state"} & set(redacted)


@pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])
def test_message_content_is_emptied(version: Any) -> None:
    """Content of an event type without a rule becomes ``{}``."""
    assert redact(event("m.room.message", {"body": "hi"}), version)["content"] == {}


def test_v10_create_keeps_only_creator() -> None:
    """v9 rules keep only ``creator`` in ``m.room.create`` content."""
    content = {"creator": "@u:a.test", "room_version": "10", "m.federate": False}
    assert redact(event("m.room.create", content), V10)["content"] == {"creator": "@u:a.test"}


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_v11_create_keeps_all_content(version: Any) -> None:
    """v11 rules keep every key of ``m.room.create`` content."""
    content = {"room_version": "12", "m.federate": False, "additional_creators": ["@b:b"]}
    assert redact(event("m.room.create", content), version)["content"] == content


POWER_LEVELS = {
    "ban": 50,
    "events": {"m.room.name": 50},
    "events_default": 0,
    "invite": 0,
    "kick": 50,
    "redact": 50,
    "state_default": 50,
    "users": {"@u:a.test": 100},
    "users_default": 0,
    "notifications": {"room": 50},
}


def test_v10_power_levels_drop_invite() -> None:
    """v9 rules drop ``invite`` (and ``notifications``) from power levels content."""
    redacted = redact(event("m.room.power_levels", POWER_LEVELS), V10)["content"]
    expected = {k: v for k, v in POWER_LEVELS.items() if k not in ("invite", "notifications")}
    assert redacted == expected


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_v11_power_levels_keep_invite(version: Any) -> None:
    """v11 rules keep ``invite`` in power levels content, still dropping ``notifications``."""
    redacted = redact(event("m.room.power_levels", POWER_LEVELS), version)["content"]
    assert redacted == {k: v for k, v in POWER_LEVELS.items() if k != "notifications"}


def test_v10_redaction_loses_content_redacts() -> None:
    """v9 rules keep nothing of ``m.room.redaction`` content (``redacts`` is top-level)."""
    pdu = event("m.room.redaction", {"redacts": "$x", "reason": "spam"}, redacts="$x")
    redacted = redact(pdu, V10)
    assert redacted["content"] == {}
    assert "redacts" not in redacted


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_v11_redaction_keeps_content_redacts(version: Any) -> None:
    """v11 rules keep ``redacts`` (only) in ``m.room.redaction`` content."""
    pdu = event("m.room.redaction", {"redacts": "$x", "reason": "spam"})
    assert redact(pdu, version)["content"] == {"redacts": "$x"}


MEMBER = {
    "membership": "invite",
    "join_authorised_via_users_server": "@b:b.test",
    "displayname": "U",
    "third_party_invite": {"display_name": "x", "signed": {"token": "t", "mxid": "@u:a"}},
}


def test_v10_member_drops_third_party_invite() -> None:
    """v9 rules keep ``membership`` and ``join_authorised_via_users_server`` only."""
    redacted = redact(event("m.room.member", MEMBER), V10)["content"]
    assert redacted == {"membership": "invite", "join_authorised_via_users_server": "@b:b.test"}


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_v11_member_keeps_third_party_invite_signed(version: Any) -> None:
    """v11 rules also keep ``third_party_invite.signed``, and only that sub-key."""
    redacted = redact(event("m.room.member", MEMBER), version)["content"]
    assert redacted == {
        "membership": "invite",
        "join_authorised_via_users_server": "@b:b.test",
        "third_party_invite": {"signed": {"token": "t", "mxid": "@u:a"}},
    }


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_v11_member_third_party_invite_without_signed_is_empty(version: Any) -> None:
    """v11 rules turn a ``third_party_invite`` object without ``signed`` into ``{}``."""
    content = {"membership": "invite", "third_party_invite": {"display_name": "x"}}
    redacted = redact(event("m.room.member", content), version)["content"]
    assert redacted == {"membership": "invite", "third_party_invite": {}}


@pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])
def test_join_rules_keep_join_rule_and_allow(version: Any) -> None:
    """Join rules content keeps ``join_rule`` and ``allow`` in every version."""
    allow = [{"type": "m.room_membership", "room_id": "!o:a"}]
    content = {"join_rule": "restricted", "allow": allow, "other": 1}
    redacted = redact(event("m.room.join_rules", content), version)["content"]
    assert redacted == {"join_rule": "restricted", "allow": allow}


@pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])
def test_history_visibility_keeps_history_visibility(version: Any) -> None:
    """History visibility content keeps ``history_visibility`` in every version."""
    content = {"history_visibility": "shared", "other": 1}
    redacted = redact(event("m.room.history_visibility", content), version)["content"]
    assert redacted == {"history_visibility": "shared"}


@pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])
def test_aliases_content_is_emptied(version: Any) -> None:
    """``m.room.aliases`` keeps nothing (only room versions 1-5 kept ``aliases``)."""
    assert redact(event("m.room.aliases", {"aliases": ["#a:a"]}), version)["content"] == {}


def test_redact_does_not_modify_or_share_with_its_input() -> None:
    """The redacted event is a deep copy: changing it leaves the input untouched."""
    pdu = event("m.room.power_levels", {"users": {"@u:a": 100}})
    redacted = redact(pdu, V11)
    redacted["content"]["users"]["@x:a"] = 1
    redacted["prev_events"].append("$q")
    assert pdu["content"] == {"users": {"@u:a": 100}}
    assert pdu["prev_events"] == ["$p"]
