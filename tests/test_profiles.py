"""The profile table: the config's profiles, then those set, within its bounds."""

from __future__ import annotations

import pytest

from stubserver.config import UserProfile
from stubserver.profiles import (
    MAX_AVATAR_URL_CHARS,
    MAX_DISPLAYNAME_CHARS,
    MAX_PROFILES,
    ProfileRefused,
    ProfileTable,
)


def test_the_config_profiles_are_there_and_a_put_replaces_one_whole() -> None:
    """A table starts with the config's users; ``put`` sets a profile whole."""
    table = ProfileTable({"alice": UserProfile(displayname="Alice")})
    assert dict(table) == {"alice": UserProfile(displayname="Alice")}
    table.put("alice", UserProfile(avatar_url="mxc://a.test/x"))
    table.put("bob", UserProfile(displayname="Bob"))
    assert table["alice"] == UserProfile(avatar_url="mxc://a.test/x")
    assert table.get("bob") == UserProfile(displayname="Bob")
    assert len(table) == 2


@pytest.mark.parametrize(
    "profile",
    [
        UserProfile(displayname="x" * (MAX_DISPLAYNAME_CHARS + 1)),
        UserProfile(avatar_url="x" * (MAX_AVATAR_URL_CHARS + 1)),
    ],
    ids=["displayname", "avatar_url"],
)
def test_too_long_fields_are_refused(profile: UserProfile) -> None:
    """A field over its bound is refused, naming it."""
    field = "displayname" if profile.displayname else "avatar_url"
    with pytest.raises(ProfileRefused, match=field):
        ProfileTable({}).put("alice", profile)


def test_the_number_of_profiles_is_bounded() -> None:
    """No new user beyond :data:`MAX_PROFILES`; an existing one may still change."""
    table = ProfileTable({f"u{n}": UserProfile() for n in range(MAX_PROFILES)})
    with pytest.raises(ProfileRefused, match="more than"):
        table.put("one-more", UserProfile())
    table.put("u0", UserProfile(displayname="U"))
