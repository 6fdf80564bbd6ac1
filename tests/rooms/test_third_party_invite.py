"""Rule 5.4.1: invites that redeem an m.room.third_party_invite, with real ed25519
signatures made in-process."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from nacl.signing import SigningKey

from stubserver.rooms.auth_rules import AuthError, check_auth
from stubserver.rooms.event import Event
from tests.rooms.room_builder import ALICE, BOB, CAROL, RoomBuilder, standard_room

TOKEN = "tok"
SEED = b"\x01" * 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _signed(mxid: str = CAROL, token: str = TOKEN, key: SigningKey | None = None) -> dict[str, Any]:
    signed: dict[str, Any] = {"mxid": mxid, "token": token, "sender": BOB}
    message = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    signature = (key or SigningKey(SEED)).sign(message).signature
    signed["signatures"] = {"id.example": {"ed25519:0": _b64(signature)}}
    return signed


def _room(public_key: bytes | None = None) -> RoomBuilder:
    room = standard_room("12")
    room.member(BOB, "join")
    key = public_key or bytes(SigningKey(SEED).verify_key)
    room.send(
        "m.room.third_party_invite",
        BOB,
        {"public_keys": [{"public_key": _b64(key)}]},
        state_key=TOKEN,
    )
    return room


def _invite(
    room: RoomBuilder, third_party: object, sender: str = BOB, target: str = CAROL
) -> Event:
    return room.build(
        "m.room.member",
        sender,
        {"membership": "invite", "third_party_invite": third_party},
        state_key=target,
    )


def _rejected(room: RoomBuilder, event: Event, rule: str) -> None:
    with pytest.raises(AuthError, match=rule.replace(".", r"\.")):
        check_auth(event, room.auth_state())


def test_validly_signed_third_party_invite_is_allowed() -> None:
    """Rule 5.4.1.7: a signature in `signed` by a key the invite lists allows it."""
    room = _room()
    check_auth(_invite(room, {"signed": _signed()}), room.auth_state())


def test_single_public_key_property_is_used() -> None:
    """Rule 5.4.1.7.1: the `public_key` property counts as well as `public_keys`."""
    room = standard_room("12")
    room.member(BOB, "join")
    room.send(
        "m.room.third_party_invite",
        BOB,
        {"public_key": _b64(bytes(SigningKey(SEED).verify_key))},
        state_key=TOKEN,
    )
    check_auth(_invite(room, {"signed": _signed()}), room.auth_state())


def test_banned_third_party_invitee_is_rejected() -> None:
    """Rule 5.4.1.1: the target must not be banned."""
    room = _room()
    room.member(CAROL, "ban", ALICE)
    _rejected(room, _invite(room, {"signed": _signed()}), "rule 5.4.1.1")


def test_third_party_invite_without_signed_is_rejected() -> None:
    """Rule 5.4.1.2: third_party_invite needs `signed`."""
    room = _room()
    _rejected(room, _invite(room, {"display_name": "c"}), "rule 5.4.1.2")


def test_signed_without_token_is_rejected() -> None:
    """Rule 5.4.1.3: `signed` needs `mxid` and `token`."""
    room = _room()
    _rejected(room, _invite(room, {"signed": {"mxid": CAROL}}), "rule 5.4.1.3")


def test_mxid_must_be_the_state_key() -> None:
    """Rule 5.4.1.4: signed.mxid must be the invitee."""
    room = _room()
    _rejected(room, _invite(room, {"signed": _signed(mxid=BOB)}), "rule 5.4.1.4")


def test_token_must_name_a_third_party_invite() -> None:
    """Rule 5.4.1.5: a token with no m.room.third_party_invite in state is rejected."""
    room = _room()
    _rejected(room, _invite(room, {"signed": _signed(token="other")}), "rule 5.4.1.5")


def test_sender_must_be_the_third_party_inviter() -> None:
    """Rule 5.4.1.6: the invite's sender must have sent the m.room.third_party_invite."""
    room = _room()
    _rejected(room, _invite(room, {"signed": _signed()}, sender=ALICE), "rule 5.4.1.6")


def test_signature_by_another_key_is_rejected() -> None:
    """Rule 5.4.1.8: no signature matching a listed key rejects the invite."""
    room = _room()
    other = SigningKey(b"\x02" * 32)
    _rejected(room, _invite(room, {"signed": _signed(key=other)}), "rule 5.4.1.8")
