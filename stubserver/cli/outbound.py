"""``stubserver resolve`` and ``stubserver keys`` (contract: DESIGN.md, "Command line").

``resolve_main(args)`` and ``keys_main(args)`` take the parsed arguments and return the
exit status: 0 success, 1 the federation operation failed (the output says why), 2 bad
usage (a malformed server name, an unreadable CA file; config errors are turned into 2
by ``stubserver.cli.main.main``). Only these entry points touch the global reactor, through
``task.react``. With ``--json`` the output is exactly DESIGN.md's; without, a short
aligned report for people with the failing step first.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TextIO

from stubserver.cli.reactor_main import react_main, start_warning_logging
from stubserver.discovery.resolution import Resolution, Target
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.tls.client import CaFileError

if TYPE_CHECKING:
    from stubserver.client.build import FederationContext

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
LABEL_WIDTH = 12


def _check_name(name: str) -> str | None:
    try:
        parse_server_name(name)
    except InvalidServerName as e:
        return str(e)
    return None


def _target_line(target: Target) -> str:
    addresses = ", ".join(target.addresses) or "no usable address"
    host = f"[{target.host}]" if ":" in target.host else target.host
    return (
        f"{host}:{target.port} ({addresses})  Host: {target.host_header}"
        f"  TLS name: {target.tls_server_name}  [{target.source}]"
    )


def _row(out: TextIO, label: str, value: str) -> None:
    out.write(f"{label:<{LABEL_WIDTH}}{value}\n")


def format_resolution(resolution: Resolution, out: TextIO) -> None:
    """The human report of a resolution: the failing step first."""
    if resolution.error is not None:
        _row(out, "FAILED", f"[{resolution.failed_step}] {resolution.error}")
    _row(out, "server name", resolution.server_name)
    wk = resolution.well_known
    if wk is not None:
        outcome = f"m.server {wk.m_server}" if wk.m_server else f"no delegation: {wk.error}"
        status = "" if wk.status is None else f"HTTP {wk.status}, "
        _row(out, "well-known", f"{wk.url}: {status}{outcome} (cached {round(wk.cache_seconds)} s)")
    if resolution.delegated_server_name:
        _row(out, "delegated", resolution.delegated_server_name)
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
        _row(out, "SRV", f"{lookup.name}: {text}")
    for address_lookup in resolution.address_lookups:
        if address_lookup.blocked:
            _row(out, "blocked", f"{address_lookup.host}: {', '.join(address_lookup.blocked)}")
        elif address_lookup.error:
            _row(out, "addresses", address_lookup.error)
    if resolution.steps:
        _row(out, "steps", ", ".join(resolution.steps))
    for i, target in enumerate(resolution.targets, start=1):
        _row(out, f"target {i}", _target_line(target))


def _run_with_client(
    args: argparse.Namespace,
    command: str,
    work: Callable[[FederationContext], Coroutine[Any, Any, int]],
) -> int:
    """Validate NAME, build the federation client from the options, run ``work`` with it."""
    from stubserver.cli.main import federation_from_args  # noqa: PLC0415
    from stubserver.client.build import build_federation_client  # noqa: PLC0415

    _config, settings = federation_from_args(args)
    problem = _check_name(args.name)
    if problem is not None:
        print(f"stubserver {command}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    start_warning_logging(sys.stderr)

    async def body(reactor: Any) -> int:
        try:
            context = build_federation_client(reactor, settings)
        except CaFileError as e:
            print(f"stubserver {command}: {e}", file=sys.stderr)
            return EXIT_USAGE
        return await work(context)

    return react_main(body)


def resolve_main(args: argparse.Namespace) -> int:
    """``stubserver resolve NAME [--json]``."""

    async def work(context: FederationContext) -> int:
        resolution = await context.resolver.resolve(args.name)
        if args.json:
            sys.stdout.write(json.dumps(resolution.to_json()) + "\n")
        else:
            format_resolution(resolution, sys.stdout)
        return EXIT_OK if resolution.error is None else EXIT_FAILED

    return _run_with_client(args, "resolve", work)


def _format_ts(ts: int | None) -> str:
    if ts is None:
        return "missing"
    when = datetime.datetime.fromtimestamp(ts / 1000, datetime.UTC)
    return f"{when:%Y-%m-%d %H:%M:%S} UTC ({ts})"


def keys_main(args: argparse.Namespace) -> int:
    """``stubserver keys NAME [--json]``."""

    async def work(context: FederationContext) -> int:
        report = await context.key_fetcher.fetch_report(args.name)
        out = sys.stdout
        if args.json:
            out.write(json.dumps(report.to_json()) + "\n")
        else:
            if report.error is not None:
                _row(out, "FAILED", report.error)
            _row(out, "server name", report.server_name)
            if report.target is not None:
                _row(out, "target", _target_line(report.target))
            if report.status is not None:
                _row(out, "status", f"HTTP {report.status}")
            if report.response is not None:
                _row(out, "valid until", _format_ts(report.check.valid_until_ts))
                _row(out, "signature", "ok" if report.check.signature_ok else "NOT verified")
                for key_id, key in report.check.verify_keys_base64.items():
                    _row(out, "key", f"{key_id}  {key}")
                for key_id, entry in report.check.old_verify_keys_json.items():
                    _row(
                        out,
                        "old key",
                        f"{key_id}  {entry.get('key')}  expired {entry.get('expired_ts')}",
                    )
        return EXIT_OK if report.ok else EXIT_FAILED

    return _run_with_client(args, "keys", work)
