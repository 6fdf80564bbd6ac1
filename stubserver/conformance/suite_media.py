"""What its clients fetch from us (a profile, media), and the thumbnails it serves us.

The homeserver's client asks for a profile of a user of ours and downloads media of ours
(authenticated media): the homeserver must fetch them from us over federation and give
its client exactly what we serve. And it must serve us a thumbnail of an image its client
uploaded, within the sizes the spec allows. Once, in the newest room version (none of
these depends on it).

Spec: Server-Server API v1.19, "Querying for information" (``GET /query/profile``),
"Content Repository" (``GET /media/download``, ``GET /media/thumbnail``); Client-Server
API, "Profiles" (``GET /profile/{userId}``), "Content repository" (``GET
/_matrix/client/v1/media/download``, "Thumbnails").
"""

from __future__ import annotations

import re
import secrets
from typing import Final
from urllib.parse import unquote

from stubserver.conformance.context import (
    AreaEntry,
    Context,
    NotYet,
    expect,
    once_in_newest,
    q,
    wait_until,
)
from stubserver.conformance.images import image_size, png_image, thumbnail_fault
from stubserver.conformance.multipart import (
    MediaAnswer,
    NotMultipart,
    disposition_filename,
    read_media_answer,
)
from stubserver.conformance.runner import CheckFailed, ConformanceTest
from stubserver.http_json import RawAnswer

PROFILE = "GET /_matrix/federation/v1/query/profile"
MEDIA = "Content Repository"
V1 = "/_matrix/federation/v1"
CLIENT_MEDIA = "/_matrix/client/v1/media"
#: The image its client uploads, and the thumbnail asked of it (the spec's first
#: suggested size, "32x32, crop").
IMAGE_WIDTH: Final = 64
IMAGE_HEIGHT: Final = 48
THUMB_WIDTH: Final = 32
THUMB_HEIGHT: Final = 32
#: How long a thumbnail may take to be made after the upload, in seconds.
THUMBNAIL_WAIT_SECONDS: Final = 10.0
#: How long the note waits for the peer's log to show the request it answered, in seconds.
LOG_WAIT_SECONDS: Final = 5.0


def _request_seen(ctx: Context, prefix: str, needle: str) -> str:
    """The method and URI of the first request to ``prefix`` naming ``needle`` in the
    peer's log, for the note (the answer the client got came through it)."""
    try:
        entry = ctx.peer.wait_for_request(
            prefix, match=lambda e: needle in unquote(str(e.get("uri"))), timeout=LOG_WAIT_SECONDS
        )
    except AssertionError:
        return f"no request to {prefix} naming {needle} in our log"
    return f"{entry.get('method')} {entry.get('uri')}"


def our_profile_reaches_its_client(ctx: Context, version: str) -> str:
    """Its client's ``GET /_matrix/client/v3/profile/{userId}`` of a user of ours gives
    exactly the display name and avatar URL our ``/query/profile`` answers ("Get the
    combined profile information for this user. This API may be used to fetch the user's
    own profile information or other users; either locally or on remote homeservers.").
    The user is new, with a profile set just before: no room or cache of the homeserver
    can hold it. The note names the request we saw."""
    localpart = f"profile-{secrets.token_hex(4)}"
    user_id = ctx.peer_user_id(localpart)
    displayname = f"Conformance {secrets.token_hex(4)}"
    avatar_url = f"mxc://{ctx.peer.server_name}/{secrets.token_hex(8)}"
    ctx.peer.put_profile(localpart, displayname=displayname, avatar_url=avatar_url)
    path = f"/_matrix/client/v3/profile/{q(user_id)}"
    answer = ctx.homeserver.request(
        "GET", path, access_token=ctx.user.access_token, expect_ok=False
    )
    expect(f"the status of its client's GET {path} ({answer.body})", 200, answer.status)
    body = answer.body if isinstance(answer.body, dict) else {}
    expect(f"{user_id}'s displayname", displayname, body.get("displayname"))
    expect(f"{user_id}'s avatar_url", avatar_url, body.get("avatar_url"))
    return "we saw " + _request_seen(ctx, f"{V1}/query/profile", user_id)


def _upload_image(ctx: Context) -> tuple[str, bytes]:
    """Its user uploads a new PNG; its media ID and the bytes."""
    data = png_image(IMAGE_WIDTH, IMAGE_HEIGHT, secrets.token_bytes(16))
    answer = ctx.homeserver.exchange(
        "POST",
        "/_matrix/media/v3/upload?filename=conformance.png",
        data,
        content_type="image/png",
        access_token=ctx.user.access_token,
    )
    expect(f"the status of its client's upload ({answer.data[:200]!r})", 200, answer.status)
    uri = re.search(rb'"content_uri"\s*:\s*"mxc://[^/"]+/([A-Za-z0-9_-]+)"', answer.data)
    if uri is None:
        raise CheckFailed("its upload's answer", "a content_uri", answer.data[:200])
    return uri.group(1).decode("ascii"), data


def _media_answer(what: str, status: int, content_type: str, body: bytes) -> MediaAnswer:
    expect(f"the status of {what} ({body[:200]!r})", 200, status)
    try:
        return read_media_answer(content_type, body)
    except NotMultipart as e:
        raise CheckFailed(f"the answer to {what}", "multipart/mixed (spec)", str(e)) from None


def thumbnail_served(ctx: Context, version: str) -> str:
    """``GET /media/thumbnail/{mediaId}`` (signed) of a 64x48 PNG its client uploaded,
    asked ``width=32&height=32&method=crop``, answers multipart/mixed: a JSON object, then
    an image (or a ``Location`` to fetch it), at least 32x32 and at most 64x48 ("Servers
    MUST NOT upscale thumbnails under any circumstance. Servers MUST NOT return a smaller
    thumbnail than requested, unless the original content makes that impossible.",
    Client-Server API "Thumbnails"). A thumbnail not there yet is waited for
    (``THUMBNAIL_WAIT_SECONDS``)."""
    media_id, _ = _upload_image(ctx)
    query = f"width={THUMB_WIDTH}&height={THUMB_HEIGHT}&method=crop"
    path = f"{V1}/media/thumbnail/{q(media_id)}?{query}"

    def probe() -> tuple[int, str, bytes] | NotYet:
        status, content_type, body = ctx.raw_bytes("GET", path, key=ctx.our_key())
        if status == 404 and b"M_NOT_FOUND" in body:
            return NotYet(f"{status} {body[:200]!r}")
        return status, content_type, body

    status, content_type, body = wait_until(
        f"GET {path}", probe, timeout=THUMBNAIL_WAIT_SECONDS, expected="an answer but 404"
    )
    answer = _media_answer(f"GET {path}", status, content_type, body)
    if answer.location is not None:
        return f"the thumbnail part redirects to {answer.location}"
    if not answer.content_type.startswith("image/"):
        raise CheckFailed("the thumbnail's content type", "image/*", answer.content_type)
    size = image_size(answer.data)
    if size is None:
        raise CheckFailed(
            f"the thumbnail ({answer.content_type})", "a PNG, JPEG or GIF", answer.data[:40]
        )
    got = f"{size.width}x{size.height}"
    fault = thumbnail_fault(size, (THUMB_WIDTH, THUMB_HEIGHT), (IMAGE_WIDTH, IMAGE_HEIGHT))
    if fault is not None:
        rule, needed = fault
        raise CheckFailed(f"the thumbnail's size ({rule})", needed, got)
    return f"a {size.kind} of {got}"


def _client_download(ctx: Context, media_id: str) -> tuple[str, RawAnswer]:
    path = f"{CLIENT_MEDIA}/download/{q(ctx.peer.server_name)}/{q(media_id)}"
    return path, ctx.homeserver.exchange("GET", path, access_token=ctx.user.access_token)


def _our_media_reaches_its_client(ctx: Context, filename: str | None) -> str:
    """Media of ours (a new PNG, with ``filename`` or none) downloaded by its client
    through the authenticated ``/_matrix/client/v1/media/download``: 200, the bytes and
    content type we serve, and a ``Content-Disposition`` of ``inline`` or ``attachment``."""
    media_id = f"conformance{secrets.token_hex(8)}"
    data = png_image(IMAGE_WIDTH, IMAGE_HEIGHT, media_id.encode("ascii"))
    ctx.peer.put_media(media_id, data, "image/png", filename=filename)
    path, answer = _client_download(ctx, media_id)
    expect(f"the status of its client's GET {path} ({answer.data[:200]!r})", 200, answer.status)
    expect("the bytes its client got", data, answer.data)
    content_type = answer.headers.get("content-type", "")
    expect("the content type its client got", "image/png", content_type.split(";")[0].strip())
    disposition = answer.headers.get("content-disposition", "")
    if disposition.split(";")[0].strip().lower() not in ("inline", "attachment"):
        raise CheckFailed(
            "its client's Content-Disposition (MUST be inline or attachment)",
            "inline or attachment",
            disposition or "none",
        )
    name = disposition_filename(disposition)
    kept = ""
    if filename is not None:
        kept = ", the file name kept" if name == filename else f", the file name lost ({name!r})"
    seen = _request_seen(ctx, f"{V1}/media/", media_id)
    return f"Content-Disposition {disposition!r}{kept}; we saw {seen}"


def our_media_reaches_its_client(ctx: Context, version: str) -> str:
    """Media of ours uploaded with a file name reaches its client whole through the
    authenticated client download ("GET /_matrix/client/v1/media/download/{serverName}/
    {mediaId}": the content, ``Content-Type`` "The content type of the file that was
    previously uploaded", ``Content-Disposition`` "MUST be one of ``inline`` or
    ``attachment``"); the homeserver fetches it from us with the federation download
    (multipart/mixed, signed). Whether the file name was kept (a SHOULD) is the note."""
    return _our_media_reaches_its_client(ctx, "conformance.png")


def our_media_without_file_name_reaches_its_client(ctx: Context, version: str) -> str:
    """As ``media.our_media_reaches_its_client``, for media of ours with no file name
    (Complement's ``TestMediaWithoutFileName``, federated case): its part has a
    ``Content-Disposition`` without one."""
    return _our_media_reaches_its_client(ctx, None)


AREA: list[AreaEntry] = [
    ("queries.our_profile_reaches_its_client", PROFILE, our_profile_reaches_its_client),
    ("media.thumbnail_served", MEDIA, thumbnail_served),
    ("media.our_media_reaches_its_client", MEDIA, our_media_reaches_its_client),
    (
        "media.our_media_without_file_name_reaches_its_client",
        MEDIA,
        our_media_without_file_name_reaches_its_client,
    ),
]


def tests(versions: list[str]) -> list[ConformanceTest[Context]]:
    """This area's tests, once, in the newest of ``versions``."""
    return once_in_newest(AREA, versions)
