"""The command line (contract: ../shared/DESIGN.md, "Command line").

This module only parses arguments and dispatches; each command lives in its own module,
imported when chosen so that start-up pays only for what the command uses. Exit status:
0 success, 1 the federation operation failed, 2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from stubserver.cli.generate_delegation import DELEGATIONS
from stubserver.config import (
    DNS_PORT,
    SPEC_WELL_KNOWN_PORT,
    Config,
    ConfigError,
    FederationSettings,
    load_config,
    parse_cidr,
    parse_host_port,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: command name -> "module:function" implementing it; the function takes the parsed
#: arguments and returns the exit status.
COMMANDS = {
    "generate": "stubserver.cli.generate:main",
    "run": "stubserver.cli.run:main",
    "resolve": "stubserver.cli.resolve:main",
    "keys": "stubserver.cli.keys:main",
    "request": "stubserver.cli.request:main",
    "check": "stubserver.cli.check:main",
    "room": "stubserver.cli.room:main",
    "conformance": "stubserver.cli.conformance:main",
}


def _add_federation_options(p: argparse.ArgumentParser, *, config_required: bool = False) -> None:
    g = p.add_argument_group("federation options")
    g.add_argument(
        "-c",
        "--config",
        type=Path,
        required=config_required,
        help="config file: our identity and federation settings",
    )
    g.add_argument(
        "--dns-server",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="send DNS lookups to this server (repeatable)",
    )
    g.add_argument(
        "--ca-file",
        action="append",
        default=[],
        type=Path,
        metavar="PEM",
        help="trust this CA in addition to the system store (repeatable)",
    )
    g.add_argument(
        "--no-verify-certificates",
        action="store_true",
        help="do not verify peers' TLS certificates (never the default)",
    )
    g.add_argument(
        "--allow-ip",
        action="append",
        default=[],
        metavar="CIDR",
        help="exception to the IP blocklist (repeatable)",
    )
    g.add_argument("--well-known-port", type=int, metavar="N", help="port for .well-known (443)")
    g.add_argument("--default-port", type=int, metavar="N", help="default federation port (8448)")


#: Commands whose arguments live with them, added only when chosen (their modules cost
#: start-up that ``run`` should not pay): name -> (module, help).
LAZY_PARSERS = {
    "room": ("stubserver.cli.room", "drive a running server's rooms (its control API)"),
    "conformance": (
        "stubserver.cli.conformance",
        "check a running homeserver's federation against the spec",
    ),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser for every command (``argv`` says which lazy ones to build)."""
    parser = argparse.ArgumentParser(
        prog="stubserver", description="A small, spec-exact Matrix federation peer."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write a config, signing key and TLS certificate")
    g.add_argument("--server-name", required=True, metavar="NAME")
    g.add_argument("--dir", type=Path, default=Path("keys"), metavar="DIR")
    g.add_argument("--port", type=int, default=8448, metavar="N")
    g.add_argument("--bind", default="127.0.0.1", metavar="ADDR")
    g.add_argument("--tls-name", action="append", default=[], metavar="HOST")
    g.add_argument("--ca-cert", type=Path, metavar="PEM")
    g.add_argument("--ca-key", type=Path, metavar="PEM")
    g.add_argument("--serve-wellknown", metavar="HOST[:PORT]")
    g.add_argument("--force", action="store_true", help="overwrite existing keys")
    g.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="N servers in one config: --server-name carries {i} (issue 23)",
    )
    g.add_argument("--start", type=int, default=1, metavar="I", help="the first {i} (default 1)")
    g.add_argument(
        "--control-port",
        type=int,
        default=8009,
        metavar="N",
        help="port of the control listener (on 127.0.0.1; default 8009)",
    )
    g.add_argument(
        "--delegation",
        choices=DELEGATIONS,
        help="with --count: how the servers are found (direct A record, .well-known, SRV,"
        " or the three in turn: mixed)",
    )
    g.add_argument(
        "--zone-file",
        type=Path,
        metavar="FILE",
        help="with --count: write the DNS zone of their names (devtools DNS server's JSON)",
    )
    g.add_argument(
        "--well-known-port",
        type=int,
        default=SPEC_WELL_KNOWN_PORT,
        metavar="N",
        help="with --delegation: the port of the .well-known listener (default 443)",
    )

    r = sub.add_parser("run", help="serve until SIGINT or SIGTERM")
    r.add_argument("-c", "--config", type=Path, required=True)
    r.add_argument(
        "--verbose",
        action="store_true",
        help="log everything, Twisted's own lines included (as log_level: debug)",
    )

    for name, text in (("resolve", "resolve a server name"), ("keys", "fetch and verify keys")):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("--json", action="store_true")
        _add_federation_options(p)

    q = sub.add_parser("request", help="send one signed federation request")
    q.add_argument("name", metavar="NAME")
    q.add_argument("path", metavar="PATH")
    q.add_argument("-X", "--method", default=None, metavar="METHOD")
    q.add_argument("-d", "--data", default=None, metavar="JSON")
    q.add_argument("--json", action="store_true")
    _add_federation_options(q, config_required=True)

    k = sub.add_parser("check", help="explain why federation with NAME works or fails")
    k.add_argument("name", metavar="NAME")
    k.add_argument("--json", action="store_true")
    k.add_argument("--format", choices=("text", "json", "tap"), default=None)
    k.add_argument("--client", action="store_true", help="also check client discovery")
    _add_federation_options(k)

    args = list(sys.argv[1:] if argv is None else argv)
    chosen = args[0] if args else None  # the command comes first (no global options)
    for name, (module, text) in LAZY_PARSERS.items():
        if name == chosen:
            getattr(importlib.import_module(module), f"add_{name}_parser")(sub)
        else:
            sub.add_parser(name, help=text)
    return parser


def federation_from_args(args: argparse.Namespace) -> tuple[Config | None, FederationSettings]:
    """The config named by ``-c`` (if any) and its federation settings with flags applied."""
    config = load_config(args.config) if args.config is not None else None
    settings = config.federation if config is not None else FederationSettings()
    changes: dict[str, object] = {}
    if args.dns_server:
        changes["dns_servers"] = tuple(
            parse_host_port("--dns-server", s, DNS_PORT) for s in args.dns_server
        )
    if args.ca_file:
        changes["ca_files"] = settings.ca_files + tuple(args.ca_file)
    if args.no_verify_certificates:
        changes["verify_certificates"] = False
    if args.allow_ip:
        changes["ip_range_allowlist"] = settings.ip_range_allowlist + tuple(
            parse_cidr("--allow-ip", c) for c in args.allow_ip
        )
    for flag, attr in (("well_known_port", "well_known_port"), ("default_port", "default_port")):
        value = getattr(args, flag)
        if value is not None:
            if not 0 < value < 65536:
                raise ConfigError(f"--{flag.replace('_', '-')}", f"port {value} is out of range")
            changes[attr] = value
    return config, dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stubserver`` console script."""
    args = build_parser(argv).parse_args(argv)
    module_name, func_name = COMMANDS[args.command].split(":")
    command = getattr(importlib.import_module(module_name), func_name)
    try:
        status: int = command(args)
    except ConfigError as e:
        print(f"stubserver: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return status
