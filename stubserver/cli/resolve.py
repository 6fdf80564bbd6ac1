"""``stubserver resolve NAME [--json]`` (contract: DESIGN.md, "Command line", "resolve --json").

With ``--json`` the output is exactly DESIGN.md's; without, a short aligned report for
people with the failing step first. The prologue (options, NAME, the client, the reactor)
is ``stubserver.cli.federation_command``'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from stubserver.cli.federation_command import (
    EXIT_FAILED,
    EXIT_OK,
    row,
    run_with_client,
    target_line,
)
from stubserver.discovery.resolution import Resolution

if TYPE_CHECKING:
    from stubserver.outbound.build import FederationContext


def format_resolution(resolution: Resolution, out: TextIO) -> None:
    """The human report of a resolution: the failing step first."""
    if resolution.error is not None:
        row(out, "FAILED", f"[{resolution.failed_step}] {resolution.error}")
    row(out, "server name", resolution.server_name)
    wk = resolution.well_known
    if wk is not None:
        outcome = f"m.server {wk.m_server}" if wk.m_server else f"no delegation: {wk.error}"
        status = "" if wk.status is None else f"HTTP {wk.status}, "
        row(out, "well-known", f"{wk.url}: {status}{outcome} (cached {round(wk.cache_seconds)} s)")
    if resolution.delegated_server_name:
        row(out, "delegated", resolution.delegated_server_name)
    for lookup in resolution.srv_lookups:
        if lookup.error:
            text = f"error: {lookup.error}"
        elif lookup.refused:
            text = "service not available ('.')"
        elif not lookup.records:
            text = "none"
        else:
            text = ", ".join(
                f"{r.priority} {r.weight} {r.port} {r.target}" for r in lookup.records
            ) + (" (stale)" if lookup.stale else "")
        row(out, "SRV", f"{lookup.name}: {text}")
    for address_lookup in resolution.address_lookups:
        if address_lookup.blocked:
            row(out, "blocked", f"{address_lookup.host}: {', '.join(address_lookup.blocked)}")
        elif address_lookup.error:
            row(out, "addresses", address_lookup.error)
    if resolution.steps:
        row(out, "steps", ", ".join(resolution.steps))
    for i, target in enumerate(resolution.targets, start=1):
        row(out, f"target {i}", target_line(target))


def main(args: argparse.Namespace) -> int:
    """``stubserver resolve NAME [--json]``."""

    async def work(context: FederationContext) -> int:
        resolution = await context.resolver.resolve(args.name)
        if args.json:
            sys.stdout.write(json.dumps(resolution.to_json()) + "\n")
        else:
            format_resolution(resolution, sys.stdout)
        return EXIT_OK if resolution.error is None else EXIT_FAILED

    return run_with_client(args, "resolve", work)
