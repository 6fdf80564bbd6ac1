"""The version we publish is the one the package was installed with."""

from importlib.metadata import version

from stubserver import __version__


def test_version_matches_installed_metadata() -> None:
    """stubserver.__version__ equals pyproject.toml's version (as installed)."""
    assert __version__ == version("stubserver")
