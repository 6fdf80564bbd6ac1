"""``stubserver generate``: write a signing key, a TLS certificate and key, and a config.

Files in DIR (default ``keys/``), named after the server name with ``:`` and brackets
made file-name safe: ``<name>.signing.key`` (Synapse's format, mode 0600), ``<name>.crt``,
``<name>.key`` (mode 0600) and ``<name>.yaml``. Existing files are never replaced
without ``--force``. Every file is written to a temporary file first and renamed into
place, so a crash never leaves half a key.

With ``--count N`` (issue 23), ``--server-name`` carries ``{i}`` (``s{i}.test``): servers
``--start`` (default 1) to ``--start + N - 1``, each with its key and certificate, in one
config named after the first (the primary) whose ``servers:`` is a generator entry for
the others. Their certificates come from one CA: ``--ca-cert``/``--ca-key``, else one
made here and written as ``ca.crt``/``ca.key`` (mode 0600), which the config trusts.
``{i}`` in ``--serve-wellknown`` (required there with ``--count``) and ``--tls-name`` is
expanded per server too. ``--delegation direct|well_known|srv|mixed`` (with ``--count``)
serves each server the way it is to be found and ``--zone-file`` writes the DNS zone that
finds it (``stubserver.cli.generate_delegation``).
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import sys
from pathlib import Path
from typing import Any

from stubserver.cli.generate_delegation import MIXED, WELL_KNOWN
from stubserver.config import DEFAULT_ROOM_VERSION, MAX_PORT, ConfigError
from stubserver.config.servers import INDEX_MARK, MAX_SERVERS
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.signing.key_files import (
    CONTROL_TOKEN_BYTES,
    PRIVATE_MODE,
    PUBLIC_MODE,
    GeneratedPaths,
    new_key_version,
    paths_for,
    write_atomically,
)
from stubserver.signing.keys import ServerSigningKey
from stubserver.tls.certificates import KeyPair, issue_cert, tls_names

EXIT_OK = 0
EXIT_USAGE = 2
#: DESIGN.md's control port, and where the control listener binds: loopback only.
DEFAULT_CONTROL_PORT = 8009
CONTROL_BIND_ADDRESS = "127.0.0.1"


def config_document(
    server_name: str,
    paths: GeneratedPaths,
    *,
    port: int,
    bind: str,
    serve_wellknown: str | None,
    ca_cert: Path | None,
    control_port: int = DEFAULT_CONTROL_PORT,
    control_token: str | None = None,
) -> dict[str, Any]:
    """The config ``generate`` writes (file names relative to the config's folder).

    It has a control listener on loopback and a control_token (a new random one unless
    given), and the room settings with their defaults written out, so that an admin sees
    them.
    """
    resources = ["federation"]
    if serve_wellknown is not None:
        resources.append("well_known")
    doc: dict[str, Any] = {
        "server_name": server_name,
        "signing_key_path": paths.signing_key.name,
        "tls_certificate_path": paths.certificate.name,
        "tls_private_key_path": paths.private_key.name,
        "listeners": [
            {"port": port, "bind_addresses": [bind], "resources": resources},
            {
                "port": control_port,
                "bind_addresses": [CONTROL_BIND_ADDRESS],
                "resources": ["control"],
            },
        ],
        "control_token": control_token
        if control_token is not None
        else secrets.token_urlsafe(CONTROL_TOKEN_BYTES),
        "default_room_version": DEFAULT_ROOM_VERSION,
        "invites": "accept",
    }
    if serve_wellknown is not None:
        doc["serve_server_wellknown"] = serve_wellknown
    if ca_cert is not None:
        # Peers issued by the same private CA are trusted for outbound federation.
        doc["federation_custom_ca_list"] = [str(ca_cert.resolve())]
    return doc


def expand(text: str, index: int) -> str:
    return text.replace(INDEX_MARK, str(index))


def _validate_count(args: argparse.Namespace) -> None:
    """``--count`` and ``--start`` against ``{i}`` in the names."""
    count: int | None = args.count
    if count is None:
        if INDEX_MARK in args.server_name:
            raise ConfigError("--count", f"required when --server-name contains {INDEX_MARK}")
        return
    if not 1 <= count <= MAX_SERVERS:
        raise ConfigError("--count", f"expected 1 to {MAX_SERVERS}, got {count}")
    if args.start < 0:
        raise ConfigError("--start", f"expected 0 or more, got {args.start}")
    for flag, value in (
        ("--server-name", args.server_name),
        ("--serve-wellknown", args.serve_wellknown),
    ):
        if value is not None and INDEX_MARK not in value:
            raise ConfigError(flag, f"must contain {INDEX_MARK} with --count")


def _validate_delegation(args: argparse.Namespace) -> None:
    """``--delegation``, ``--zone-file`` and ``--well-known-port`` (issue 23)."""
    if args.delegation is None and args.zone_file is None:
        return
    flag = "--delegation" if args.delegation is not None else "--zone-file"
    if args.count is None:
        raise ConfigError(flag, "goes with --count")
    name = parse_server_name(expand(args.server_name, args.start))
    if name.port is not None or name.is_ip_literal:
        raise ConfigError(
            "--server-name",
            "a name with a port or an IP address is found without DNS: no delegation",
        )
    if args.serve_wellknown is not None and args.delegation not in (WELL_KNOWN, MIXED):
        raise ConfigError("--serve-wellknown", "goes with --delegation well_known or mixed")
    if args.port == 0:
        raise ConfigError("--port", "the zone and the delegations need the port: not 0")
    if not 1 <= args.well_known_port <= MAX_PORT:
        raise ConfigError(
            "--well-known-port", f"port {args.well_known_port} is out of range (1-{MAX_PORT})"
        )
    if args.zone_file is not None and ipaddress.ip_address(args.bind).is_unspecified:
        raise ConfigError("--bind", "the zone's records need the one address the servers use")


def _validate(args: argparse.Namespace) -> None:
    _validate_count(args)
    try:
        parse_server_name(expand(args.server_name, args.start))
    except InvalidServerName as e:
        raise ConfigError("--server-name", str(e)) from None
    if not 0 <= args.port <= MAX_PORT:
        raise ConfigError("--port", f"port {args.port} is out of range (0-{MAX_PORT})")
    if not 0 <= args.control_port <= MAX_PORT:
        raise ConfigError(
            "--control-port", f"port {args.control_port} is out of range (0-{MAX_PORT})"
        )
    try:
        ipaddress.ip_address(args.bind)
    except ValueError:
        raise ConfigError("--bind", f"{args.bind!r} is not an IP address") from None
    if (args.ca_cert is None) != (args.ca_key is None):
        raise ConfigError("--ca-cert", "--ca-cert and --ca-key go together")
    if args.serve_wellknown is not None:
        try:
            parse_server_name(expand(args.serve_wellknown, args.start))
        except InvalidServerName as e:
            raise ConfigError("--serve-wellknown", str(e)) from None
    _validate_delegation(args)


def load_ca(cert_path: Path, key_path: Path) -> KeyPair:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    pems = []
    for flag, path in (("--ca-cert", cert_path), ("--ca-key", key_path)):
        try:
            pems.append(path.read_bytes())
        except OSError as e:
            raise ConfigError(flag, f"cannot read {path}: {e.strerror}") from None
    try:
        x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        raise ConfigError("--ca-cert", f"{cert_path} holds no PEM certificate") from None
    try:
        serialization.load_pem_private_key(pems[1], password=None)
    except (ValueError, TypeError):
        raise ConfigError("--ca-key", f"{key_path} holds no unencrypted PEM key") from None
    return KeyPair(cert_pem=pems[0], key_pem=pems[1])


def main(args: argparse.Namespace) -> int:
    """Entry point of ``stubserver generate``."""
    import yaml  # noqa: PLC0415 - only this command writes YAML

    _validate(args)
    if args.count is not None:
        from stubserver.cli.generate_many import generate_many  # noqa: PLC0415

        return generate_many(args)
    directory: Path = args.dir
    paths = paths_for(directory, args.server_name)
    if not args.force:
        for path in paths.all():
            if path.exists():
                print(
                    f"stubserver: {path} already exists; pass --force to replace it",
                    file=sys.stderr,
                )
                return EXIT_USAGE
    ca = load_ca(args.ca_cert, args.ca_key) if args.ca_cert is not None else None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--dir", f"cannot create {directory}: {e.strerror}") from None

    signing_key = ServerSigningKey.generate(new_key_version())
    tls = issue_cert(tls_names(args.server_name, args.tls_name), ca)
    config = config_document(
        args.server_name,
        paths,
        port=args.port,
        bind=args.bind,
        serve_wellknown=args.serve_wellknown,
        ca_cert=args.ca_cert,
        control_port=args.control_port,
    )
    try:
        write_atomically(paths.signing_key, signing_key.to_line().encode("ascii"), PRIVATE_MODE)
        write_atomically(paths.private_key, tls.key_pem, PRIVATE_MODE)
        write_atomically(paths.certificate, tls.cert_pem, PUBLIC_MODE)
        write_atomically(
            paths.config,
            yaml.safe_dump(config, sort_keys=False, default_flow_style=None).encode("utf-8"),
            PUBLIC_MODE,
        )
    except OSError as e:
        raise ConfigError("--dir", f"cannot write into {directory}: {e.strerror}") from None
    print(paths.config)
    return EXIT_OK
