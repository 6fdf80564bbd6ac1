"""The control API's profile and media operations over a real profile table and store."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from stubserver.config import UserProfile
from stubserver.control.api import control_routes
from stubserver.control.feed import RequestFeed
from stubserver.media.store import MediaItem, MediaStore
from stubserver.profiles import ProfileTable
from stubserver.server.router import FederationRouter
from tests.control.fakes import FakeRoomControl
from tests.support import result_now, stub_treq

TOKEN = "the-token"
BASE = "http://127.0.0.1:8009/_stubserver/v1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Harness:
    """The control routes with a profile table and a media store."""

    def __init__(self) -> None:
        self.profiles = ProfileTable({"alice": UserProfile(displayname="Alice")})
        self.media = MediaStore()
        routes = control_routes(
            FakeRoomControl(),
            TOKEN,
            RequestFeed(Clock()),
            profiles=self.profiles,
            media=self.media,
        )
        self.stub = stub_treq(FederationRouter(routes))

    def call(self, method: str, path: str, body: Any, token: str = TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        d = self.stub.request(method, BASE + path, data=json.dumps(body).encode(), headers=headers)
        self.stub.flush()
        response = result_now(d)
        return response.code, result_now(self.stub.json_content(response))


def test_a_profile_is_set_whole() -> None:
    """PUT /users/{user}/profile sets the profile /query/profile then answers."""
    h = Harness()
    body = {"displayname": "Bob", "avatar_url": "mxc://a.test/bob"}
    assert h.call("PUT", "/users/bob/profile", body) == (200, {})
    assert h.profiles["bob"] == UserProfile("Bob", "mxc://a.test/bob")
    assert h.call("PUT", "/users/alice/profile", {"avatar_url": "mxc://a.test/a"})[0] == 200
    assert h.profiles["alice"] == UserProfile(None, "mxc://a.test/a")


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/users/Bad%20User/profile", {"displayname": "x"}, "localpart"),
        ("/users/bob/profile", {"displayname": "x" * 300}, "displayname"),
        ("/users/bob/profile", {"display_name": "x"}, "unknown key"),
        ("/users/bob/profile", {"displayname": 3}, "non-empty string"),
    ],
    ids=["localpart", "long", "typo", "type"],
)
def test_bad_profiles_are_400(path: str, body: Any, words: str) -> None:
    """A bad localpart, an over-long field, an unknown key or a wrong type: 400, saying which."""
    h = Harness()
    status, answer = h.call("PUT", path, body)
    assert status == 400 and words in answer["error"]
    assert "bob" not in h.profiles


def test_media_is_put_and_its_mxc_uri_answered() -> None:
    """PUT /media/{id} stores the decoded bytes, type and file name; → its mxc:// URI."""
    h = Harness()
    data = b"\x89PNG\x00\xff"
    body = {
        "content_type": "image/png",
        "data": base64.b64encode(data).decode(),
        "filename": "a.png",
    }
    assert h.call("PUT", "/media/abc", body) == (200, {"content_uri": "mxc://a.test/abc"})
    assert h.media.get("abc") == MediaItem("image/png", data, "a.png")
    unpadded = {"content_type": "text/plain", "data": "aGk"}
    assert h.call("PUT", "/media/hi", unpadded)[0] == 200
    assert h.media.get("hi") == MediaItem("text/plain", b"hi", None)


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/media/a.b", {"content_type": "text/plain", "data": ""}, "media ID"),
        ("/media/ab", {"content_type": "text/plain", "data": "!!"}, "base64"),
        ("/media/ab", {"content_type": "text/plain", "data": 1}, "base64"),
        ("/media/ab", {"data": ""}, "'content_type' is required"),
        ("/media/ab", {"content_type": "plain", "data": ""}, "content type"),
    ],
    ids=["id", "not base64", "not a string", "no type", "bad type"],
)
def test_bad_media_is_400(path: str, body: Any, words: str) -> None:
    """A bad media ID, data that is not base64, a missing or bad content type: 400."""
    h = Harness()
    status, answer = h.call("PUT", path, body)
    assert status == 400 and words in answer["error"]


def test_both_need_the_token() -> None:
    """Without the token: 401 M_UNKNOWN_TOKEN, nothing stored."""
    h = Harness()
    assert h.call("PUT", "/users/bob/profile", {}, token="x")[0] == 401
    assert h.call("PUT", "/media/ab", {"content_type": "a/b", "data": ""}, token="x")[0] == 401
    assert "bob" not in h.profiles and h.media.get("ab") is None
