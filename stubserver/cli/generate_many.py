"""``stubserver generate --count N --server-name 's{i}.test'``: the keys, certificates
(from one CA) and the one config of N servers served by one ``run`` (issue 23; the
module doc of ``stubserver.cli.generate`` says what is written)."""

from __future__ import annotations

import argparse
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
from stubserver.config import ConfigError
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
    import yaml  # noqa: PLC0415 - only this command writes YAML

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
        files = paths_for(directory, template)
        entry: dict[str, Any] = {
            "server_name": template,
            "count": args.count - 1,
            "start": args.start + 1,
            "signing_key_path": files.signing_key.name,
            "tls_certificate_path": files.certificate.name,
            "tls_private_key_path": files.private_key.name,
        }
        if wellknown is not None:
            entry["serve_server_wellknown"] = wellknown
        config["servers"] = [entry]
    try:
        if made_ca:
            write_atomically(directory / "ca.key", ca.key_pem, PRIVATE_MODE)
            write_atomically(directory / "ca.crt", ca.cert_pem, PUBLIC_MODE)
        for index, name, paths in zip(indexes, names, every_paths, strict=True):
            requested = [expand(t, index) for t in args.tls_name]
            _write_server(name, paths, ca, requested)
        write_atomically(
            every_paths[0].config,
            yaml.safe_dump(config, sort_keys=False, default_flow_style=None).encode("utf-8"),
            PUBLIC_MODE,
        )
    except OSError as e:
        raise ConfigError("--dir", f"cannot write into {directory}: {e.strerror}") from None
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
