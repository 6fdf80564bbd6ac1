"""The federation media download the peer serves: multipart/mixed as the spec lays it out
(read back with the conformance suite's own reader), X-Matrix required, 404 unknown."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.conformance.multipart import read_media_answer
from stubserver.media.download import content_disposition, media_routes, multipart_answer
from stubserver.media.store import MediaItem, MediaStore
from stubserver.server.router import FederationRouter, request_annotations
from tests.support import result_now, stub_treq

URL = "https://a.test/_matrix/federation/v1/media/download/"


@pytest.mark.parametrize(
    ("filename", "header"),
    [
        (None, "attachment"),
        ("cat.png", 'attachment; filename="cat.png"'),
        ('a"b.txt', "attachment; filename*=utf-8''a%22b.txt"),
        ("chat \u00e9t\u00e9.png", "attachment; filename*=utf-8''chat%20%C3%A9t%C3%A9.png"),
    ],
    ids=["none", "plain", "quote", "unicode"],
)
def test_content_disposition(filename: str | None, header: str) -> None:
    """No file name: ``attachment`` alone; a plain ASCII name quoted; anything else as
    RFC 6266's ``filename*``."""
    assert content_disposition(filename) == header


@pytest.mark.parametrize("filename", [None, "cat.png"])
def test_the_answer_is_two_parts_metadata_then_the_bytes(filename: str | None) -> None:
    """The body is multipart/mixed: a JSON object, then the bytes with their type and
    disposition, byte for byte (even bytes that look like a boundary line)."""
    data = b"\x89PNG\r\n--\r\n\x00\xff" * 10
    content_type, body = multipart_answer(MediaItem("image/png", data, filename))
    answer = read_media_answer(content_type, body)
    assert (answer.metadata, answer.content_type, answer.data) == ({}, "image/png", data)
    assert answer.location is None


def test_the_boundary_is_in_no_part() -> None:
    """Bytes that hold the first boundary chosen get a longer one."""
    first, _ = multipart_answer(MediaItem("text/plain", b"x"))
    boundary = first.split("boundary=")[1]
    data = f"--{boundary}--".encode()
    content_type, body = multipart_answer(MediaItem("text/plain", data))
    assert content_type.split("boundary=")[1] not in data.decode()
    assert read_media_answer(content_type, body).data == data


def _router(store: MediaStore, *, authenticated: bool) -> Any:
    def annotate(request: Any) -> None:
        request_annotations(request).update(
            origin="b.test" if authenticated else None,
            authenticated=authenticated,
            auth_error=None if authenticated else "Missing Authorization headers",
            content=None,
        )

    return stub_treq(FederationRouter(media_routes(store), filters=[annotate]))


def test_the_route_serves_media_to_a_signed_request() -> None:
    """A signed GET of a media ID put in the store answers 200 multipart/mixed with it."""
    store = MediaStore()
    store.put("abc", MediaItem("text/plain", b"hello", None))
    stub = _router(store, authenticated=True)
    response = result_now(stub.get(URL + "abc"))
    body = result_now(stub.content(response))
    content_type = response.headers.getRawHeaders("Content-Type")[0]
    assert response.code == 200
    assert read_media_answer(content_type, body).data == b"hello"


def test_unknown_media_is_404_and_unsigned_requests_401() -> None:
    """An unknown media ID is 404 M_NOT_FOUND; without X-Matrix, 401 M_UNAUTHORIZED."""
    store = MediaStore()
    store.put("abc", MediaItem("text/plain", b"hello", None))
    signed = _router(store, authenticated=True)
    response = result_now(signed.get(URL + "abd"))
    assert (response.code, result_now(signed.json_content(response))["errcode"]) == (
        404,
        "M_NOT_FOUND",
    )
    unsigned = _router(store, authenticated=False)
    response = result_now(unsigned.get(URL + "abc"))
    assert (response.code, result_now(unsigned.json_content(response))["errcode"]) == (
        401,
        "M_UNAUTHORIZED",
    )
