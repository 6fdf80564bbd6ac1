"""stubserver: a small, fast, spec-exact Matrix federation peer on Twisted.

The public surface is re-exported here; everything else lives in private modules.
"""

from stubserver._version import __version__

__all__ = ["__version__"]
