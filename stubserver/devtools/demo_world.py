"""The demo's world: the trio of servers, its DNS zone, its private CA, and the config,
signing key and certificate of each server, all written under one folder.

The trio (all on loopback, ports above 1024, no root):

* ``alpha.demo``: found directly: no .well-known, no SRV, so the default port.
* ``beta.demo``: delegated by ``/.well-known/matrix/server`` to ``beta-fed.demo:8449``.
* ``gamma.demo``: delegated by a ``_matrix-fed._tcp`` SRV record to ``gamma-srv.demo:8450``;
  its certificate names ``gamma.demo``, never the SRV target, as the spec demands.

Every server trusts the demo's CA and uses the demo's DNS server; TLS is verified.
The private-federation settings ``federation_well_known_port`` and
``federation_default_port`` stand in for 443 and 8448 so that no root is needed.

Each server also has a ``control`` listener (plain HTTP, on its own loopback address,
port :data:`CONTROL_PORT`) guarded by a random ``control_token`` kept in
``<slug>.control_token`` (mode 0600, made once, so a restart keeps it); the configs,
which carry the token, are written 0600 too. The demo's room and ``stubserver room ...
-c demo/run/<slug>.yaml`` go through it.

Every address is a host number in one /24 of loopback, ``127.0.0.0/24`` unless the folder
was made for another (``--network``, recorded in ``<folder>/network`` at the first start and
kept for the folder's life): so a second demo, the test suite's, runs beside the user's
without sharing an address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stubserver.signing.keys import ServerSigningKey
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca

#: The /24 of loopback the demo listens in unless its folder was made for another.
DEFAULT_NETWORK = ipaddress.IPv4Network("127.0.0.0/24")
#: All of the demo's networks lie in IPv4 loopback (its servers allow only it).
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
#: The demo's DNS server: a host number of its own in the network, an unprivileged port.
DNS_HOST = 53
DNS_PORT = 5353
#: Stand-ins for the spec's 443 (.well-known) and 8448 (federation default) ports.
WELL_KNOWN_PORT = 8443
DEFAULT_PORT = 8448
#: How often the demo polls for a file or a log line, in seconds.
POLL_INTERVAL_SECONDS = 0.02
#: TTL of every record in the demo zone, in seconds.
ZONE_TTL_SECONDS = 300
#: The control API's port (plain HTTP), on each server's own federation address.
CONTROL_PORT = 8009
#: Random bytes in a control token.
CONTROL_TOKEN_BYTES = 24
#: The file in the demo's folder that names the network the folder was made for.
NETWORK_FILE = "network"


@dataclass(frozen=True)
class DemoServer:
    """One server of the trio and how it is found."""

    server_name: str
    method: str  # "direct", "well-known" or "srv": how others find it
    fed_host: str  # the host name the federation listener's address is published under
    fed_address: str
    fed_port: int
    tls_names: tuple[str, ...]  # names on the federation listener's certificate
    wellknown_address: str | None = None  # where the .well-known listener binds
    wellknown_value: str | None = None  # the m.server it publishes

    @property
    def slug(self) -> str:
        """A file-name-safe short name (``alpha``)."""
        return self.server_name.split(".")[0]


def parse_network(text: str) -> ipaddress.IPv4Network:
    """A demo network: a /24 inside 127.0.0.0/8 (``127.0.40.0/24``); ValueError says why not."""
    text = text.strip()
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a network such as 127.0.40.0/24") from None
    if not (
        isinstance(network, ipaddress.IPv4Network)
        and network.prefixlen == 24
        and network.subnet_of(LOOPBACK)
    ):
        raise ValueError(f"{text!r} is not a /24 inside {LOOPBACK}")
    return network


def _host(network: ipaddress.IPv4Network, number: int) -> str:
    return str(network.network_address + number)


def dns_address(network: ipaddress.IPv4Network = DEFAULT_NETWORK) -> str:
    """Where the demo's DNS server listens in ``network`` (``127.0.0.53``)."""
    return _host(network, DNS_HOST)


def trio(network: ipaddress.IPv4Network = DEFAULT_NETWORK) -> tuple[DemoServer, ...]:
    """The three servers, their listeners at fixed host numbers of ``network``."""
    return (
        DemoServer(
            server_name="alpha.demo",
            method="direct",
            fed_host="alpha.demo",
            fed_address=_host(network, 11),
            fed_port=DEFAULT_PORT,
            tls_names=("alpha.demo",),
        ),
        DemoServer(
            server_name="beta.demo",
            method="well-known",
            fed_host="beta-fed.demo",
            fed_address=_host(network, 22),
            fed_port=8449,
            tls_names=("beta-fed.demo",),
            wellknown_address=_host(network, 12),
            wellknown_value="beta-fed.demo:8449",
        ),
        DemoServer(
            server_name="gamma.demo",
            method="srv",
            fed_host="gamma-srv.demo",
            fed_address=_host(network, 23),
            fed_port=8450,
            tls_names=("gamma.demo",),
        ),
    )


#: The trio in the default network (the one README.md's table shows).
TRIO = trio()
#: The DNS server's address in the default network.
DNS_ADDRESS = dns_address()


def recorded_network(run_dir: Path) -> ipaddress.IPv4Network | None:
    """The network ``run_dir`` was made for: the one its ``network`` file names, the default
    for a folder made before there was a choice (files but no record), None for a new one."""
    path = run_dir / NETWORK_FILE
    if path.exists():
        return parse_network(path.read_text())
    if (run_dir / "zone.json").exists():
        return DEFAULT_NETWORK
    return None


def demo_zone(servers: Iterable[DemoServer]) -> list[dict[str, Any]]:
    """The DNS records that make each server findable the way its ``method`` says."""
    records: list[dict[str, Any]] = []
    for s in servers:
        if s.method == "srv":
            records.append(
                {
                    "name": f"_matrix-fed._tcp.{s.server_name}",
                    "type": "SRV",
                    "priority": 10,
                    "weight": 5,
                    "port": s.fed_port,
                    "target": s.fed_host,
                    "ttl": ZONE_TTL_SECONDS,
                }
            )
        if s.wellknown_address is not None:
            records.append(
                {
                    "name": s.server_name,
                    "type": "A",
                    "value": s.wellknown_address,
                    "ttl": ZONE_TTL_SECONDS,
                }
            )
        records.append(
            {"name": s.fed_host, "type": "A", "value": s.fed_address, "ttl": ZONE_TTL_SECONDS}
        )
    return records


def server_config(
    s: DemoServer, run_dir: Path, control_token: str, dns: str = DNS_ADDRESS
) -> dict[str, Any]:
    """The YAML config (as a mapping) of one demo server; paths relative to ``run_dir``;
    ``dns`` is the address of the demo's DNS server."""
    listeners: list[dict[str, Any]] = [
        {
            "port": s.fed_port,
            "bind_addresses": [s.fed_address],
            "resources": ["federation"],
            "tls_certificate_path": f"{s.slug}.fed.crt",
            "tls_private_key_path": f"{s.slug}.fed.key",
        },
        {"port": CONTROL_PORT, "bind_addresses": [s.fed_address], "resources": ["control"]},
    ]
    config: dict[str, Any] = {
        "server_name": s.server_name,
        "signing_key_path": f"{s.slug}.signing.key",
        "tls_certificate_path": f"{s.slug}.fed.crt",
        "tls_private_key_path": f"{s.slug}.fed.key",
        "listeners": listeners,
        "users": {"alice": {"displayname": f"Alice of {s.server_name}"}},
        "request_log_path": f"{s.slug}.requests.jsonl",
        "federation_verify_certificates": True,
        "federation_custom_ca_list": ["ca.crt"],
        "federation_dns_servers": [f"{dns}:{DNS_PORT}"],
        "ip_range_allowlist": ["127.0.0.0/8"],
        "federation_well_known_port": WELL_KNOWN_PORT,
        "federation_default_port": DEFAULT_PORT,
        "control_token": control_token,
    }
    if s.wellknown_address is not None:
        listeners.append(
            {
                "port": WELL_KNOWN_PORT,
                "bind_addresses": [s.wellknown_address],
                "resources": ["well_known"],
                "tls_certificate_path": f"{s.slug}.wk.crt",
                "tls_private_key_path": f"{s.slug}.wk.key",
            }
        )
        config["serve_server_wellknown"] = s.wellknown_value
    return config


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_pair(run_dir: Path, stem: str, pair: KeyPair) -> None:
    _write_public(run_dir / f"{stem}.crt", pair.cert_pem)
    _write_private(run_dir / f"{stem}.key", pair.key_pem)


def control_token(run_dir: Path, s: DemoServer) -> str:
    """``s``'s control token: the one in ``<slug>.control_token``, made (0600) when absent."""
    path = run_dir / f"{s.slug}.control_token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(CONTROL_TOKEN_BYTES)
    _write_private(path, f"{token}\n".encode())
    return token


def write_demo_files(run_dir: Path, network: ipaddress.IPv4Network = DEFAULT_NETWORK) -> None:
    """Make the CA, keys, certificates, zone and configs for the trio in ``network``, keeping
    any key or certificate that already exists, and record the network in the folder.

    Existing keys are never regenerated, so running start twice keeps identities stable.
    """
    import yaml  # noqa: PLC0415

    servers = trio(network)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_public(run_dir / NETWORK_FILE, f"{network}\n".encode())
    if (run_dir / "ca.crt").exists() and (run_dir / "ca.key").exists():
        ca = KeyPair((run_dir / "ca.crt").read_bytes(), (run_dir / "ca.key").read_bytes())
    else:
        ca = make_ca("stubserver demo CA")
        _write_pair(run_dir, "ca", ca)
    for s in servers:
        key_path = run_dir / f"{s.slug}.signing.key"
        if not key_path.exists():
            _write_private(key_path, ServerSigningKey.generate("a_demo").to_line().encode())
        if not (run_dir / f"{s.slug}.fed.crt").exists():
            _write_pair(run_dir, f"{s.slug}.fed", issue_cert(list(s.tls_names), ca))
        if s.wellknown_address is not None and not (run_dir / f"{s.slug}.wk.crt").exists():
            _write_pair(run_dir, f"{s.slug}.wk", issue_cert([s.server_name], ca))
        config = server_config(s, run_dir, control_token(run_dir, s), dns_address(network))
        _write_private(run_dir / f"{s.slug}.yaml", yaml.safe_dump(config, sort_keys=False).encode())
    _write_public(
        run_dir / "zone.json", json.dumps({"records": demo_zone(servers)}, indent=1).encode()
    )
