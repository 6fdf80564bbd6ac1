"""``GET /_matrix/federation/v1/media/download/{mediaId}`` over the
:class:`~stubserver.media.store.MediaStore` (Server-Server API v1.19, "Content Repository").

The answer is ``multipart/mixed``: a first part ``application/json`` with the metadata (an
empty object: the spec defines no field yet), then the media with its ``Content-Type`` and
a ``Content-Disposition`` (``attachment``, with the file name when it was put with one,
as the client download's header is "the name of the file that was previously uploaded,
if set"). The request needs X-Matrix (401 without); an unknown media ID is 404
``M_NOT_FOUND``. The encoding is pure (:func:`multipart_answer`), the route a thin shell.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote

from twisted.web.iweb import IRequest

from stubserver.auth.filter import require_origin
from stubserver.media.store import MediaItem, MediaStore
from stubserver.server.router import JsonResponse, MatrixError, Route

DOWNLOAD_PATH: Final = "/_matrix/federation/v1/media/download/{mediaId}"
#: File name characters sent as they are inside ``filename="..."``.
_PLAIN_NAME: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%&'()*+,-./:;<=>?@[]^_`{|}~"
)


def content_disposition(filename: str | None) -> str:
    """The ``Content-Disposition`` of a media part (pure): ``attachment``, with
    ``filename="..."`` for a plain ASCII name, else RFC 6266's ``filename*=utf-8''...``."""
    if filename is None:
        return "attachment"
    if all(c in _PLAIN_NAME for c in filename):
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=utf-8''{quote(filename, safe='')}"


def multipart_answer(item: MediaItem) -> tuple[str, bytes]:
    """The ``Content-Type`` header and body of the download answer for ``item`` (pure).

    The boundary is a digest of the bytes, lengthened until it appears in no part
    (RFC 2046: it must not occur in the encapsulated parts)."""
    boundary = hashlib.sha256(item.data).hexdigest()
    while boundary.encode("ascii") in item.data:
        boundary += hashlib.sha256(boundary.encode("ascii")).hexdigest()[:8]
    mark = f"--{boundary}".encode("ascii")
    body = b"\r\n".join(
        [
            mark,
            b"Content-Type: application/json",
            b"",
            b"{}",
            mark,
            f"Content-Type: {item.content_type}".encode("latin-1"),
            f"Content-Disposition: {content_disposition(item.filename)}".encode("ascii"),
            b"",
            item.data,
            mark + b"--",
            b"",
        ]
    )
    return f"multipart/mixed; boundary={boundary}", body


def media_routes(store: MediaStore) -> list[Route]:
    """The federation media route over ``store``."""

    def download(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        require_origin(request)
        item = store.get(params["mediaId"])
        if item is None:
            raise MatrixError(404, "M_NOT_FOUND", "Not found")
        content_type, body = multipart_answer(item)
        return JsonResponse(200, None, headers={"Content-Type": content_type}, encoded=body)

    return [Route("GET", DOWNLOAD_PATH, download)]
