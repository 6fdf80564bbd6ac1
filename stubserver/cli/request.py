"""``stubserver request NAME PATH [-X METHOD] [-d JSON] [--json] -c CONFIG``.

Sends one request signed with the config's identity (server name and signing key) to
NAME, resolved and dialled by the federation agent, and shows the answer. ``--json``
prints (contract: DESIGN.md, "request --json")::

    {"status": 200, "body": <JSON or null>, "target": {<as in resolve --json>}, "error": null}

``target`` is the target the request was sent to (null when none answered); ``error`` is
null for a 2xx JSON answer and otherwise says what failed. Exit status: 0 on a 2xx, 1
otherwise, 2 for bad usage (no config, bad ``-d`` JSON, a bad NAME, PATH or METHOD).
The method is GET, or POST when ``-d`` is given.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.outbound.signed_request import check_path_and_query
from stubserver.reactor import IReactor, react_main, start_warning_logging
from stubserver.signing.canonical_json import BadJson, parse_json_bytes

if TYPE_CHECKING:
    from stubserver.config import Config, FederationSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
LABEL_WIDTH = 8
HTTP_SUCCESS_RANGE = range(200, 300)
_METHOD_RE = re.compile(r"[A-Z]{1,20}\Z")


class UsageError(Exception):
    """The command line cannot be run; ``str()`` says why."""


@dataclass(frozen=True)
class RequestPlan:
    """What to send, from the command line (pure)."""

    destination: str
    method: str
    path: str
    content: Any


def plan_request(name: str, path: str, method: str | None, data: str | None) -> RequestPlan:
    """Validate the arguments; raise :class:`UsageError` naming the first bad one."""
    try:
        parse_server_name(name)
    except InvalidServerName as e:
        raise UsageError(str(e)) from None
    try:
        check_path_and_query(path)
    except ValueError as e:
        raise UsageError(str(e)) from None
    content = None
    if data is not None:
        try:
            content = parse_json_bytes(data.encode("utf-8", "surrogatepass"))
        except BadJson as e:
            raise UsageError(f"-d is not valid JSON: {e}") from None
    chosen = (method or ("POST" if data is not None else "GET")).upper()
    if not _METHOD_RE.match(chosen):
        raise UsageError(f"-X {method!r} is not an HTTP method")
    return RequestPlan(destination=name, method=chosen, path=path, content=content)


@dataclass(frozen=True)
class RequestOutcome:
    """What happened: the status and JSON body, the target used, and the error if any."""

    status: int | None
    body: Any
    target: dict[str, Any] | None
    error: str | None

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.status is not None and self.status in HTTP_SUCCESS_RANGE

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object."""
        return {
            "status": self.status,
            "body": self.body,
            "target": self.target,
            "error": self.error,
        }


def outcome_from_response(
    status: int, raw_body: bytes, target: dict[str, Any] | None
) -> RequestOutcome:
    """Interpret a response (pure): parse the body, say what failed when it is not a 2xx."""
    body: Any = None
    error: str | None = None
    if raw_body:
        try:
            body = parse_json_bytes(raw_body)
        except BadJson as e:
            error = f"HTTP {status}: the body is not JSON: {e}"
    if error is None and status not in HTTP_SUCCESS_RANGE:
        error = f"HTTP {status}"
        if isinstance(body, dict) and isinstance(body.get("errcode"), str):
            error += f": {body['errcode']}"
            if isinstance(body.get("error"), str):
                error += f": {body['error']}"
    return RequestOutcome(status=status, body=body, target=target, error=error)


def format_outcome(outcome: RequestOutcome, out: TextIO) -> None:
    """The human report: the failure first, then status, target and body."""
    if outcome.error is not None:
        out.write(f"{'FAILED':<{LABEL_WIDTH}}{outcome.error}\n")
    if outcome.status is not None:
        out.write(f"{'status':<{LABEL_WIDTH}}{outcome.status}\n")
    if outcome.target is not None:
        t = outcome.target
        host = f"[{t['host']}]" if ":" in t["host"] else t["host"]
        out.write(
            f"{'target':<{LABEL_WIDTH}}{host}:{t['port']} ({', '.join(t['addresses'])})"
            f"  Host: {t['host_header']}  TLS name: {t['tls_server_name']}  [{t['source']}]\n"
        )
    if outcome.body is not None:
        out.write(json.dumps(outcome.body, indent=2, ensure_ascii=False) + "\n")


async def send(
    reactor: IReactor, config: Config, settings: FederationSettings, plan: RequestPlan
) -> RequestOutcome:
    """Build the federation client from ``settings`` and send ``plan`` signed as ``config``."""
    from stubserver.outbound.build import build_federation_client  # noqa: PLC0415
    from stubserver.outbound.signed_request import (  # noqa: PLC0415
        FederationClient,
        FederationIdentity,
        FederationRequestFailed,
    )

    context = build_federation_client(reactor, settings)
    client = FederationClient(
        context.agent, FederationIdentity(config.server_name, config.signing_key), reactor
    )

    def target() -> dict[str, Any] | None:
        found = context.agent.connected_target(plan.destination)
        return None if found is None else found.to_json()

    try:
        response = await client.request(plan.method, plan.destination, plan.path, plan.content)
    except FederationRequestFailed as e:
        return RequestOutcome(status=None, body=None, target=target(), error=str(e))
    finally:
        # Twisted leaves the pool untyped; closing lets the server see a clean goodbye.
        await context.agent.pool.closeCachedConnections()  # type: ignore[no-untyped-call]
    return outcome_from_response(response.status, response.body, target())


def main(args: argparse.Namespace) -> int:
    """Entry point of ``stubserver request``."""
    from stubserver.cli.main import federation_from_args  # noqa: PLC0415
    from stubserver.tls.client import CaFileError  # noqa: PLC0415

    config, settings = federation_from_args(args)
    if config is None:
        print("stubserver request: -c CONFIG is required (who signs the request)", file=sys.stderr)
        return EXIT_USAGE
    try:
        plan = plan_request(args.name, args.path, args.method, args.data)
    except UsageError as e:
        print(f"stubserver request: {e}", file=sys.stderr)
        return EXIT_USAGE
    start_warning_logging(sys.stderr)

    async def body(reactor: IReactor) -> int:
        try:
            outcome = await send(reactor, config, settings, plan)
        except CaFileError as e:
            print(f"stubserver request: {e}", file=sys.stderr)
            return EXIT_USAGE
        if args.json:
            sys.stdout.write(json.dumps(outcome.to_json()) + "\n")
        else:
            format_outcome(outcome, sys.stdout)
        return EXIT_OK if outcome.ok and outcome.error is None else EXIT_FAILED

    return react_main(body)
