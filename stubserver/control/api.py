"""The control API's routes: ``/_stubserver/v1/...`` (DESIGN.md, "Rooms and the control API").

:func:`control_routes` builds the :class:`~stubserver.server.router.Route` table of a
``control`` listener over a :class:`~stubserver.rooms.port.RoomControl` (the room
service) and the :class:`~stubserver.control.feed.RequestFeed` of inbound requests.

Every request needs ``Authorization: Bearer <control_token>``, compared in constant time;
without it, or with another token, the answer is 401 ``M_UNKNOWN_TOKEN`` (DESIGN.md gives
that one code for both). Bodies are JSON objects, checked before the service is called:
400 ``M_NOT_JSON`` (not JSON), ``M_BAD_JSON`` (not an object, or an unknown key: a typo
in a test should not pass silently), ``M_MISSING_PARAM`` (a required key is absent) or
``M_INVALID_PARAM`` (a value of the wrong type or out of range), each with a message
naming the key. What the service refuses (``stubserver.rooms.errors``) is answered
through :func:`stubserver.rooms.http_errors.matrix_error`, the one mapping of room errors
to Matrix errors; a :class:`~stubserver.server.router.MatrixError` is answered as it is. A
remote refusal (:class:`~stubserver.rooms.errors.RemoteRefused`) is 502 ``M_UNKNOWN`` with
``remote_status`` and ``remote_body``; an unreachable remote
(:class:`~stubserver.rooms.errors.RemoteUnreachable`) 502 ``M_UNKNOWN`` alone.

``ROOM`` path segments arrive percent-decoded (the router decodes every parameter), so an
alias is sent as ``%23alias:server``. Query parameters ``from`` (a position, default 0)
and ``wait_ms`` (default 0, at most :data:`MAX_WAIT_MS`: larger values are clamped, so a
client may loop on ``next``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from stubserver.config import UserProfile
from stubserver.control.feed import RequestFeed
from stubserver.media.store import MediaItem, MediaRefused, MediaStore
from stubserver.profiles import ProfileRefused, ProfileTable
from stubserver.rooms.errors import RemoteRefused, RemoteUnreachable
from stubserver.rooms.http_errors import matrix_error
from stubserver.rooms.identifiers import LOCALPART
from stubserver.rooms.port import RoomControl
from stubserver.rooms.tamper import EXTRA_TAMPER_KINDS
from stubserver.server.router import (
    Handler,
    HandlerResult,
    JsonResponse,
    MatrixError,
    Route,
    query_arg,
    read_json_body,
)
from stubserver.signing.canonical_json import JsonDict

PREFIX: Final = "/_stubserver/v1"
#: Longest a long poll (``wait_ms``) waits, in milliseconds; larger values are clamped.
MAX_WAIT_MS: Final = 60_000
#: Largest ``from`` position accepted (JSON's safe integers).
MAX_POSITION: Final = 2**53 - 1
#: Longest a ``from`` or ``wait_ms`` value may be, in characters.
MAX_INT_PARAM_CHARS: Final = 16
#: How many ``via`` servers, ``prev_events`` and ``auth_events`` one request may name.
MAX_LIST_ITEMS: Final = 100
#: The status of a refusal by, or failure to reach, a remote server.
BAD_GATEWAY: Final = 502
PRESETS: Final = ("public_chat", "private_chat")
TAMPERS: Final = ("signature", "content")
FEDERATION_METHODS: Final = ("GET", "PUT", "POST", "DELETE")
#: The error of a missing or wrong token (DESIGN.md: one code for both).
UNKNOWN_TOKEN: Final = MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token")
_BEARER: Final = b"bearer "


def check_bearer(request: IRequest, token: bytes) -> None:
    """Raise 401 ``M_UNKNOWN_TOKEN`` unless ``request`` carries ``Bearer <token>``.

    The comparison takes the same time wherever the tokens differ (``hmac.compare_digest``).
    """
    values = request.requestHeaders.getRawHeaders(b"authorization") or []
    if len(values) != 1:
        raise UNKNOWN_TOKEN
    value: bytes = values[0]
    if value[: len(_BEARER)].lower() != _BEARER:
        raise UNKNOWN_TOKEN
    if not hmac.compare_digest(value[len(_BEARER) :].strip(), token):
        raise UNKNOWN_TOKEN


def remote_error_response(error: Exception) -> JsonResponse | None:
    """The 502 answer to a remote refusal or an unreachable remote (pure); None otherwise."""
    if isinstance(error, RemoteRefused):
        return JsonResponse(
            BAD_GATEWAY,
            {
                "errcode": "M_UNKNOWN",
                "error": str(error),
                "remote_status": error.status,
                "remote_body": error.body,
            },
        )
    if isinstance(error, RemoteUnreachable):
        return JsonResponse(BAD_GATEWAY, {"errcode": "M_UNKNOWN", "error": str(error)})
    return None


def _ok(result: JsonDict) -> JsonResponse:
    return JsonResponse(200, result)


def _answered(result: Deferred[JsonDict]) -> Deferred[JsonResponse]:
    def refused(failure: Failure) -> JsonResponse | Failure:
        error = failure.value
        response = remote_error_response(error) if isinstance(error, Exception) else None
        if response is not None:
            return response
        answer = matrix_error(error)
        if answer is None:
            return failure
        raise answer

    return result.addCallbacks(_ok, refused)


class JsonObject:
    """A request body checked key by key; every fault is a 400 naming the key."""

    def __init__(self, body: object, allowed: frozenset[str]) -> None:
        if not isinstance(body, dict):
            raise MatrixError(400, "M_BAD_JSON", "the body must be a JSON object")
        unknown = sorted(str(k) for k in body if k not in allowed)
        if unknown:
            raise MatrixError(400, "M_BAD_JSON", f"unknown key {unknown[0]!r}")
        self._body: dict[str, Any] = body

    def has(self, key: str) -> bool:
        """True when ``key`` is present and not null."""
        return self._body.get(key) is not None

    def string(self, key: str) -> str:
        """A required non-empty string."""
        if not self.has(key):
            raise MatrixError(400, "M_MISSING_PARAM", f"{key!r} is required")
        value = self._body[key]
        if not isinstance(value, str) or not value:
            raise MatrixError(400, "M_INVALID_PARAM", f"{key!r} must be a non-empty string")
        return value

    def optional_string(self, key: str, choices: tuple[str, ...] = ()) -> str | None:
        """A non-empty string (one of ``choices`` when given), or None when absent."""
        if not self.has(key):
            return None
        value = self.string(key)
        if choices and value not in choices:
            raise MatrixError(
                400, "M_INVALID_PARAM", f"{key!r} must be one of {', '.join(choices)}"
            )
        return value

    def object(self, key: str) -> dict[str, Any]:
        """A required JSON object."""
        if not self.has(key):
            raise MatrixError(400, "M_MISSING_PARAM", f"{key!r} is required")
        value = self._body[key]
        if not isinstance(value, dict):
            raise MatrixError(400, "M_INVALID_PARAM", f"{key!r} must be a JSON object")
        return value

    def string_list(self, key: str) -> list[str] | None:
        """A list of non-empty strings (at most :data:`MAX_LIST_ITEMS`), or None when absent."""
        if not self.has(key):
            return None
        value = self._body[key]
        if (
            not isinstance(value, list)
            or len(value) > MAX_LIST_ITEMS
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise MatrixError(
                400,
                "M_INVALID_PARAM",
                f"{key!r} must be a list of at most {MAX_LIST_ITEMS} non-empty strings",
            )
        return list(value)

    def optional_int(self, key: str) -> int | None:
        """A non-negative integer (JSON's safe range), or None when absent."""
        if not self.has(key):
            return None
        value = self._body[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION:
            raise MatrixError(400, "M_INVALID_PARAM", f"{key!r} must be a non-negative integer")
        return value

    def raw(self, key: str) -> Any:
        """The value of ``key`` as given (None when absent)."""
        return self._body.get(key)


def _body(request: IRequest, *keys: str) -> JsonObject:
    return JsonObject(read_json_body(request), frozenset(keys))


def _room(params: Mapping[str, str]) -> str:
    room = params["room"]
    if room[0] not in "!#":
        raise MatrixError(
            400, "M_INVALID_PARAM", "ROOM must be a room ID (!...) or an alias (#...)"
        )
    return room


def _user_id(value: str, key: str) -> str:
    if not value.startswith("@") or ":" not in value:
        raise MatrixError(400, "M_INVALID_PARAM", f"{key!r} must be a user ID (@user:server)")
    return value


def _int_query(request: IRequest, name: str, maximum: int) -> int:
    """A non-negative integer query parameter (0 when absent), clamped to ``maximum``."""
    text = query_arg(request, name)
    if text is None:
        return 0
    if not text.isascii() or not text.isdigit() or len(text) > MAX_INT_PARAM_CHARS:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"query parameter {name!r} must be a non-negative integer"
        )
    return min(int(text), maximum)


def poll_params(request: IRequest) -> tuple[int, int]:
    """``from`` and ``wait_ms`` of a long poll (``wait_ms`` clamped to :data:`MAX_WAIT_MS`)."""
    return _int_query(request, "from", MAX_POSITION), _int_query(request, "wait_ms", MAX_WAIT_MS)


def _authorized(token: bytes, handler: Handler) -> Handler:
    def handle(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        check_bearer(request, token)
        try:
            return handler(request, params)
        except (RemoteRefused, RemoteUnreachable) as e:
            response = remote_error_response(e)
            assert response is not None
            return response
        except Exception as e:
            answer = matrix_error(e)
            if answer is None:
                raise
            raise answer from None

    return handle


_Handler = Callable[[IRequest, Mapping[str, str]], HandlerResult]


def control_routes(
    control: RoomControl,
    token: str,
    requests: RequestFeed,
    *,
    profiles: ProfileTable | None = None,
    media: MediaStore | None = None,
) -> list[Route]:
    """The control API over ``control``, guarded by ``token``, with ``requests``' feed;
    with ``profiles`` and ``media``, the operations that set a profile and put media."""

    def status(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        return _ok(control.status())

    def create(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        body = _body(request, "creator", "room_version", "preset", "alias", "name")
        return _answered(
            control.create_room(
                body.string("creator"),
                room_version=body.optional_string("room_version"),
                preset=body.optional_string("preset", PRESETS),
                alias=body.optional_string("alias"),
                name=body.optional_string("name"),
            )
        )

    def join(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        body = _body(request, "user", "via")
        return _answered(control.join(room, body.string("user"), body.string_list("via") or []))

    def leave(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        body = _body(request, "user")
        return _answered(control.leave(room, body.string("user")))

    def invite(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        body = _body(request, "sender", "user_id")
        sender = body.string("sender")
        return _answered(control.invite(room, sender, _user_id(body.string("user_id"), "user_id")))

    def send(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        body = _body(
            request,
            "sender",
            "type",
            "content",
            "state_key",
            "prev_events",
            "auth_events",
            "origin_server_ts",
            "tamper",
            "destinations",
        )
        state_key = body.raw("state_key")
        if state_key is not None and not isinstance(state_key, str):
            # An empty state key is the usual one (m.room.name, ...): only the type is checked.
            raise MatrixError(400, "M_INVALID_PARAM", "'state_key' must be a string")
        return _answered(
            control.send(
                room,
                body.string("sender"),
                body.string("type"),
                body.object("content"),
                state_key=state_key,
                prev_events=body.string_list("prev_events"),
                auth_events=body.string_list("auth_events"),
                origin_server_ts=body.optional_int("origin_server_ts"),
                tamper=body.optional_string("tamper", TAMPERS),
                destinations=body.string_list("destinations"),
            )
        )

    def serving(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        body = _body(request, "event_ids", "served")
        event_ids = body.string_list("event_ids")
        if event_ids is None:
            raise MatrixError(400, "M_MISSING_PARAM", "'event_ids' is required")
        served = body.raw("served")
        if not isinstance(served, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "'served' must be true or false")
        return _answered(control.set_served(room, event_ids, served))

    def plant(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        body = _body(request, "sender", "type", "content_json")
        return _answered(
            control.plant(
                room, body.string("sender"), body.string("type"), body.string("content_json")
            )
        )

    def resend(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        body = _body(request, "event_id", "destinations")
        return _answered(
            control.resend(room, body.string("event_id"), body.string_list("destinations"))
        )

    def send_join_extra_state(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        body = _body(request, "sender", "type", "content", "state_key", "tamper")
        state_key = body.raw("state_key")
        if not isinstance(state_key, str):
            # Required, and may be empty (m.room.name, ...): only the type is checked.
            raise MatrixError(400, "M_INVALID_PARAM", "'state_key' must be a string")
        return _answered(
            control.send_join_extra_state(
                room,
                body.string("sender"),
                body.string("type"),
                body.object("content"),
                state_key=state_key,
                tamper=body.optional_string("tamper", EXTRA_TAMPER_KINDS),
            )
        )

    def edu(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        body = _body(request, "edu_type", "content")
        return _answered(control.send_edu(room, body.string("edu_type"), body.object("content")))

    def put_device(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        body = _body(request, "keys", "display_name")
        keys = body.raw("keys")
        if keys is not None and not isinstance(keys, dict):
            raise MatrixError(400, "M_INVALID_PARAM", "'keys' must be an object")
        return _answered(
            control.put_device(
                params["user"],
                params["device"],
                keys=keys,
                display_name=body.optional_string("display_name"),
            )
        )

    def room_info(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        return _ok(control.room_info(_room(params)))

    def events(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        room = _room(params)
        start, wait_ms = poll_params(request)
        return _answered(control.events(room, start, wait_ms))

    def edus(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        start, wait_ms = poll_params(request)
        return _answered(control.edus(start, wait_ms))

    def inbound_requests(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        start, wait_ms = poll_params(request)
        return requests.read(start, wait_ms).addCallback(_ok)

    def federation_request(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        body = _body(request, "destination", "method", "path", "body")
        method = body.string("method").upper()
        if method not in FEDERATION_METHODS:
            raise MatrixError(
                400, "M_INVALID_PARAM", f"'method' must be one of {', '.join(FEDERATION_METHODS)}"
            )
        path = body.string("path")
        if not path.startswith("/"):
            raise MatrixError(400, "M_INVALID_PARAM", "'path' must start with '/'")
        return _answered(
            control.federation_request(body.string("destination"), method, path, body.raw("body"))
        )

    table: list[tuple[str, str, _Handler]] = [
        ("GET", "/status", status),
        ("POST", "/rooms", create),
        ("POST", "/rooms/{room}/join", join),
        ("POST", "/rooms/{room}/leave", leave),
        ("POST", "/rooms/{room}/invite", invite),
        ("POST", "/rooms/{room}/send", send),
        ("POST", "/rooms/{room}/serving", serving),
        ("POST", "/rooms/{room}/plant", plant),
        ("POST", "/rooms/{room}/resend", resend),
        ("POST", "/rooms/{room}/send_join_extra_state", send_join_extra_state),
        ("POST", "/rooms/{room}/edu", edu),
        ("PUT", "/users/{user}/devices/{device}", put_device),
        ("GET", "/rooms/{room}", room_info),
        ("GET", "/rooms/{room}/events", events),
        ("GET", "/edus", edus),
        ("GET", "/requests", inbound_requests),
        ("POST", "/federation/request", federation_request),
    ]
    if profiles is not None:
        table.append(("PUT", "/users/{user}/profile", _profile_handler(profiles)))
    if media is not None:
        table.append(("PUT", "/media/{media_id}", _media_handler(media, control.server_name)))
    token_bytes = token.encode("utf-8")
    return [
        Route(method, PREFIX + path, _authorized(token_bytes, handler))
        for method, path, handler in table
    ]


def _profile_handler(profiles: ProfileTable) -> _Handler:
    """``PUT /users/{user}/profile`` ``{"displayname"?, "avatar_url"?}`` → ``{}``: the
    user's profile, whole, as ``/query/profile`` then answers it."""

    def put_profile(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        body = _body(request, "displayname", "avatar_url")
        user = params["user"]
        if not LOCALPART.match(user):
            raise MatrixError(400, "M_INVALID_PARAM", f"{user[:300]!r} is not a valid localpart")
        profile = UserProfile(
            displayname=body.optional_string("displayname"),
            avatar_url=body.optional_string("avatar_url"),
        )
        try:
            profiles.put(user, profile)
        except ProfileRefused as e:
            raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None
        return _ok({})

    return put_profile


def _media_handler(media: MediaStore, server_name: str) -> _Handler:
    """``PUT /media/{media_id}`` ``{"content_type", "data": base64, "filename"?}`` →
    ``{"content_uri"}``: media of ours, served by ``/v1/media/download``."""

    def put_media(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        body = _body(request, "content_type", "data", "filename")
        data = body.raw("data")
        if not isinstance(data, str):
            raise MatrixError(400, "M_INVALID_PARAM", "'data' must be a base64 string")
        try:
            raw = base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
        except binascii.Error:
            raise MatrixError(400, "M_INVALID_PARAM", "'data' must be a base64 string") from None
        media_id = params["media_id"]
        item = MediaItem(body.string("content_type"), raw, body.optional_string("filename"))
        try:
            media.put(media_id, item)
        except MediaRefused as e:
            raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None
        return _ok({"content_uri": f"mxc://{server_name}/{media_id}"})

    return put_media
