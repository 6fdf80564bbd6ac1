"""The media tests' images: a PNG made with zlib and struct, and sizes read back."""

from __future__ import annotations

import struct
import zlib

import pytest

from stubserver.conformance.images import ImageSize, image_size, png_image, thumbnail_fault


def test_the_png_is_valid_and_its_size_reads_back() -> None:
    """The PNG's chunks have correct CRCs, its pixels inflate to the rows the header
    promises, and its size reads back; another seed gives other pixels."""
    data = png_image(7, 5, b"seed")
    assert image_size(data) == ImageSize("png", 7, 5)
    at, chunks = 8, {}
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = body
        at += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    assert len(zlib.decompress(chunks[b"IDAT"])) == 5 * (1 + 7 * 3)
    assert png_image(7, 5, b"other") != data


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (_jpeg(32, 24), ImageSize("jpeg", 32, 24)),
        (b"GIF89a" + struct.pack("<HH", 9, 4) + b"\x00" * 10, ImageSize("gif", 9, 4)),
        (b"\xff\xd8\xff\xe0\x00", None),
        (b"RIFF....WEBPVP8 ", None),
        (b"{}", None),
        (png_image(2, 2, b"x")[:20], None),
    ],
    ids=["jpeg", "gif", "jpeg cut short", "webp", "json", "png cut short"],
)
def test_sizes_of_other_formats(data: bytes, size: ImageSize | None) -> None:
    """A JPEG's size comes from its start-of-frame after other segments, a GIF's from its
    screen descriptor; formats it does not read, and cut headers, give None."""
    assert image_size(data) == size


@pytest.mark.parametrize(
    ("size", "fault"),
    [
        ((32, 32), None),
        ((64, 48), None),
        ((48, 48), None),
        ((16, 16), ("MUST NOT be smaller than requested", "at least 32x32")),
        ((64, 31), ("MUST NOT be smaller than requested", "at least 32x32")),
        ((96, 96), ("MUST NOT upscale", "at most 64x48")),
        ((64, 64), ("MUST NOT upscale", "at most 64x48")),
    ],
    ids=["exact", "original", "between", "too small", "too short", "upscaled", "too tall"],
)
def test_thumbnail_sizes_are_judged_by_the_two_musts(
    size: tuple[int, int], fault: tuple[str, str] | None
) -> None:
    """A 32x32 thumbnail of a 64x48 image passes anywhere from 32x32 to 64x48; smaller
    than asked, or larger than the original in either dimension, names the rule."""
    assert thumbnail_fault(ImageSize("png", *size), (32, 32), (64, 48)) == fault


def test_a_thumbnail_of_a_smaller_image_may_be_smaller_than_asked() -> None:
    """ "unless the original content makes that impossible": an image smaller than asked
    may come back at its own size, not smaller."""
    assert thumbnail_fault(ImageSize("png", 20, 10), (32, 32), (20, 10)) is None
    assert thumbnail_fault(ImageSize("png", 10, 5), (32, 32), (20, 10)) == (
        "MUST NOT be smaller than requested",
        "at least 20x10",
    )
