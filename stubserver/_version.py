"""The package version, as published at /_matrix/federation/v1/version.

Written here rather than read with ``importlib.metadata``: that import alone costs about
50 ms of start-up. ``tests/test_version.py`` checks it equals pyproject.toml's version.
"""

__version__ = "0.1.0"
