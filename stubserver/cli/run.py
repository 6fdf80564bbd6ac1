"""``stubserver run -c CONFIG``: the command's entry; the composition root is
``stubserver.app.run`` (config, TLS, sites, listeners, the ready line, shutdown).
"""

from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    """Serve the config named by ``-c`` until SIGINT or SIGTERM (ConfigError: exit 2);
    ``--verbose`` logs at debug level whatever the config's ``log_level``."""
    from stubserver.app.run import serve  # noqa: PLC0415 - imported when chosen

    return serve(args.config, verbose=args.verbose)
