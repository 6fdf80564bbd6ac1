"""No spelling of our own host is dialled, through real sockets (issue 12, row 1).

A loopback listener (``127.0.0.1`` and ``::1`` on one port) stands for a service on our
own host. ``stubserver keys`` runs as a user would, with the default blocklist, against a
real DNS server (``stubserver.devtools.dns_server``) and a real HTTPS ``.well-known``
server; the only allowlist entry is that ``.well-known`` server's own address. Every way
to reach the listener is tried: an IP literal server name, an A or AAAA answer
(``127.0.0.1``, ``0.0.0.0``, ``::1``, ``::``, ``::ffff:127.0.0.1``, ``::ffff:0.0.0.0``),
an SRV target, a ``.well-known`` ``m.server``, a ``.well-known`` redirect, and the names
``0``, ``00``, ``0x0`` and ``2130706433`` through the system resolver. Each run must end
without the listener having seen a single connection. A control test first shows that
these spellings do reach the listener when dialled directly.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stubserver.devtools.loopback_listeners import LoopbackListeners
from stubserver.tls.certificates import issue_cert, make_ca
from tests.support import REPO_ROOT, run_stubserver_cli

pytestmark = pytest.mark.integration

#: The HTTPS .well-known server's own address (the one allowlisted address).
WELL_KNOWN_HOST = "127.0.0.71"
DNS_LISTEN = "127.0.0.72:0"
#: Bound on one CLI run, in seconds.
CLI_TIMEOUT_SECONDS = 40.0

#: DNS names whose A/AAAA answer is one spelling of our own host.
ADDRESS_NAMES = {
    "a-127.test": ("A", "127.0.0.1"),
    "a-0.test": ("A", "0.0.0.0"),
    "aaaa-1.test": ("AAAA", "::1"),
    "aaaa-0.test": ("AAAA", "::"),
    "aaaa-m127.test": ("AAAA", "::ffff:127.0.0.1"),
    "aaaa-m0.test": ("AAAA", "::ffff:0.0.0.0"),
}
#: Host spellings a .well-known m.server or a redirect may name.
LITERALS = ["127.0.0.1", "0.0.0.0", "[::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:0.0.0.0]"]


@dataclass
class Setup:
    port: int
    listeners: LoopbackListeners
    dns: str
    ca_file: Path
    well_known_port: int

    def connections(self) -> int:
        """Connections the listener accepted since the last call."""
        return self.listeners.accept_all()

    def keys(self, name: str, *, system_dns: bool = False) -> subprocess.CompletedProcess[str]:
        flags = ["--ca-file", str(self.ca_file), "--well-known-port", str(self.well_known_port)]
        flags += ["--allow-ip", f"{WELL_KNOWN_HOST}/32"]
        if not system_dns:
            flags += ["--dns-server", self.dns]
        result = run_stubserver_cli("keys", name, "--json", *flags, timeout=CLI_TIMEOUT_SECONDS)
        assert "Traceback" not in result.stderr, result.stderr
        return result


def _well_known_server(
    tmp: Path, answers: dict[str, tuple[int, dict[str, str], bytes]]
) -> ThreadingHTTPServer:
    ca = make_ca("blocklist CA")
    (tmp / "ca.crt").write_bytes(ca.cert_pem)
    pair = issue_cert(sorted(answers), ca)
    (tmp / "wk.crt").write_bytes(pair.cert_pem)
    (tmp / "wk.key").write_bytes(pair.key_pem)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            status, headers, body = answers.get(host, (404, {}, b"{}"))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((WELL_KNOWN_HOST, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "wk.crt", tmp / "wk.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def _zone(port: int) -> dict[str, list[dict[str, object]]]:
    records: list[dict[str, object]] = [
        {"name": name, "type": kind, "value": value}
        for name, (kind, value) in ADDRESS_NAMES.items()
    ]
    for name in [*ADDRESS_NAMES, "0.0.0.0"]:
        records.append(
            {
                "name": f"_matrix-fed._tcp.srv-{name}",
                "type": "SRV",
                "priority": 10,
                "weight": 5,
                "port": port,
                "target": name,
            }
        )
    for index in range(len(LITERALS) + len(ADDRESS_NAMES)):
        for kind in ("wk", "redir"):
            records.append({"name": f"{kind}-{index}.test", "type": "A", "value": WELL_KNOWN_HOST})
    return {"records": records}


def _hosts(port: int) -> list[str]:
    return [f"{h}:{port}" for h in [*LITERALS, *ADDRESS_NAMES]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("blocklist")
    listeners = LoopbackListeners.open()
    port = listeners.port
    answers: dict[str, tuple[int, dict[str, str], bytes]] = {}
    for index, host in enumerate(_hosts(port)):
        answers[f"wk-{index}.test"] = (200, {}, json.dumps({"m.server": host}).encode())
        location = f"https://{host}/.well-known/matrix/server"
        answers[f"redir-{index}.test"] = (302, {"Location": location}, b"")
    (tmp / "zone.json").write_text(json.dumps(_zone(port)))
    with ExitStack() as stack:
        stack.callback(listeners.close)
        server = _well_known_server(tmp, answers)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        dns = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stubserver.devtools.dns_server",
                "--zone",
                str(tmp / "zone.json"),
                "--listen",
                DNS_LISTEN,
            ],
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        stack.callback(dns.wait, 10)
        stack.callback(dns.terminate)
        assert dns.stdout is not None
        ready = json.loads(dns.stdout.readline())
        yield Setup(port, listeners, ready["listen"][0], tmp / "ca.crt", server.server_address[1])


def _refused(setup: Setup, result: subprocess.CompletedProcess[str]) -> None:
    assert setup.connections() == 0, result.stdout
    assert result.returncode != 0, result.stdout


@pytest.mark.parametrize(
    "address",
    ["0.0.0.0", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0"],
)
def test_control_these_spellings_reach_our_loopback(setup: Setup, address: str) -> None:
    """Dialled directly, each spelling reaches the loopback listener: so a run that
    leaves the listener untouched shows the blocklist stopped it, not the network."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as client:
        client.settimeout(5)
        try:
            client.connect((address, setup.port))
        except OSError as e:
            pytest.skip(f"this host does not route {address}: {e}")
    assert setup.connections() == 1


@pytest.mark.parametrize("host", LITERALS)
def test_ip_literal_server_name(setup: Setup, host: str) -> None:
    """An IP literal server name spelling our own host is never dialled."""
    result = setup.keys(f"{host}:{setup.port}")
    _refused(setup, result)
    assert "ip_range_blocklist" in result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(ADDRESS_NAMES))
def test_a_or_aaaa_answer(setup: Setup, name: str) -> None:
    """A name whose A/AAAA answer spells our own host is never dialled."""
    result = setup.keys(f"{name}:{setup.port}")
    _refused(setup, result)
    assert "ip_range_blocklist" in result.stdout + result.stderr


@pytest.mark.parametrize("target", [*sorted(ADDRESS_NAMES), "0.0.0.0"])
def test_srv_target(setup: Setup, target: str) -> None:
    """An SRV target whose address spells our own host is never dialled."""
    result = setup.keys(f"srv-{target}")
    _refused(setup, result)
    assert "ip_range_blocklist" in result.stdout + result.stderr


@pytest.mark.parametrize("index", range(len(LITERALS) + len(ADDRESS_NAMES)))
def test_well_known_m_server(setup: Setup, index: int) -> None:
    """A .well-known m.server spelling our own host (literal or name) is never dialled."""
    _refused(setup, setup.keys(f"wk-{index}.test"))


@pytest.mark.parametrize("index", range(len(LITERALS) + len(ADDRESS_NAMES)))
def test_well_known_redirect(setup: Setup, index: int) -> None:
    """A .well-known redirect to our own host (literal or name) is never followed there."""
    _refused(setup, setup.keys(f"redir-{index}.test"))


@pytest.mark.parametrize("name", ["0", "00", "0x0", "2130706433"])
def test_system_resolver_names(setup: Setup, name: str) -> None:
    """With the system resolver, "0", "00", "0x0" (0.0.0.0) and "2130706433" (127.0.0.1)
    are never dialled."""
    _refused(setup, setup.keys(f"{name}:{setup.port}", system_dns=True))
