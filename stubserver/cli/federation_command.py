"""The shared prologue of the commands that reach out by name (``resolve``, ``keys``).

:func:`run_with_client` validates NAME, applies the federation options (DESIGN.md,
"Command line") and runs the command's work with a federation client under ``task.react``;
only it touches the global reactor. Exit status: 0 success, 1 the federation operation
failed (the output says why), 2 bad usage (a malformed server name, an unreadable CA file;
config errors are turned into 2 by ``stubserver.cli.main.main``). :func:`row` and
:func:`target_line` are the aligned text both commands print for people.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TextIO

from stubserver.discovery.resolution import Target
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.reactor import IReactor, react_main, start_warning_logging
from stubserver.tls.client import CaFileError

if TYPE_CHECKING:
    from stubserver.outbound.build import FederationContext

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Width of the label column in the text output, in characters.
LABEL_WIDTH = 12


def check_name(name: str) -> str | None:
    """Why ``name`` is not a server name, or None when it is one."""
    try:
        parse_server_name(name)
    except InvalidServerName as e:
        return str(e)
    return None


def target_line(target: Target) -> str:
    """One resolution target on one line, for people."""
    addresses = ", ".join(target.addresses) or "no usable address"
    host = f"[{target.host}]" if ":" in target.host else target.host
    return (
        f"{host}:{target.port} ({addresses})  Host: {target.host_header}"
        f"  TLS name: {target.tls_server_name}  [{target.source}]"
    )


def row(out: TextIO, label: str, value: str) -> None:
    """One aligned ``label value`` line."""
    out.write(f"{label:<{LABEL_WIDTH}}{value}\n")


def run_with_client(
    args: argparse.Namespace,
    command: str,
    work: Callable[[FederationContext], Coroutine[Any, Any, int]],
) -> int:
    """Validate NAME, build the federation client from the options, run ``work`` with it."""
    from stubserver.cli.main import federation_from_args  # noqa: PLC0415
    from stubserver.outbound.build import build_federation_client  # noqa: PLC0415

    _config, settings = federation_from_args(args)
    problem = check_name(args.name)
    if problem is not None:
        print(f"stubserver {command}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    start_warning_logging(sys.stderr)

    async def body(reactor: IReactor) -> int:
        try:
            context = build_federation_client(reactor, settings)
        except CaFileError as e:
            print(f"stubserver {command}: {e}", file=sys.stderr)
            return EXIT_USAGE
        return await work(context)

    return react_main(body)
