"""Strict mode's judgement: which inbound requests no handler of a peer expected (pure).

A strict peer fails its test at the end when it received a request that

- names a path (or a method on a path) that stubserver does not serve: the peer answered
  it 404 or 405 ``M_UNRECOGNIZED`` (a homeserver calling an endpoint the test did not
  plan for: Complement's peers fail such tests by default), or
- starts with one of the path prefixes the test declared unexpected.

:data:`SERVED_ROUTES` mirrors the federation listener's route table (DESIGN.md, "HTTP
endpoints served"); ``{name}`` is one path segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

_V1: Final = "/_matrix/federation/v1"
_V2: Final = "/_matrix/federation/v2"

#: (method, path template) of every request a federation listener serves.
SERVED_ROUTES: Final[tuple[tuple[str, str], ...]] = (
    ("GET", "/_matrix/key/v2/server"),
    ("GET", "/_matrix/key/v2/query/{serverName}"),
    ("POST", "/_matrix/key/v2/query"),
    ("GET", f"{_V1}/version"),
    ("GET", f"{_V1}/query/profile"),
    ("GET", f"{_V1}/make_join/{{roomId}}/{{userId}}"),
    ("PUT", f"{_V2}/send_join/{{roomId}}/{{eventId}}"),
    ("GET", f"{_V1}/make_leave/{{roomId}}/{{userId}}"),
    ("PUT", f"{_V2}/send_leave/{{roomId}}/{{eventId}}"),
    ("PUT", f"{_V2}/invite/{{roomId}}/{{eventId}}"),
    ("PUT", f"{_V1}/send/{{txnId}}"),
    ("GET", f"{_V1}/state/{{roomId}}"),
    ("GET", f"{_V1}/state_ids/{{roomId}}"),
    ("GET", f"{_V1}/event/{{eventId}}"),
    ("GET", f"{_V1}/event_auth/{{roomId}}/{{eventId}}"),
    ("GET", f"{_V1}/backfill/{{roomId}}"),
    ("POST", f"{_V1}/get_missing_events/{{roomId}}"),
    ("GET", f"{_V1}/query/directory"),
    ("GET", f"{_V1}/user/devices/{{userId}}"),
    ("POST", f"{_V1}/user/keys/query"),
    ("GET", f"{_V1}/media/download/{{mediaId}}"),
)


def _matches(template: str, path: str) -> bool:
    want = template.split("/")
    have = path.split("/")
    if len(want) != len(have):
        return False
    return all(
        (w.startswith("{") and w.endswith("}") and h != "") or w == h
        for w, h in zip(want, have, strict=True)
    )


def is_served(method: str, uri: str) -> bool:
    """True when a federation listener has a handler for ``method`` on ``uri``'s path."""
    path = urlsplit(uri).path
    method = "GET" if method.upper() == "HEAD" else method.upper()
    return any(m == method and _matches(t, path) for m, t in SERVED_ROUTES)


def unexpected_requests(
    entries: Iterable[dict[str, Any]], unexpected_prefixes: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The request log objects among ``entries`` that a strict peer objects to, in order."""
    found = []
    for entry in entries:
        method = str(entry.get("method", ""))
        uri = str(entry.get("uri", ""))
        path = urlsplit(uri).path
        if not is_served(method, uri) or any(path.startswith(p) for p in unexpected_prefixes):
            found.append(entry)
    return found
