"""``GET /_matrix/federation/v1/query/profile`` for the users of the config."""

from __future__ import annotations

from collections.abc import Mapping

from twisted.web.iweb import IRequest

from stubserver.auth.filter import require_origin
from stubserver.config import UserProfile
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.server.router import (
    JsonResponse,
    MatrixError,
    Route,
    query_arg,
)
from stubserver.signing.canonical_json import JsonDict

#: The profile fields the spec defines for ``field``.
PROFILE_FIELDS = ("displayname", "avatar_url")


def profile_answer(
    server_name: str,
    users: Mapping[str, UserProfile],
    user_id: str | None,
    field: str | None,
) -> JsonDict:
    """The profile query's answer (pure); MatrixError for a bad or unknown user.

    Spec: Server-Server API, "Query" / profile. As Synapse: a user of another server is
    400, an unknown local user 404 ``M_NOT_FOUND``; fields without a value are left out.
    """
    if user_id is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing query parameter: user_id")
    if field is not None and field not in PROFILE_FIELDS:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"field must be one of {', '.join(PROFILE_FIELDS)}"
        )
    if not user_id.startswith("@") or ":" not in user_id:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id[:300]!r} is not a user ID")
    localpart, _, domain = user_id[1:].partition(":")
    try:
        parse_server_name(domain)
    except InvalidServerName as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id[:300]!r}: {e}") from None
    if domain != server_name:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"User {user_id!r} is not hosted on this server ({server_name})"
        )
    profile = users.get(localpart)
    if profile is None:
        raise MatrixError(404, "M_NOT_FOUND", f"Profile was not found: no user {user_id!r}")
    values = {"displayname": profile.displayname, "avatar_url": profile.avatar_url}
    wanted = (field,) if field is not None else PROFILE_FIELDS
    return {name: values[name] for name in wanted if values[name] is not None}


def profile_route(server_name: str, users: Mapping[str, UserProfile]) -> Route:
    """``GET /_matrix/federation/v1/query/profile`` (X-Matrix required)."""

    def handle(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        require_origin(request)
        body = profile_answer(
            server_name, users, query_arg(request, "user_id"), query_arg(request, "field")
        )
        return JsonResponse(200, body)

    return Route("GET", "/_matrix/federation/v1/query/profile", handle)
