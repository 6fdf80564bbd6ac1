"""``stubserver conformance``: run the built-in federation suite against a homeserver.

The peer that ``-c`` names must be running: the suite drives it through its control API
(``Peer.attach``) and drives the homeserver through its client API, with the users of the
access tokens given or users it registers. Exit 0 when nothing fails, 1 when a test fails
(or passes although ``--expect-fail`` says it fails), 2 on bad usage or when the peer or
the homeserver cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Users registered when credentials allow it (the suite uses the first; the second is
#: the device tests'; the third joins a room of ours as a user sharing none with us yet).
REGISTERED_USERS = 3


def add_conformance_parser(sub: Any) -> None:
    """The ``conformance`` subcommand's arguments."""
    p = sub.add_parser("conformance", help="check a running homeserver's federation")
    p.add_argument("--homeserver-name", required=True, metavar="NAME")
    p.add_argument(
        "--homeserver-url", required=True, metavar="URL", help="its client-server API base URL"
    )
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        required=True,
        help="config of the running peer that the suite drives",
    )
    creds = p.add_mutually_exclusive_group(required=True)
    creds.add_argument(
        "--homeserver-token",
        action="append",
        metavar="TOKEN",
        help="access token of an existing user (repeatable)",
    )
    creds.add_argument(
        "--registration-shared-secret",
        metavar="SECRET",
        help="register users with Synapse's shared-secret admin API",
    )
    creds.add_argument(
        "--registration-token", metavar="TOKEN", help="register users with a registration token"
    )
    p.add_argument("--only", metavar="PATTERN", help="run the tests whose id matches")
    p.add_argument(
        "--expect-fail",
        metavar="FILE",
        help="known failures: lines `ID-OR-GLOB  REASON` (or the name of a shipped file: synapse)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML to FILE")
    p.add_argument(
        "--ca-file",
        action="append",
        default=[],
        type=Path,
        metavar="PEM",
        help="trust this CA too (the homeserver's URL, raw federation requests)",
    )


def _users(homeserver: Any, args: argparse.Namespace) -> list[Any]:
    if args.homeserver_token:
        return [homeserver.user_with_token(t) for t in args.homeserver_token]
    if args.registration_shared_secret:
        return [
            homeserver.register_with_shared_secret(args.registration_shared_secret)
            for _ in range(REGISTERED_USERS)
        ]
    return [
        homeserver.register(registration_token=args.registration_token)
        for _ in range(REGISTERED_USERS)
    ]


def _progress(stream: TextIO, line: Callable[[Any], str]) -> Callable[[Any], None] | None:
    """On a terminal, print each test's line as it ends (tests end in several threads)."""
    if not stream.isatty():
        return None
    lock = threading.Lock()

    def show(result: Any) -> None:
        with lock:
            print(line(result), file=stream, flush=True)

    return show


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the suite; print the table or the JSON; write JUnit when asked."""
    from stubserver.conformance.context import Context  # noqa: PLC0415
    from stubserver.conformance.expected import (  # noqa: PLC0415
        ExpectFailFileError,
        classify,
        load_expect_fail,
    )
    from stubserver.conformance.output import (  # noqa: PLC0415
        format_progress,
        format_table,
        to_json,
        to_junit,
    )
    from stubserver.conformance.preflight import run_preflight  # noqa: PLC0415
    from stubserver.conformance.runner import exit_status, run_tests, select  # noqa: PLC0415
    from stubserver.conformance.suite import build_suite, supported_versions  # noqa: PLC0415
    from stubserver.testing import (  # noqa: PLC0415
        ControlError,
        ControlUnreachable,
        Homeserver,
        HomeserverError,
        HomeserverUnreachable,
        Peer,
    )

    stdout = out or sys.stdout
    try:
        known = load_expect_fail(args.expect_fail) if args.expect_fail else []
    except ExpectFailFileError as e:
        print(f"stubserver conformance: --expect-fail: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        peer = Peer.attach(args.config)
        peer.status()
        others = peer.siblings()
    except (ValueError, ControlError, ControlUnreachable) as e:
        print(
            f"stubserver conformance: the peer of {args.config} cannot be driven: {e}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        homeserver = Homeserver(
            args.homeserver_url,
            server_name=args.homeserver_name,
            ca_file=args.ca_file[0] if args.ca_file else None,
        )
        users = _users(homeserver, args)
        capabilities = (
            users[0]
            .homeserver.request(
                "GET", "/_matrix/client/v3/capabilities", access_token=users[0].access_token
            )
            .body
        )
    except (ValueError, HomeserverError, HomeserverUnreachable) as e:
        print(f"stubserver conformance: the homeserver cannot be used: {e}", file=sys.stderr)
        return EXIT_USAGE
    versions = supported_versions(capabilities)
    tests = select(build_suite(versions), args.only)
    if not tests:
        print(f"stubserver conformance: no test matches {args.only!r}", file=sys.stderr)
        return EXIT_USAGE
    context = Context(
        peer,
        homeserver,
        users,
        args.homeserver_name,
        Path(args.config),
        tuple(args.ca_file),
        others=others,
    )
    problems = run_preflight(context)
    if problems:
        print(
            f"stubserver conformance: {args.homeserver_name} and the peer cannot federate;"
            " no test was run:",
            file=sys.stderr,
        )
        for problem in problems:
            print(problem.text(), file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    results = run_tests(
        tests,
        context,
        classify=lambda r: classify(r, known),
        on_result=_progress(sys.stderr, format_progress),
    )
    seconds = time.monotonic() - started
    if args.junit is not None:
        args.junit.write_bytes(to_junit(args.homeserver_name, results, seconds))
    if args.json:
        stdout.write(json.dumps(to_json(args.homeserver_name, results)) + "\n")
    else:
        stdout.write(format_table(args.homeserver_name, results, seconds))
    return exit_status(results)
