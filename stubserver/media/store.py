"""Our users' media, as a test put it through the control API (``PUT
/_stubserver/v1/media/{mediaId}``): its bytes, content type and optional file name.

In memory and bounded by the module's constants; a media ID is what the spec lets an
``mxc://`` URI hold ("homeservers MUST sanitise MXC URIs by allowing only alphanumeric
(``A-Za-z0-9``), ``_`` and ``-`` characters", Client-Server API, "Content repository").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

#: Most media held at once.
MAX_MEDIA_ITEMS: Final = 100
#: Largest media item, in bytes.
MAX_MEDIA_BYTES: Final = 1024 * 1024
#: Largest total of all items, in bytes.
MAX_TOTAL_BYTES: Final = 16 * 1024 * 1024
#: Longest content type and file name, in characters.
MAX_CONTENT_TYPE_CHARS: Final = 255
MAX_FILENAME_CHARS: Final = 255
#: What a media ID may hold (the spec's sanitisation of ``mxc://`` URIs).
MEDIA_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
#: A content type: ``type/subtype``, with parameters.
CONTENT_TYPE: Final = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(;[ -~]*)?$")


class MediaRefused(ValueError):
    """A media item the store does not take; why."""


@dataclass(frozen=True)
class MediaItem:
    """One item: its bytes, content type and file name (None: uploaded without one)."""

    content_type: str
    data: bytes
    filename: str | None = None


@dataclass
class MediaStore:
    """Media by ID, within :data:`MAX_MEDIA_ITEMS` and :data:`MAX_TOTAL_BYTES`."""

    _items: dict[str, MediaItem] = field(default_factory=dict)

    def put(self, media_id: str, item: MediaItem) -> None:
        """Add or replace ``media_id``; MediaRefused for a bad ID or item, or no room."""
        check_item(media_id, item)
        old = self._items.get(media_id)
        if old is None and len(self._items) >= MAX_MEDIA_ITEMS:
            raise MediaRefused(f"more than {MAX_MEDIA_ITEMS} media items")
        total = sum(len(i.data) for i in self._items.values()) - (len(old.data) if old else 0)
        if total + len(item.data) > MAX_TOTAL_BYTES:
            raise MediaRefused(f"more than {MAX_TOTAL_BYTES} bytes of media in all")
        self._items[media_id] = item

    def get(self, media_id: str) -> MediaItem | None:
        """The item, or None."""
        return self._items.get(media_id)


def check_item(media_id: str, item: MediaItem) -> None:
    """MediaRefused unless ``media_id`` and ``item`` are within the store's rules (pure)."""
    if not MEDIA_ID.match(media_id):
        raise MediaRefused("a media ID is 1 to 255 of A-Z, a-z, 0-9, '_' and '-'")
    if len(item.data) > MAX_MEDIA_BYTES:
        raise MediaRefused(f"a media item is at most {MAX_MEDIA_BYTES} bytes")
    if len(item.content_type) > MAX_CONTENT_TYPE_CHARS or not CONTENT_TYPE.match(item.content_type):
        raise MediaRefused(f"{item.content_type[:100]!r} is not a content type")
    if item.filename is not None and not 0 < len(item.filename) <= MAX_FILENAME_CHARS:
        raise MediaRefused(f"a file name is 1 to {MAX_FILENAME_CHARS} characters")
    if item.filename is not None and any(ord(c) < 0x20 or c == "\x7f" for c in item.filename):
        raise MediaRefused("a file name holds no control characters")
