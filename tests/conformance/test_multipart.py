"""Reading a federation media answer: the two parts the spec requires, and the wrong ones."""

from __future__ import annotations

import pytest

from stubserver.conformance.multipart import NotMultipart, disposition_filename, read_media_answer

TYPE = "multipart/mixed; boundary=b0undary"


def _body(*parts: tuple[str, bytes]) -> bytes:
    chunks = [
        b"--b0undary\r\nContent-Type: " + t.encode() + b"\r\n\r\n" + d + b"\r\n" for t, d in parts
    ]
    return b"".join(chunks) + b"--b0undary--\r\n"


def test_metadata_and_bytes_are_read() -> None:
    """Metadata ``{}`` then the bytes: both come back, the bytes exactly."""
    data = b'{"x": 1}\x00\xff'
    answer = read_media_answer(TYPE, _body(("application/json", b"{}"), ("text/plain", data)))
    assert (answer.metadata, answer.content_type, answer.data, answer.location) == (
        {},
        "text/plain",
        data,
        None,
    )


def test_a_location_part_is_read() -> None:
    """A second part with a ``Location`` header (the redirect the spec allows)."""
    body = (
        b"--b0undary\r\nContent-Type: application/json\r\n\r\n{}\r\n"
        b"--b0undary\r\nLocation: https://cdn.example/m\r\n\r\n\r\n--b0undary--\r\n"
    )
    assert read_media_answer(TYPE, body).location == "https://cdn.example/m"


@pytest.mark.parametrize(
    ("content_type", "body", "why"),
    [
        ("application/octet-stream", b"raw", "not multipart/mixed"),
        (TYPE, _body(("application/json", b"{}")), "1 parts, not 2"),
        (TYPE, _body(("text/plain", b"{}"), ("text/plain", b"x")), "not application/json"),
        (TYPE, _body(("application/json", b"{no"), ("text/plain", b"x")), "not JSON"),
        (TYPE, _body(("application/json", b"[]"), ("text/plain", b"x")), "not a JSON object"),
    ],
)
def test_wrong_answers_say_what_is_wrong(content_type: str, body: bytes, why: str) -> None:
    """A raw body, one part, a non-JSON or non-object first part: NotMultipart says which."""
    with pytest.raises(NotMultipart, match=why):
        read_media_answer(content_type, body)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('attachment; filename="cat.png"', "cat.png"),
        ("inline; filename=conformance.png", "conformance.png"),
        ("attachment; filename*=utf-8''chat%20%C3%A9t%C3%A9.png", "chat \u00e9t\u00e9.png"),
        ("attachment; filename=\"x.png\"; filename*=UTF-8''y.png", "y.png"),
        ("inline", None),
        ("", None),
    ],
    ids=["quoted", "token", "extended", "both: extended wins", "none", "empty"],
)
def test_the_file_name_of_a_content_disposition(header: str, name: str | None) -> None:
    """The file name comes from ``filename*`` (RFC 6266) when given, else ``filename``,
    quoted or not; a disposition without one has none."""
    assert disposition_filename(header) == name
