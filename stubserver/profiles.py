"""Our users' profiles: what ``/_matrix/federation/v1/query/profile`` answers.

:class:`ProfileTable` starts with the config's ``users`` and takes the profiles the control
API sets (``PUT /_stubserver/v1/users/{user}/profile``), so that a test can give a user of
ours a display name and avatar the homeserver then asks for. In memory, bounded by the
module's constants (the lengths are Synapse's own limits for the two fields). It sits here,
below both its users (the profile route of ``app/`` and the control API), as a shared type.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

from stubserver.config import UserProfile

#: Most users with a profile.
MAX_PROFILES: Final = 10_000
#: Longest display name, in characters (Synapse's limit).
MAX_DISPLAYNAME_CHARS: Final = 256
#: Longest avatar URL, in characters (Synapse's limit).
MAX_AVATAR_URL_CHARS: Final = 1_000


class ProfileRefused(ValueError):
    """A profile the table does not take (a field too long, too many users); why."""


class ProfileTable(Mapping[str, UserProfile]):
    """Profiles by localpart: a read-only mapping for the profile route, and :meth:`put`."""

    def __init__(self, initial: Mapping[str, UserProfile]) -> None:
        self._profiles: dict[str, UserProfile] = dict(initial)

    def __getitem__(self, localpart: str) -> UserProfile:
        return self._profiles[localpart]

    def __iter__(self) -> Iterator[str]:
        return iter(self._profiles)

    def __len__(self) -> int:
        return len(self._profiles)

    def put(self, localpart: str, profile: UserProfile) -> None:
        """Set ``localpart``'s profile whole (a field left None is then unset)."""
        if profile.displayname is not None and len(profile.displayname) > MAX_DISPLAYNAME_CHARS:
            raise ProfileRefused(f"displayname is longer than {MAX_DISPLAYNAME_CHARS} characters")
        if profile.avatar_url is not None and len(profile.avatar_url) > MAX_AVATAR_URL_CHARS:
            raise ProfileRefused(f"avatar_url is longer than {MAX_AVATAR_URL_CHARS} characters")
        if localpart not in self._profiles and len(self._profiles) >= MAX_PROFILES:
            raise ProfileRefused(f"more than {MAX_PROFILES} users with a profile")
        self._profiles[localpart] = profile
