"""The package version, as published at /_matrix/federation/v1/version."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("stubserver")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
