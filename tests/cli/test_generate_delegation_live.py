"""End to end (issue 23): six servers of one ``stubserver run`` written by ``generate
--delegation mixed --zone-file``, found through our DNS server serving that zone, each by
its own method (direct A record, ``.well-known``, ``_matrix-fed._tcp`` SRV), with TLS
verified against the generated CA for the name the spec prescribes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from stubserver.cli.generate import main as generate_main
from stubserver.cli.main import build_parser
from stubserver.config import load_config
from stubserver.control.client import call, control_endpoint, for_server, http_transport
from stubserver.testing import free_port
from tests.support import (
    LOOPBACK_RANGE,
    StubProcess,
    dns_server_process,
    run_stubserver_cli,
    start_stubserver,
)

pytestmark = pytest.mark.integration

SERVERS_ADDRESS = "127.0.0.221"
DNS_LISTEN = "127.0.0.222:0"
COUNT = 6
NAMES = [f"s{i}.test" for i in range(1, COUNT + 1)]


@dataclass(frozen=True)
class MixedSet:
    """The running set: its folder, config, DNS server and ports."""

    folder: Path
    config_path: Path
    dns: str
    port: int
    well_known_port: int
    process: StubProcess


def _two_ports(address: str) -> tuple[int, int]:
    first = free_port(address)
    second = free_port(address)
    while second == first:
        second = free_port(address)
    return first, second


@pytest.fixture(scope="module")
def mixed_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedSet]:
    """``generate --count 6 --delegation mixed --zone-file``; the DNS server on the zone it
    wrote; the config's servers told to resolve with it and dial loopback (what a test of
    one's own adds); ``stubserver run`` on it."""
    folder = tmp_path_factory.mktemp("mixed")
    port, well_known_port = _two_ports(SERVERS_ADDRESS)
    zone_path = folder / "zone.json"
    args = build_parser().parse_args(
        [
            *("generate", "--dir", str(folder), "--count", str(COUNT)),
            *("--server-name", "s{i}.test", "--bind", SERVERS_ADDRESS, "--port", str(port)),
            *("--well-known-port", str(well_known_port), "--delegation", "mixed"),
            *("--zone-file", str(zone_path), "--control-port", str(free_port())),
        ]
    )
    assert generate_main(args) == 0
    records = json.loads(zone_path.read_text())["records"]
    with dns_server_process(tmp_path_factory.mktemp("dns"), records, DNS_LISTEN) as dns:
        config_path = folder / "s1.test.yaml"
        config = yaml.safe_load(config_path.read_text())
        config["federation_dns_servers"] = [dns]
        config["ip_range_allowlist"] = [LOOPBACK_RANGE]
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        with start_stubserver(config_path) as process:
            yield MixedSet(folder, config_path, dns, port, well_known_port, process)


def keys_of(mixed: MixedSet, name: str) -> dict[str, Any]:
    """``stubserver keys NAME --json`` through the set's DNS server, trusting its CA only."""
    done = run_stubserver_cli(
        *("keys", name, "--json", "--dns-server", mixed.dns),
        *("--ca-file", str(mixed.folder / "ca.crt"), "--allow-ip", LOOPBACK_RANGE),
        *("--well-known-port", str(mixed.well_known_port)),
        *("--default-port", str(mixed.port)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def test_each_server_is_found_by_its_method_with_tls_for_the_right_name(
    mixed_set: MixedSet,
) -> None:
    """Our resolver reaches s1 and s4 directly (default port, their names), s2 and s5
    through their ``.well-known`` (the delegated ``sN-fed.test:PORT``, TLS for that host),
    s3 and s6 through SRV (target ``sN-srv.test``, TLS and Host for the server name); each
    answers with its own, self-signed keys."""
    port = mixed_set.port
    expected = {
        "s1.test": ("default_port", "s1.test", "s1.test", "s1.test"),
        "s2.test": ("explicit_port", "s2-fed.test", f"s2-fed.test:{port}", "s2-fed.test"),
        "s3.test": ("srv", "s3-srv.test", "s3.test", "s3.test"),
        "s4.test": ("default_port", "s4.test", "s4.test", "s4.test"),
        "s5.test": ("explicit_port", "s5-fed.test", f"s5-fed.test:{port}", "s5-fed.test"),
        "s6.test": ("srv", "s6-srv.test", "s6.test", "s6.test"),
    }
    for name, (source, host, host_header, tls_name) in expected.items():
        answer = keys_of(mixed_set, name)
        target = answer["target"]
        seen = (target["source"], target["host"], target["host_header"], target["tls_server_name"])
        assert seen == (source, host, host_header, tls_name), name
        assert (target["port"], target["addresses"]) == (port, [SERVERS_ADDRESS])
        assert (answer["server_name"], answer["signature_ok"], answer["error"]) == (
            name,
            True,
            None,
        )


def test_every_server_reaches_the_next_with_a_signed_request_through_the_zone(
    mixed_set: MixedSet,
) -> None:
    """Each server sends a signed request to the next (s6 to s1), resolving it by its
    method through the DNS server; the receiver authenticates the sender (fetching its key
    the same way) and notes the request as its own."""
    transport = http_transport(control_endpoint(load_config(mixed_set.config_path)))
    path = "/_matrix/federation/v1/version"
    for sender, receiver in zip(NAMES, NAMES[1:] + NAMES[:1], strict=True):
        answer = call(
            for_server(transport, sender),
            "POST",
            "/federation/request",
            {"destination": receiver, "method": "GET", "path": path},
        )
        assert answer["status"] == 200, (sender, receiver, answer)
        feed = call(for_server(transport, receiver), "GET", "/requests?from=0")["requests"]
        mine = [r for r in feed if r["uri"] == path and r["origin"] == sender]
        assert mine, (receiver, feed)
        assert all(r["authenticated"] and r["server"] == receiver for r in mine)
