"""The files generate writes: key versions and file names."""

from __future__ import annotations

import re

from stubserver.signing.key_files import file_stem, new_key_version


def test_key_versions_are_random() -> None:
    """Key versions are a_ and four random characters of [a-zA-Z0-9]."""
    versions = {new_key_version() for _ in range(20)}
    assert all(re.fullmatch(r"a_[a-zA-Z0-9]{4}", v) for v in versions)
    assert len(versions) > 1


def test_file_stem() -> None:
    """Colons become underscores and brackets go."""
    assert file_stem("beta.test") == "beta.test"
    assert file_stem("beta.test:8448") == "beta.test_8448"
    assert file_stem("[2001:db8::1]:443") == "2001_db8__1_443"
