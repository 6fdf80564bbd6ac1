"""Building the events we send (rooms.md 3.1, 3.6, 3.7)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from typing import Any

import pytest
from nacl.signing import SigningKey

from stubserver.rooms.builder import (
    CREATE_ENTROPY_KEY,
    BuiltEvent,
    EventBuildError,
    EventSigner,
    build_create_event,
    build_event,
    next_depth,
)
from stubserver.rooms.event import Event
from stubserver.rooms.format import InvalidPdu, event_from_pdu
from stubserver.rooms.hashes import check_content_hash, compute_event_id
from stubserver.rooms.signing import verify_event_signature
from stubserver.rooms.versions import ROOM_VERSIONS, RoomVersion

V10 = ROOM_VERSIONS["10"]
V11 = ROOM_VERSIONS["11"]
V12 = ROOM_VERSIONS["12"]
ALL = pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])
KEY = SigningKey(b"\x04" * 32)
SIGNER = EventSigner(server_name="a.test", key_id="ed25519:k1", signing_key=KEY)
TS = 1_700_000_000_000


def create(version: RoomVersion, seed: int = 1, **kwargs: Any) -> BuiltEvent:
    return build_create_event(
        version,
        sender="@alice:a.test",
        origin_server_ts=TS,
        signer=SIGNER,
        rng=random.Random(seed),
        **kwargs,
    )


def message(version: RoomVersion, prevs: list[Event], **kwargs: Any) -> BuiltEvent:
    options: dict[str, Any] = {
        "room_id": prevs[0].room_id,
        "sender": "@alice:a.test",
        "event_type": "m.room.message",
        "content": {"body": "hi"},
        "prev_events": prevs,
        "auth_event_ids": [],
        "origin_server_ts": TS + 1,
        "signer": SIGNER,
    }
    options.update(kwargs)
    return build_event(version, **options)


@ALL
def test_create_event_is_signed_hashed_and_valid(version: RoomVersion) -> None:
    """A built create event has a valid content hash, our signature and the event format."""
    built = create(version)
    check_content_hash(built.pdu)
    verify_event_signature(built.pdu, version, "a.test", "ed25519:k1", KEY.verify_key)
    assert event_from_pdu(built.pdu, version) == built.event


@ALL
def test_create_event_shape(version: RoomVersion) -> None:
    """A create event has state_key "", no prev or auth events, depth 1 and no event_id."""
    pdu = create(version).pdu
    assert (pdu["state_key"], pdu["prev_events"], pdu["auth_events"], pdu["depth"]) == (
        "",
        [],
        [],
        1,
    )
    assert "event_id" not in pdu
    assert pdu["content"]["room_version"] == version.identifier


def test_v10_create_has_creator() -> None:
    """A v10 create event's content names the creator."""
    assert create(V10).pdu["content"]["creator"] == "@alice:a.test"


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_v11_create_has_no_creator(version: RoomVersion) -> None:
    """v11+ create events have no creator, even when extra_content offers one."""
    pdu = create(version, extra_content={"creator": "@x:a.test"}).pdu
    assert "creator" not in pdu["content"]


@pytest.mark.parametrize("version", [V10, V11], ids=["10", "11"])
def test_v10_v11_room_id_is_random_on_our_server(version: RoomVersion) -> None:
    """v10/v11 room IDs are "!<random>:<our server>", differing per RNG draw."""
    one, two = create(version, seed=1).event, create(version, seed=2).event
    assert one.room_id.startswith("!") and one.room_id.endswith(":a.test")
    assert one.room_id != two.room_id
    assert one.pdu["room_id"] == one.room_id


def test_v12_create_has_no_room_id_and_its_id_makes_the_room_id() -> None:
    """A v12 create event has no room_id; its room ID is "!" + its event ID[1:]."""
    built = create(V12)
    assert "room_id" not in built.pdu
    assert built.event.room_id == "!" + compute_event_id(built.pdu, V12)[1:]


def test_v12_creates_differ_by_entropy() -> None:
    """Two v12 creates with the same sender, content and time get different room IDs."""
    one, two = create(V12, seed=1), create(V12, seed=2)
    assert one.pdu["content"][CREATE_ENTROPY_KEY] != two.pdu["content"][CREATE_ENTROPY_KEY]
    assert one.event.room_id != two.event.room_id


def test_same_rng_seed_gives_the_same_room() -> None:
    """Randomness comes only from the rng passed in: the same seed gives the same event."""
    assert create(V12, seed=7).pdu == create(V12, seed=7).pdu


def test_v12_extra_content_is_kept() -> None:
    """extra_content (additional_creators, m.federate) goes into the create content."""
    extra = {"additional_creators": ["@bob:b.test"], "m.federate": True}
    content = create(V12, extra_content=extra).pdu["content"]
    assert content["additional_creators"] == ["@bob:b.test"] and content["m.federate"] is True


@ALL
def test_message_after_create(version: RoomVersion) -> None:
    """A message after the create has depth 2, the create as prev_event, our signature
    and the room's ID."""
    root = create(version).event
    built = message(version, [root])
    assert built.pdu["prev_events"] == [root.event_id]
    assert built.pdu["depth"] == 2
    assert built.pdu["room_id"] == root.room_id
    verify_event_signature(built.pdu, version, "a.test", "ed25519:k1", KEY.verify_key)
    check_content_hash(built.pdu)
    assert built.event.event_id == compute_event_id(built.pdu, version)


def test_built_pdu_and_event_do_not_share_state() -> None:
    """Changing the returned PDU does not change the returned Event."""
    built = message(V11, [create(V11).event])
    built.pdu["content"]["body"] = "changed"
    assert built.event.content == {"body": "hi"}


def fake_event(depth: int, room_id: str = "!r:a.test", event_id: str = "$e") -> Event:
    return Event(
        event_id=event_id,
        room_version=V11,
        pdu={"depth": depth, "room_id": room_id},
        room_id=room_id,
    )


def test_depth_is_max_prev_depth_plus_one() -> None:
    """Depth is the deepest prev_event's depth plus one."""
    assert next_depth([fake_event(3), fake_event(9), fake_event(5)]) == 10


def test_depth_is_capped() -> None:
    """Depth stays at 2^53-1 once the room is there."""
    assert next_depth([fake_event(2**53 - 1)]) == 2**53 - 1


def test_no_prev_events_is_refused() -> None:
    """A non-create event without prev_events is not built."""
    with pytest.raises(EventBuildError):
        next_depth([])


def test_more_than_20_prev_events_is_refused() -> None:
    """At most 20 prev_events."""
    prevs = [fake_event(1, event_id=f"$e{i}") for i in range(21)]
    with pytest.raises(EventBuildError):
        message(V11, prevs)


def test_prev_event_from_another_room_is_refused() -> None:
    """Every prev_event must be in the event's room."""
    with pytest.raises(EventBuildError):
        message(V11, [fake_event(1, room_id="!other:a.test")], room_id="!r:a.test")


def test_create_through_build_event_is_refused() -> None:
    """build_event does not build m.room.create (build_create_event does)."""
    with pytest.raises(EventBuildError):
        message(V11, [fake_event(1)], event_type="m.room.create", state_key="")


@pytest.mark.parametrize("sender", ["@bob:b.test", "bob"])
def test_sender_must_be_ours(sender: str) -> None:
    """We only build events for users on our server (only its key can sign them)."""
    with pytest.raises(EventBuildError):
        message(V11, [fake_event(1)], sender=sender)
    with pytest.raises(EventBuildError):
        build_create_event(
            V11, sender=sender, origin_server_ts=TS, signer=SIGNER, rng=random.Random(1)
        )


def test_float_in_content_is_refused() -> None:
    """A float in content fails the format checks: we never send what we would drop."""
    with pytest.raises(InvalidPdu):
        message(V11, [fake_event(1)], content={"n": 1.5})


def test_v12_create_event_in_auth_events_is_refused() -> None:
    """Listing a v12 room's create event in auth_events fails the format checks."""
    root = create(V12).event
    with pytest.raises(InvalidPdu):
        message(V12, [root], auth_event_ids=[root.event_id])


def test_v10_redacts_is_top_level() -> None:
    """In v10 a redaction's ``redacts`` is a top-level key."""
    built = message(V10, [create(V10).event], event_type="m.room.redaction", content={},
                    redacts="$target")  # fmt: skip
    assert built.pdu["redacts"] == "$target"
    assert "redacts" not in built.pdu["content"]
    assert built.event.redacts == "$target"


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_v11_redacts_is_in_content(version: RoomVersion) -> None:
    """From v11 a redaction's ``redacts`` is in content."""
    built = message(version, [create(version).event], event_type="m.room.redaction",
                    content={}, redacts="$target")  # fmt: skip
    assert built.pdu["content"]["redacts"] == "$target"
    assert "redacts" not in built.pdu
    assert built.event.redacts == "$target"


def test_state_event_carries_its_state_key() -> None:
    """A state event built with a state_key has it; a message has none."""
    root = create(V11).event
    name = message(V11, [root], event_type="m.room.name", state_key="", content={"name": "x"})
    assert name.event.state_key == ""
    assert message(V11, [root]).event.state_key is None


def test_caller_content_is_not_modified() -> None:
    """Adding ``redacts`` to content does not change the caller's content dict."""
    content: dict[str, Any] = {"reason": "spam"}
    message(V11, [create(V11).event], event_type="m.room.redaction", content=content,
            redacts="$t")  # fmt: skip
    assert content == {"reason": "spam"}


def test_v12_room_id_matches_independent_computation() -> None:
    """A built v12 create event's room ID is "!" + URL-safe unpadded base64 of sha256
    over the canonical JSON of the event without signatures (v11 rules keep all create
    content), computed here with hashlib and json.dumps."""
    built = create(V12, extra_content={"m.federate": True})
    essential = {k: v for k, v in built.pdu.items() if k not in ("signatures", "unsigned")}
    canonical = json.dumps(essential, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).digest()
    assert built.event.room_id == "!" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
