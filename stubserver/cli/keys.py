"""``stubserver keys NAME [--json]`` (contract: DESIGN.md, "Command line", "keys --json").

Exit 1 unless the response's ``server_name`` matches, a verify key's self-signature checks
out and ``valid_until_ts`` is in the future. The prologue (options, NAME, the client, the
reactor) is ``stubserver.cli.federation_command``'s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TYPE_CHECKING

from stubserver.cli.federation_command import (
    EXIT_FAILED,
    EXIT_OK,
    row,
    run_with_client,
    target_line,
)

if TYPE_CHECKING:
    from stubserver.outbound.build import FederationContext


def _format_ts(ts: int | None) -> str:
    if ts is None:
        return "missing"
    when = datetime.datetime.fromtimestamp(ts / 1000, datetime.UTC)
    return f"{when:%Y-%m-%d %H:%M:%S} UTC ({ts})"


def main(args: argparse.Namespace) -> int:
    """``stubserver keys NAME [--json]``."""

    async def work(context: FederationContext) -> int:
        report = await context.key_fetcher.fetch_report(args.name)
        out = sys.stdout
        if args.json:
            out.write(json.dumps(report.to_json()) + "\n")
        else:
            if report.error is not None:
                row(out, "FAILED", report.error)
            row(out, "server name", report.server_name)
            if report.target is not None:
                row(out, "target", target_line(report.target))
            if report.status is not None:
                row(out, "status", f"HTTP {report.status}")
            if report.response is not None:
                row(out, "valid until", _format_ts(report.check.valid_until_ts))
                row(out, "signature", "ok" if report.check.signature_ok else "NOT verified")
                for key_id, key in report.check.verify_keys_base64.items():
                    row(out, "key", f"{key_id}  {key}")
                for key_id, entry in report.check.old_verify_keys_json.items():
                    row(
                        out,
                        "old key",
                        f"{key_id}  {entry.get('key')}  expired {entry.get('expired_ts')}",
                    )
        return EXIT_OK if report.ok else EXIT_FAILED

    return run_with_client(args, "keys", work)
