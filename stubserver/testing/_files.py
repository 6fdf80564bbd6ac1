"""What :meth:`stubserver.testing.Peer.start` writes: CA, keys, certificate and config.

Everything goes into one directory (the test's own): ``ca.crt``/``ca.key`` when a CA is
made here, and the files ``stubserver generate`` would write (``<name>.signing.key``,
``<name>.crt``, ``<name>.key``, ``<name>.yaml``), private keys with mode 0600, plus the
request log ``<name>.requests.jsonl``.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from stubserver.discovery.server_name import parse_server_name
from stubserver.signing.key_files import (
    CONTROL_TOKEN_BYTES,
    PRIVATE_MODE,
    PUBLIC_MODE,
    new_key_version,
    paths_for,
    write_atomically,
)
from stubserver.signing.keys import ServerSigningKey
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca, tls_names

#: Where the control listener binds: loopback only (DESIGN.md).
CONTROL_BIND: Final = "127.0.0.1"
#: The spec's federation port, bound when the server name carries none.
SPEC_FEDERATION_PORT: Final = 8448
CA_COMMON_NAME: Final = "stubserver.testing CA"


@dataclass(frozen=True)
class PeerFiles:
    """The files of one peer, and the values a test needs from them."""

    server_name: str
    config_path: Path
    request_log_path: Path
    ca_cert_path: Path
    control_token: str
    port: int


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on ``address`` now (bound to port 0, then released).

    For a server name that must carry its port before the peer starts; another process
    could take the port in between, which on a private loopback address is unlikely.
    """
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def choose_identity(server_name: str | None, bind: str, port: int | None) -> tuple[str, int]:
    """The server name and the federation port to bind.

    No name: the bind address and a free port (``127.0.0.1:40123``), reachable by anyone
    without DNS. A name with a port: that port. A name without one: ``port`` or 8448.
    """
    if server_name is None:
        chosen = port or free_port(bind)
        host = f"[{bind}]" if ipaddress.ip_address(bind).version == 6 else bind
        return f"{host}:{chosen}", chosen
    parsed = parse_server_name(server_name)
    if parsed.port is not None:
        if port not in (None, parsed.port):
            raise ValueError(f"port {port} differs from the server name's {parsed.port}")
        return server_name, parsed.port
    return server_name, SPEC_FEDERATION_PORT if port is None else port


def load_or_make_ca(
    directory: Path, ca: tuple[str | Path, str | Path] | None
) -> tuple[KeyPair, Path]:
    """The CA issuing the peer's certificate and the path of its certificate.

    ``ca`` None makes one in-process and writes ``ca.crt``/``ca.key`` into ``directory``
    (kept when already there, so that peers started in one directory share it).
    """
    if ca is not None:
        cert_path, key_path = Path(ca[0]), Path(ca[1])
        return KeyPair(cert_path.read_bytes(), key_path.read_bytes()), cert_path.resolve()
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        return KeyPair(cert_path.read_bytes(), key_path.read_bytes()), cert_path.resolve()
    pair = make_ca(CA_COMMON_NAME)
    write_atomically(key_path, pair.key_pem, PRIVATE_MODE)
    write_atomically(cert_path, pair.cert_pem, PUBLIC_MODE)
    return pair, cert_path.resolve()


def write_peer_files(
    directory: Path,
    *,
    server_name: str,
    bind: str,
    port: int,
    ca: tuple[str | Path, str | Path] | None,
    dns_servers: Sequence[str],
    allow_ips: Sequence[str],
    ca_files: Sequence[str | Path],
    tls_name_list: Sequence[str],
    room_version: str | None,
    invites: str,
    users: Mapping[str, Mapping[str, Any]] | None,
    extra_config: Mapping[str, Any] | None,
) -> PeerFiles:
    """Write the CA (when made here), keys, certificate and config of one peer."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_pair, ca_cert_path = load_or_make_ca(directory, ca)
    paths = paths_for(directory, server_name)
    signing_key = ServerSigningKey.generate(new_key_version())
    tls = issue_cert(tls_names(server_name, tls_name_list), ca_pair)
    write_atomically(paths.signing_key, signing_key.to_line().encode("ascii"), PRIVATE_MODE)
    write_atomically(paths.private_key, tls.key_pem, PRIVATE_MODE)
    write_atomically(paths.certificate, tls.cert_pem, PUBLIC_MODE)
    request_log = paths.config.with_suffix(".requests.jsonl")
    token = secrets.token_urlsafe(CONTROL_TOKEN_BYTES)
    config: dict[str, Any] = {
        "server_name": server_name,
        "signing_key_path": paths.signing_key.name,
        "tls_certificate_path": paths.certificate.name,
        "tls_private_key_path": paths.private_key.name,
        "listeners": [
            {"port": port, "bind_addresses": [bind], "resources": ["federation"]},
            {"port": 0, "bind_addresses": [CONTROL_BIND], "resources": ["control"]},
        ],
        "control_token": token,
        "invites": invites,
        "request_log_path": request_log.name,
        "federation_custom_ca_list": [
            str(ca_cert_path),
            *(str(Path(f).resolve()) for f in ca_files),
        ],
    }
    if room_version is not None:
        config["default_room_version"] = room_version
    if dns_servers:
        config["federation_dns_servers"] = list(dns_servers)
    if allow_ips:
        config["ip_range_allowlist"] = list(allow_ips)
    if users:
        config["users"] = {name: dict(profile) for name, profile in users.items()}
    config.update(extra_config or {})
    write_atomically(
        paths.config, yaml.safe_dump(config, sort_keys=False).encode("utf-8"), PUBLIC_MODE
    )
    return PeerFiles(server_name, paths.config, request_log, ca_cert_path, token, port)
