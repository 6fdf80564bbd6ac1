"""The media store: what it takes, what it refuses, and its bounds."""

from __future__ import annotations

import pytest

from stubserver.media.store import (
    MAX_MEDIA_BYTES,
    MAX_MEDIA_ITEMS,
    MAX_TOTAL_BYTES,
    MediaItem,
    MediaRefused,
    MediaStore,
)

PNG = MediaItem("image/png", b"\x89PNG...", "a.png")


def test_an_item_put_is_got_back_and_may_be_replaced() -> None:
    """``get`` answers the item last put under an ID, None for an unknown ID."""
    store = MediaStore()
    store.put("abc", PNG)
    assert store.get("abc") == PNG
    other = MediaItem("text/plain", b"hi")
    store.put("abc", other)
    assert store.get("abc") == other
    assert store.get("abd") is None


@pytest.mark.parametrize(
    ("media_id", "item", "words"),
    [
        ("a/b", PNG, "media ID"),
        ("", PNG, "media ID"),
        ("a.b", PNG, "media ID"),
        ("x" * 256, PNG, "media ID"),
        ("ok", MediaItem("image", b""), "content type"),
        ("ok", MediaItem("image/png\r\nX: y", b""), "content type"),
        ("ok", MediaItem("text/plain", b"", ""), "file name"),
        ("ok", MediaItem("text/plain", b"", "a\nb"), "control characters"),
        ("ok", MediaItem("text/plain", b"x" * (MAX_MEDIA_BYTES + 1)), "at most"),
    ],
    ids=["slash", "empty", "dot", "long", "no subtype", "header", "empty name", "newline", "big"],
)
def test_bad_ids_and_items_are_refused(media_id: str, item: MediaItem, words: str) -> None:
    """A media ID outside the spec's ``mxc://`` characters, a content type that is not
    ``type/subtype``, an empty file name or one with control characters, and an item over
    the size bound are refused, saying which."""
    with pytest.raises(MediaRefused, match=words):
        MediaStore().put(media_id, item)


def test_the_number_of_items_is_bounded() -> None:
    """No item beyond :data:`MAX_MEDIA_ITEMS`; replacing one is still allowed."""
    store = MediaStore()
    for n in range(MAX_MEDIA_ITEMS):
        store.put(f"m{n}", MediaItem("text/plain", b""))
    with pytest.raises(MediaRefused, match="media items"):
        store.put("one-more", MediaItem("text/plain", b""))
    store.put("m0", PNG)


def test_the_total_size_is_bounded() -> None:
    """The items together stay within :data:`MAX_TOTAL_BYTES` (a replaced item's bytes
    no longer count)."""
    store = MediaStore()
    big = MediaItem("application/octet-stream", b"x" * MAX_MEDIA_BYTES)
    count = MAX_TOTAL_BYTES // MAX_MEDIA_BYTES
    for n in range(count):
        store.put(f"m{n}", big)
    with pytest.raises(MediaRefused, match="in all"):
        store.put("one-more", MediaItem("text/plain", b"x"))
    store.put("m0", big)
