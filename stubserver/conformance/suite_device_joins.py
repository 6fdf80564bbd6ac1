"""Device lists on a join: a user of its joining a room of ours is announced to us, and a
user of ours joining its encrypted room shows in its client's ``device_lists.changed``.

The first uses the homeserver's third user, which no other test uses and which must
share no room with us before it (else we are "already receiving updates" for it): with
users given by token, a third token of a user in no room; registered users are new.
Once, in the newest room version.

Spec: Server-Server API v1.19, "Device Management" (``m.device_list_update``);
Client-Server API, "End-to-End Encryption", "Tracking the device list for a user"
(``device_lists.changed``).
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import unquote

from stubserver.conformance.context import (
    PEER_USER,
    AreaEntry,
    Context,
    SyncStream,
    client_call,
    membership_is,
    once_in_newest,
    wait_until,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest, Skipped
from stubserver.conformance.suite_devices import _device_keys, changed_then_queried
from stubserver.testing import HomeserverUser, ReceivedEdu

DEVICES = "Device Management"
UPDATE = "m.device_list_update"
ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


def _unshared_user(ctx: Context) -> HomeserverUser:
    """The homeserver's third user, in no room yet; Skipped otherwise."""
    if len(ctx.users) < 3:
        raise Skipped("needs a third user of the homeserver (give --homeserver-token three times)")
    user = ctx.users[2]
    if not user.device_id:
        raise Skipped("the homeserver's third user has no device ID (whoami gave none)")
    rooms = client_call(user, "GET", "/joined_rooms").get("joined_rooms") or []
    if rooms:
        raise Skipped(f"its third user is in rooms already ({len(rooms)}): we may share one")
    return user


def its_joining_user_announced(ctx: Context, version: str) -> str:
    """When its user (in no room before) joins a room of ours, it sends us an
    m.device_list_update for that user ("Servers must send ``m.device_list_update`` EDUs to
    all the servers who share a room with a given local user, and must be sent whenever
    that user's device list changes (i.e. for new or deleted devices, when that user joins
    a room which contains servers which are not already receiving updates for that user's
    device list, ...)", "Device Management"). The marker: after the join, a message of the
    user has reached us, then new keys of its device are uploaded; the update those keys
    cause (a change the spec obliges it to send) must come after one for the join. Synapse
    (synapse#11374) and Dendrite send none on a join: the test fails against both
    unchanged (expected/*.txt), which is its proof that it can fail; a mutant making
    Synapse announce the join (its devices notified after ``update_membership``) did not
    reach the peer, so none is listed."""
    user = _unshared_user(ctx)
    room = ctx.peer.create_room(PEER_USER, room_version=version, preset="public_chat")
    user.join(room.room_id, via=[ctx.peer.server_name])
    wait_until(
        f"{user.user_id} joined our room, as its client reads it",
        membership_is(user, room.room_id, user.user_id, "join"),
        expected="membership 'join'",
    )
    message = user.send_message(room.room_id, "after my join")
    ctx.peer.wait_for_event(room.room_id, event_id=message)
    keys = _device_keys(user.user_id, str(user.device_id))
    client_call(user, "POST", "/keys/upload", {"device_keys": keys})
    ed25519 = keys["keys"][f"ed25519:{user.device_id}"]
    marker = ctx.peer.wait_for_edu(
        UPDATE,
        origin=ctx.server_name,
        match=lambda e: _for(e, user.user_id) and ed25519 in str(e.content.get("keys")),
    )
    earlier = [
        e
        for e in ctx.peer.edus()
        if e.edu_type == UPDATE and e.origin == ctx.server_name and _for(e, user.user_id)
    ]
    earlier = [e for e in earlier if e.position < marker.position]
    if not earlier:
        raise CheckFailed(
            f"an {UPDATE} for {user.user_id} on its join to our room (MUST, {DEVICES})",
            "one before the update for its new keys (the marker)",
            f"none: the first for {user.user_id} came for its new keys",
        )
    first = earlier[0].content
    return f"the join's update: device {first.get('device_id')}, stream_id {first.get('stream_id')}"


def _for(edu: ReceivedEdu, user_id: str) -> bool:
    return edu.content.get("user_id") == user_id


def our_joining_user_in_its_device_lists(ctx: Context, version: str) -> str:
    """A user of ours with a device, who shared no room with its user, joins its user's
    encrypted room: its client's next ``/sync`` lists our user in ``device_lists.changed``
    ("List of users who have updated their device identity keys, or who now share an
    encrypted room with the client since the previous sync response", "Tracking the device
    list for a user"), and its client's ``/keys/query`` gives our device's keys (the
    homeserver fetches them from us: ``/user/devices`` or ``/user/keys/query``). Complement's
    ``TestUserAppearsInChangedDeviceListOnJoinOverFederation``, the roles swapped."""
    localpart = f"joiner-{secrets.token_hex(4)}"
    ours = ctx.peer_user_id(localpart)
    device = "CONFORMANCEJOIN"
    keys: dict[str, Any] = _device_keys(ours, device)
    ctx.peer.put_device(device, user=localpart, keys=keys, display_name="conformance")
    user = ctx.user
    room_id = user.create_room(
        preset="public_chat", room_version=version, extra={"initial_state": [ENCRYPTION]}
    )
    stream = SyncStream(user)
    ctx.peer.join(room_id, localpart, via=[ctx.server_name])
    changed_then_queried(
        stream,
        ours,
        device,
        keys,
        (ours, f"{ours}'s device keys", "after joining its encrypted room"),
    )
    served = [
        str(r.get("uri")).split("?")[0]
        for r in ctx.peer.requests()
        if ours in unquote(str(r.get("uri"))) or ours in str(r.get("content"))
    ]
    return f"it fetched them with {sorted(set(served)) or 'no request we saw'}"


AREA: list[AreaEntry] = [
    ("devices.its_joining_user_announced", DEVICES, its_joining_user_announced),
    (
        "devices.our_joining_user_in_its_device_lists",
        DEVICES,
        our_joining_user_in_its_device_lists,
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests, once, in the newest of ``versions``."""
    return once_in_newest(AREA, versions)
