"""``stubserver check NAME [--json | --format tap] [--client] [federation options]``.

Exit status: 0 when the report's ``AllOK`` is true, 1 otherwise, 2 for bad usage (an
invalid server name, a bad config or flag).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.python.failure import Failure

from stubserver.check.checker import FederationChecker
from stubserver.check.hints import invalid_name_report
from stubserver.check.render import render_text
from stubserver.check.report import CheckReport
from stubserver.check.tap import render_tap
from stubserver.cli.main import EXIT_FAILED, EXIT_OK, EXIT_USAGE, federation_from_args
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.outbound.signed_request import FederationIdentity
from stubserver.reactor import global_reactor
from stubserver.tls.client import CaFileError


def report_text(report: CheckReport, *, as_json: bool = False, fmt: str = "text") -> str:
    """The report as printed: the tester's indented JSON, TAP for CI, or text for people."""
    if as_json or fmt == "json":
        return json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "tap":
        return render_tap(report)
    return render_text(report)


def output_format(args: argparse.Namespace) -> str:
    """``json``, ``tap`` or ``text`` from ``--json`` / ``--format``."""
    return "json" if args.json else (getattr(args, "format", None) or "text")


def exit_status(report: CheckReport) -> int:
    """0 when everything is OK, 1 otherwise."""
    return EXIT_OK if report.all_ok else EXIT_FAILED


def main(args: argparse.Namespace) -> int:
    """Entry point of ``stubserver check``; ConfigError propagates (exit 2 in ``_cli``)."""
    config, settings = federation_from_args(args)
    try:
        parse_server_name(args.name)
    except InvalidServerName as e:
        if output_format(args) != "text":
            sys.stdout.write(
                report_text(invalid_name_report(args.name, str(e)), fmt=output_format(args))
            )
        print(f"stubserver check: {e}", file=sys.stderr)
        return EXIT_USAGE
    identity = (
        FederationIdentity(config.server_name, config.signing_key) if config is not None else None
    )

    reactor = global_reactor()
    try:
        checker = FederationChecker(
            reactor, settings, identity, client=bool(getattr(args, "client", False))
        )
    except CaFileError as e:
        print(f"stubserver check: {e}", file=sys.stderr)
        return EXIT_USAGE
    outcome: list[Any] = []

    def run() -> None:
        d = checker.check(args.name)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    if not outcome or isinstance(outcome[0], Failure):
        detail = outcome[0].getTraceback() if outcome else "the check did not finish"
        print(f"stubserver check: internal error: {detail}", file=sys.stderr)
        return EXIT_FAILED
    report: CheckReport = outcome[0]
    sys.stdout.write(report_text(report, fmt=output_format(args)))
    return exit_status(report)
