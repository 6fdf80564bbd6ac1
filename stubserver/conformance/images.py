"""Small images for the media tests, and reading an image's size back (pure).

:func:`png_image` writes a valid PNG (8-bit RGB, every row filter 0, one IDAT) with
``zlib`` and ``struct`` alone; its pixels vary with ``seed`` so that every upload is new
media and a thumbnail is a real resampling. :func:`image_size` reads the type and size of
a PNG, JPEG or GIF from its header, as a thumbnail answer is judged by its size.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from typing import Final

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (baseline, progressive, ...): not DHT, JPG or DAC.
_SOF_MARKERS: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_image(width: int, height: int, seed: bytes) -> bytes:
    """A ``width`` x ``height`` RGB PNG whose pixels are drawn from ``seed``."""
    stream = hashlib.shake_256(seed).digest(width * height * 3)
    rows = b"".join(b"\x00" + stream[y * width * 3 : (y + 1) * width * 3] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class ImageSize:
    """An image's format (``png``, ``jpeg``, ``gif``) and size in pixels."""

    kind: str
    width: int
    height: int


def image_size(data: bytes) -> ImageSize | None:
    """The format and size of a PNG, JPEG or GIF; None for anything else (or a header
    cut short)."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return ImageSize("png", width, height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return ImageSize("gif", width, height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    return None


def _jpeg_size(data: bytes) -> ImageSize | None:
    """Walk the JPEG's segments to its start-of-frame, which holds the size."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        if marker in _SOF_MARKERS:
            if at + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return ImageSize("jpeg", width, height)
        at += 2 + length
    return None


def thumbnail_fault(
    size: ImageSize, requested: tuple[int, int], original: tuple[int, int]
) -> tuple[str, str] | None:
    """What is wrong with a thumbnail of ``size`` asked at ``requested`` of an image of
    ``original`` size (width, height), as (the rule, the size it needed); None when
    nothing is (pure). "Servers MUST NOT upscale thumbnails under any circumstance.
    Servers MUST NOT return a smaller thumbnail than requested, unless the original
    content makes that impossible." (Client-Server API, "Thumbnails")."""
    floor = (min(requested[0], original[0]), min(requested[1], original[1]))
    if size.width < floor[0] or size.height < floor[1]:
        return "MUST NOT be smaller than requested", f"at least {floor[0]}x{floor[1]}"
    if size.width > original[0] or size.height > original[1]:
        return "MUST NOT upscale", f"at most {original[0]}x{original[1]}"
    return None
