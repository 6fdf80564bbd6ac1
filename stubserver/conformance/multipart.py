"""Reading a federation media answer (Server-Server API v1.19, "Content Repository"):
``multipart/mixed`` with a JSON metadata part, then the media's bytes or a ``Location``.

Pure functions, so the judging is unit-tested with canned bodies, wrong ones included.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

#: The file name of a ``Content-Disposition``: ``filename*=utf-8''...`` (RFC 6266) first,
#: then ``filename="..."`` or ``filename=...``.
_EXTENDED_NAME: Final = re.compile(r"filename\*\s*=\s*utf-8''([^;\s]+)", re.IGNORECASE)
_PLAIN_NAME: Final = re.compile(r'filename\s*=\s*(?:"([^"]*)"|([^;\s]+))', re.IGNORECASE)


class NotMultipart(ValueError):
    """The answer is not the ``multipart/mixed`` body the spec requires; why."""


@dataclass(frozen=True)
class MediaAnswer:
    """A federation media answer read: its metadata object and either the media's
    ``content_type`` and ``data`` or the ``location`` to fetch them from."""

    metadata: dict[str, Any]
    content_type: str
    data: bytes
    location: str | None


def read_media_answer(content_type: str, body: bytes) -> MediaAnswer:
    """The two parts of a federation ``media/download`` (or ``thumbnail``) answer;
    NotMultipart saying what is wrong when it is not two parts, the first a JSON object."""
    if not content_type.lower().startswith("multipart/mixed"):
        raise NotMultipart(f"Content-Type {content_type!r}, not multipart/mixed")
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise NotMultipart("the body has no parts under its boundary")
    parts = list(message.iter_parts())
    if len(parts) != 2:
        raise NotMultipart(f"{len(parts)} parts, not 2 (metadata, then the media)")
    first, second = parts
    if first.get_content_type() != "application/json":
        raise NotMultipart(f"the first part is {first.get_content_type()}, not application/json")
    try:
        metadata = json.loads(_bytes(first.get_payload(decode=True)))
    except ValueError:
        raise NotMultipart("the first part is not JSON") from None
    if not isinstance(metadata, dict):
        raise NotMultipart(f"the first part is {metadata!r}, not a JSON object")
    location = second.get("Location")
    data = _bytes(second.get_payload(decode=True))
    return MediaAnswer(metadata, second.get_content_type(), data, location)


def _bytes(payload: object) -> bytes:
    """A part's decoded payload as bytes (empty when it has none)."""
    return payload if isinstance(payload, bytes) else b""


def disposition_filename(header: str) -> str | None:
    """The file name a ``Content-Disposition`` header gives, or None (pure)."""
    extended = _EXTENDED_NAME.search(header)
    if extended:
        return unquote(extended.group(1))
    plain = _PLAIN_NAME.search(header)
    if plain:
        return plain.group(1) if plain.group(1) is not None else plain.group(2)
    return None
