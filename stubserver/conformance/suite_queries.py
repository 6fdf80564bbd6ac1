"""What it answers about its users and rooms to a server that asks: profiles, room
aliases, the public room directory, a space's hierarchy, the event nearest a time, and
its users' media. The room version does not matter to these (they run once, in the
newest version the suite has).

Spec: Server-Server API v1.19, "Querying for information" (profile, directory), "Public Room
Directory", "Spaces", "GET /timestamp_to_event", "Content Repository".
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from stubserver.conformance.context import (
    AreaEntry,
    Context,
    NotYet,
    client_call,
    expect,
    once_in_newest,
    q,
    wait_until,
)
from stubserver.conformance.multipart import NotMultipart, read_media_answer
from stubserver.conformance.runner import CheckFailed, ConformanceTest

PROFILE = "GET /_matrix/federation/v1/query/profile"
ALIAS = "GET /_matrix/federation/v1/query/directory"
DIRECTORY = "Public Room Directory"
SPACES = "Spaces"
TIMESTAMP = "GET /_matrix/federation/v1/timestamp_to_event/{roomId}"
MEDIA = "Content Repository"
V1 = "/_matrix/federation/v1"
#: The fields every entry of a public rooms answer has ("PublishedRoomsChunk").
CHUNK_FIELDS = ("guest_can_join", "num_joined_members", "room_id", "world_readable")
#: Pages of GET /publicRooms read while looking for a room.
MAX_PAGES = 10


def _get(ctx: Context, path: str) -> Any:
    """A signed GET; its 200 body (CheckFailed with the answer otherwise)."""
    answer = ctx.peer.federation_request(ctx.server_name, "GET", path)
    expect(f"the status of GET {path} ({answer.body})", 200, answer.status)
    return answer.body or {}


def profile_served(ctx: Context, version: str) -> None:
    """``/query/profile`` gives its user's display name and avatar as its own client
    reads them, and with ``field=displayname`` only that field."""
    user = ctx.user
    own = client_call(user, "GET", f"/profile/{q(user.user_id)}") or {}
    whole = _get(ctx, f"{V1}/query/profile?user_id={q(user.user_id)}")
    for field in ("displayname", "avatar_url"):
        expect(f"the profile's {field}", own.get(field), whole.get(field))
    one = _get(ctx, f"{V1}/query/profile?user_id={q(user.user_id)}&field=displayname")
    expect(
        "the profile with field=displayname",
        {"displayname": own.get("displayname")} if "displayname" in own else {},
        one,
    )


def profile_from_bad_origin_refused(ctx: Context, version: str) -> str:
    """A profile query whose X-Matrix ``origin`` has a port that is not a number (no
    valid server name, "Server names") is refused with a 4xx, before any key lookup."""
    origin = f"{ctx.peer.server_name}:http"
    path = f"{V1}/query/profile?user_id={q(ctx.user.user_id)}"
    status, body = ctx.raw("GET", path, key=ctx.our_key(), origin=origin)
    if not 400 <= status < 500:
        raise CheckFailed(f"a profile query from origin {origin}", "a 4xx refusal", status)
    return f"{status} {body}"


def alias_resolved(ctx: Context, version: str) -> None:
    """``/query/directory`` resolves its room's alias to the room ID and servers that
    include itself (``room_id``, ``servers``)."""
    localpart = f"conformance-{secrets.token_hex(4)}"
    room_id = ctx.user.create_room(room_version=version, alias=localpart)
    alias = f"#{localpart}:{ctx.server_name}"
    body = _get(ctx, f"{V1}/query/directory?room_alias={q(alias)}")
    expect(f"the room ID of {alias}", room_id, body.get("room_id"))
    if ctx.server_name not in (body.get("servers") or []):
        raise CheckFailed(f"the servers of {alias}", f"a list with {ctx.server_name}", body)


def _published_room(ctx: Context, version: str) -> tuple[str, str]:
    """A public room of its user, published in its directory, named with a nonce."""
    name = f"conformance {secrets.token_hex(6)}"
    room_id = ctx.user.create_room(room_version=version, name=name, extra={"visibility": "public"})
    return room_id, name


def _check_chunk(entry: dict[str, Any], room_id: str, name: str) -> None:
    missing = [f for f in CHUNK_FIELDS if f not in entry]
    if missing:
        raise CheckFailed(f"the directory entry of {room_id}", f"fields {CHUNK_FIELDS}", entry)
    expect("the entry's name", name, entry.get("name"))
    expect("the entry's num_joined_members", 1, entry.get("num_joined_members"))
    expect("the entry's world_readable", False, entry.get("world_readable"))
    expect(
        "the entry's guest_can_join is a boolean",
        True,
        isinstance(entry.get("guest_can_join"), bool),
    )


def _listed(ctx: Context, room_id: str) -> dict[str, Any] | NotYet:
    """A wait's probe: the entry of ``room_id`` in its ``GET /publicRooms`` pages."""
    since: str | None = None
    for _ in range(MAX_PAGES):
        page = _get(ctx, f"{V1}/publicRooms?limit=100" + (f"&since={q(since)}" if since else ""))
        for entry in page.get("chunk") or []:
            if entry.get("room_id") == room_id:
                return dict(entry)
        since = page.get("next_batch")
        if not since:
            break
    return NotYet("no entry in its pages")


def public_rooms_listed(ctx: Context, version: str) -> None:
    """``GET /publicRooms`` lists its published room (once its directory has taken it:
    a server may update its list a moment later) with the fields a PublishedRoomsChunk
    requires (room_id, num_joined_members, world_readable, guest_can_join) and its name
    ("Public Room Directory")."""
    room_id, name = _published_room(ctx, version)
    entry = wait_until(
        f"its published room {room_id} in GET /publicRooms",
        lambda: _listed(ctx, room_id),
        expected="an entry",
    )
    _check_chunk(entry, room_id, name)


def public_rooms_filtered(ctx: Context, version: str) -> None:
    """``POST /publicRooms`` with a ``generic_search_term`` lists its published room
    whose name has it (once listed), and no room without it ("Public Room Directory";
    ``generic_search_term``: "An optional string to search for in the room metadata").
    The marker: another published room of its, whose name lacks the term, is listed by
    ``GET /publicRooms`` before the filtered query is made, so a filter left unapplied
    shows whatever else the directory holds."""
    other, _ = _published_room(ctx, version)
    room_id, name = _published_room(ctx, version)
    term = name.split()[-1]
    wait_until(
        f"its room {other} (published, without {term!r}) in GET /publicRooms",
        lambda: _listed(ctx, other),
        expected="an entry",
    )
    body = {"filter": {"generic_search_term": term}, "limit": 10}

    def probe() -> list[Any] | NotYet:
        answer = ctx.peer.federation_request(ctx.server_name, "POST", f"{V1}/publicRooms", body)
        expect(f"the status of POST /publicRooms ({answer.body})", 200, answer.status)
        chunk = list((answer.body or {}).get("chunk") or [])
        strangers = [e.get("room_id") for e in chunk if term not in json.dumps(e)]
        expect(f"rooms listed without {term!r} ({other} is one of its)", [], strangers)
        return chunk if any(e.get("room_id") == room_id for e in chunk) else NotYet(chunk)

    chunk = wait_until(f"its room {room_id} in the filtered directory", probe, expected="an entry")
    _check_chunk(next(e for e in chunk if e.get("room_id") == room_id), room_id, name)


def hierarchy_served(ctx: Context, version: str) -> None:
    """``GET /hierarchy/{roomId}`` of its public space gives the space (``room_type``
    m.space, its m.space.child in ``children_state``) and the child room in
    ``children`` ("Spaces")."""
    child = ctx.user.create_room(room_version=version, name="conformance child")
    link = {"type": "m.space.child", "state_key": child, "content": {"via": [ctx.server_name]}}
    space = ctx.user.create_room(
        room_version=version,
        name="conformance space",
        extra={"creation_content": {"type": "m.space"}, "initial_state": [link]},
    )
    body = _get(ctx, f"{V1}/hierarchy/{q(space)}")
    room = body.get("room") or {}
    expect("the hierarchy's room_id", space, room.get("room_id"))
    expect("the hierarchy's room_type", "m.space", room.get("room_type"))
    links = [
        (e.get("type"), e.get("state_key"), (e.get("content") or {}).get("via"))
        for e in room.get("children_state") or []
    ]
    expect("the space's children_state", [("m.space.child", child, [ctx.server_name])], links)
    children = [c.get("room_id") for c in body.get("children") or []]
    expect("the hierarchy's children", [child], children)


def timestamp_to_event_served(ctx: Context, version: str) -> str:
    """``GET /timestamp_to_event`` gives the event nearest the time in the direction
    asked: between two of its messages, ``dir=f`` the later, ``dir=b`` the earlier."""
    room_id = ctx.join_homeserver_room(version)
    first = ctx.user.send_message(room_id, "before")
    first_ts = int(ctx.user.event(room_id, first)["origin_server_ts"])
    second, second_ts = first, first_ts
    while second_ts <= first_ts + 1:
        second = ctx.user.send_message(room_id, "after")
        second_ts = int(ctx.user.event(room_id, second)["origin_server_ts"])
    between = first_ts + 1
    path = f"{V1}/timestamp_to_event/{q(room_id)}?ts={between}"
    forward = _get(ctx, f"{path}&dir=f")
    expect(f"dir=f from {between}", (second, second_ts), _found(forward))
    backward = _get(ctx, f"{V1}/timestamp_to_event/{q(room_id)}?ts={second_ts - 1}&dir=b")
    expect(f"dir=b from {second_ts - 1}", (first, first_ts), _found(backward))
    return f"messages at {first_ts} and {second_ts}"


def _found(body: dict[str, Any]) -> tuple[Any, Any]:
    return body.get("event_id"), body.get("origin_server_ts")


def _upload(ctx: Context) -> tuple[str, bytes]:
    """Its user uploads a small JSON file; its media ID and the bytes uploaded."""
    content = {"conformance": secrets.token_hex(8)}
    answer = ctx.homeserver.request(
        "POST",
        "/_matrix/media/v3/upload?filename=conformance.json",
        content,
        access_token=ctx.user.access_token,
    ).body
    uri = str(answer["content_uri"])
    return uri.rsplit("/", 1)[-1], json.dumps(content).encode("utf-8")


def media_download_served(ctx: Context, version: str) -> str:
    """``GET /media/download/{mediaId}`` (signed) of its user's upload answers
    multipart/mixed: a JSON object, then the bytes as uploaded with their type, or a
    ``Location`` to fetch them ("Content Repository")."""
    media_id, data = _upload(ctx)
    path = f"{V1}/media/download/{q(media_id)}"
    status, content_type, body = ctx.raw_bytes("GET", path, key=ctx.our_key())
    expect(f"the status of GET {path} ({body[:200]!r})", 200, status)
    try:
        answer = read_media_answer(content_type, body)
    except NotMultipart as e:
        raise CheckFailed(f"the answer to GET {path}", "multipart/mixed (spec)", str(e)) from None
    if answer.location is not None:
        return f"the media part redirects to {answer.location}"
    expect("the media's bytes", data, answer.data)
    expect("the media's content type", "application/json", answer.content_type)
    return "the bytes in the second part"


def media_unauthenticated_refused(ctx: Context, version: str) -> None:
    """An unsigned ``GET /media/download/{mediaId}`` is refused with 401 (the
    federation media endpoints require request authentication)."""
    media_id, _ = _upload(ctx)
    path = f"{V1}/media/download/{q(media_id)}"
    status, _, body = ctx.raw_bytes("GET", path, key=None)
    expect(f"the status of an unsigned GET {path} ({body[:200]!r})", 401, status)


AREA: list[AreaEntry] = [
    ("queries.profile_served", PROFILE, profile_served),
    (
        "queries.profile_from_bad_origin_refused",
        PROFILE,
        profile_from_bad_origin_refused,
        ("queries.profile_served",),
    ),
    ("queries.alias_resolved", ALIAS, alias_resolved),
    ("directory.public_rooms_listed", DIRECTORY, public_rooms_listed),
    ("directory.public_rooms_filtered", DIRECTORY, public_rooms_filtered),
    ("directory.space_hierarchy_served", SPACES, hierarchy_served),
    ("directory.timestamp_to_event_served", TIMESTAMP, timestamp_to_event_served),
    ("media.download_served", MEDIA, media_download_served),
    (
        "media.unsigned_download_refused",
        MEDIA,
        media_unauthenticated_refused,
        ("media.download_served",),
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests, once, in the newest of ``versions``."""
    return once_in_newest(AREA, versions)
