"""``stubserver generate --count N --server-name 's{i}.test'``: the keys, certificates
(from one CA) and the one config of N servers served by one ``run`` (issue 23; the
module doc of ``stubserver.cli.generate`` says what is written)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stubserver.cli.generate import (
    EXIT_OK,
    EXIT_USAGE,
    config_document,
    expand,
    load_ca,
)
from stubserver.cli.generate_delegation import (
    DIRECT,
    MIXED,
    WELL_KNOWN,
    Placement,
    delegated_template,
    method_of,
    placement,
    zone_records,
)
from stubserver.config import SPEC_FEDERATION_PORT, SPEC_WELL_KNOWN_PORT, ConfigError
from stubserver.signing.key_files import (
    PRIVATE_MODE,
    PUBLIC_MODE,
    GeneratedPaths,
    new_key_version,
    paths_for,
    write_atomically,
)
from stubserver.signing.keys import ServerSigningKey
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca, tls_names

#: The common name of the CA ``generate --count`` makes when given none.
CA_COMMON_NAME = "stubserver generate CA"


def generate_many(args: argparse.Namespace) -> int:
    """Write the files of ``args.count`` servers (arguments already validated)."""
    directory: Path = args.dir
    template: str = args.server_name
    indexes = range(args.start, args.start + args.count)
    names = [expand(template, i) for i in indexes]
    every_paths = [paths_for(directory, name) for name in names]
    made_ca = args.ca_cert is None
    ca_cert_path = directory / "ca.crt" if made_ca else args.ca_cert
    wanted = [p for paths in every_paths for p in paths.all()]
    if made_ca:
        wanted += [directory / "ca.crt", directory / "ca.key"]
    if args.zone_file is not None:
        wanted.append(args.zone_file)
    if not args.force:
        for path in wanted:
            if path.exists():
                print(
                    f"stubserver: {path} already exists; pass --force to replace it",
                    file=sys.stderr,
                )
                return EXIT_USAGE
    ca = make_ca(CA_COMMON_NAME) if made_ca else load_ca(args.ca_cert, args.ca_key)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--dir", f"cannot create {directory}: {e.strerror}") from None
    if args.delegation is not None or args.zone_file is not None:
        return _generate_delegated(
            args, indexes=indexes, names=names, every_paths=every_paths, ca=ca, ca_cert=ca_cert_path
        )
    wellknown = args.serve_wellknown
    config = config_document(
        names[0],
        every_paths[0],
        port=args.port,
        bind=args.bind,
        serve_wellknown=None if wellknown is None else expand(wellknown, args.start),
        ca_cert=ca_cert_path,
        control_port=args.control_port,
    )
    if args.count > 1:
        entry = _generator_entry(args, directory, template)
        if wellknown is not None:
            entry["serve_server_wellknown"] = wellknown
        config["servers"] = [entry]
    placements = [
        placement(name, DIRECT, port=args.port, requested_tls_names=_requested(args, index))
        for index, name in zip(indexes, names, strict=True)
    ]
    return _write_all(
        args,
        ca=ca,
        made_ca=made_ca,
        every_paths=every_paths,
        placements=placements,
        config=config,
        zone=None,
    )


def _generator_entry(args: argparse.Namespace, directory: Path, template: str) -> dict[str, Any]:
    """The ``servers:`` entry that generates every server after the primary."""
    files = paths_for(directory, template)
    return {
        "server_name": template,
        "count": args.count - 1,
        "start": args.start + 1,
        "signing_key_path": files.signing_key.name,
        "tls_certificate_path": files.certificate.name,
        "tls_private_key_path": files.private_key.name,
    }


def _requested(args: argparse.Namespace, index: int) -> list[str]:
    return [expand(t, index) for t in args.tls_name]


def _generate_delegated(
    args: argparse.Namespace,
    *,
    indexes: range,
    names: list[str],
    every_paths: list[GeneratedPaths],
    ca: KeyPair,
    ca_cert: Path,
) -> int:
    """``--delegation`` (default ``direct`` with ``--zone-file``): the config serves each
    server the way its method says (``stubserver.cli.generate_delegation``), and the zone
    is written when asked for."""
    delegation = args.delegation or DIRECT
    wellknown: str | None = args.serve_wellknown
    placements = [
        placement(
            name,
            method_of(delegation, position),
            port=args.port,
            wellknown=None if wellknown is None else expand(wellknown, index),
            requested_tls_names=_requested(args, index),
        )
        for position, (index, name) in enumerate(zip(indexes, names, strict=True))
    ]
    config = config_document(
        names[0],
        every_paths[0],
        port=args.port,
        bind=args.bind,
        serve_wellknown=None,
        ca_cert=ca_cert,
        control_port=args.control_port,
    )
    if placements[0].wellknown is not None:
        config["serve_server_wellknown"] = placements[0].wellknown
    if any(p.method == WELL_KNOWN for p in placements):
        listeners: list[dict[str, Any]] = config["listeners"]
        if args.well_known_port == args.port:
            listeners[0]["resources"].append("well_known")
        else:
            listeners.insert(
                1,
                {
                    "port": args.well_known_port,
                    "bind_addresses": [args.bind],
                    "resources": ["well_known"],
                },
            )
    # The servers of the set find each other where this config serves them.
    if args.well_known_port != SPEC_WELL_KNOWN_PORT:
        config["federation_well_known_port"] = args.well_known_port
    if args.port != SPEC_FEDERATION_PORT:
        config["federation_default_port"] = args.port
    if len(names) > 1:
        if delegation == MIXED:
            # A generator entry cannot alternate methods: one entry per server.
            config["servers"] = [
                _entry(p, paths) for p, paths in zip(placements[1:], every_paths[1:], strict=True)
            ]
        else:
            entry = _generator_entry(args, args.dir, args.server_name)
            if delegation == WELL_KNOWN:
                entry["serve_server_wellknown"] = wellknown or delegated_template(
                    args.server_name, args.port
                )
            config["servers"] = [entry]
    zone = None
    if args.zone_file is not None:
        zone = {"records": zone_records(placements, args.bind, args.port)}
    return _write_all(
        args,
        ca=ca,
        made_ca=args.ca_cert is None,
        every_paths=every_paths,
        placements=placements,
        config=config,
        zone=zone,
    )


def _entry(p: Placement, paths: GeneratedPaths) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "server_name": p.server_name,
        "signing_key_path": paths.signing_key.name,
        "tls_certificate_path": paths.certificate.name,
        "tls_private_key_path": paths.private_key.name,
    }
    if p.wellknown is not None:
        entry["serve_server_wellknown"] = p.wellknown
    return entry


def _write_all(
    args: argparse.Namespace,
    *,
    ca: KeyPair,
    made_ca: bool,
    every_paths: list[GeneratedPaths],
    placements: list[Placement],
    config: dict[str, Any],
    zone: dict[str, Any] | None,
) -> int:
    """Write the CA (when made here), every server's key and certificate, the config and
    the zone (when given); print the config's path."""
    import yaml  # noqa: PLC0415 - only this command writes YAML

    directory: Path = args.dir
    try:
        if made_ca:
            write_atomically(directory / "ca.key", ca.key_pem, PRIVATE_MODE)
            write_atomically(directory / "ca.crt", ca.cert_pem, PUBLIC_MODE)
        for p, paths in zip(placements, every_paths, strict=True):
            _write_server(p.server_name, paths, ca, list(p.tls_names))
        write_atomically(
            every_paths[0].config,
            yaml.safe_dump(config, sort_keys=False, default_flow_style=None).encode("utf-8"),
            PUBLIC_MODE,
        )
    except OSError as e:
        raise ConfigError("--dir", f"cannot write into {directory}: {e.strerror}") from None
    if zone is not None:
        try:
            write_atomically(args.zone_file, json.dumps(zone, indent=1).encode(), PUBLIC_MODE)
        except OSError as e:
            raise ConfigError(
                "--zone-file", f"cannot write {args.zone_file}: {e.strerror}"
            ) from None
    print(every_paths[0].config)
    return EXIT_OK


def _write_server(
    name: str, paths: GeneratedPaths, ca: KeyPair, requested_names: list[str]
) -> None:
    signing_key = ServerSigningKey.generate(new_key_version())
    tls = issue_cert(tls_names(name, requested_names), ca)
    write_atomically(paths.signing_key, signing_key.to_line().encode("ascii"), PRIVATE_MODE)
    write_atomically(paths.private_key, tls.key_pem, PRIVATE_MODE)
    write_atomically(paths.certificate, tls.cert_pem, PUBLIC_MODE)
