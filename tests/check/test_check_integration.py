"""``stubserver check`` against real stubs on loopback, with a private DNS server and CA.

One world is built for the module: a DNS server, stubs (each on its own 127.0.6.x address,
all on the same federation port), a .well-known server with a scheme in ``m.server``, and
two nginx reverse proxies (one re-encoding the URI, one dropping Authorization). Each test
runs the real ``stubserver check`` command against one server of that world.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stubserver.check.hints import HINT_AUTH_STRIPPED, HINT_URI_REWRITTEN
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca
from tests.support import (
    PYTHON,
    REPO_ROOT,
    StubProcess,
    https_request,
    run_stubserver_cli,
    start_stubserver,
    write_stub_files,
)

pytestmark = pytest.mark.integration

DNS_ADDRESS = "127.0.6.53"
US = ("us.test", "127.0.6.10")
GOOD = ("good.test", "127.0.6.11")
WRONG_CERT = ("wrongcert.test", "127.0.6.12")
SCHEME = ("scheme.test", "127.0.6.13")
DEAD_TARGET = ("deadtarget.test", "127.0.6.14")
SRV_DEAD = "srvdead.test"
SRV_CNAME = ("srvcname.test", "alias.test")
LOST = ("lost.test", "127.0.6.16")
REWRITE = ("rewrite.test", "127.0.6.17", "127.0.6.18")
STRIP = ("strip.test", "127.0.6.19", "127.0.6.20")
REPORTER = ("reporter.test", "127.0.6.21")
#: How long we wait for a helper process to accept connections, in seconds.
STARTUP_SECONDS = 20.0
#: How long one check may take, in seconds.
CHECK_SECONDS = 120.0

_WELL_KNOWN_SERVER = """
import http.server, ssl, sys
address, port, cert, key, body = sys.argv[1:6]
port = int(port)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer((address, port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(address: str, port: int, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"helper exited with {process.returncode}")
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {address}:{port}")


def _nginx() -> str | None:
    """The nginx binary, installed from the system's packages when root and missing."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if found is not None or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=False, capture_output=True, env=env)
    for package in ("nginx-light", "nginx"):
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", package],
            check=False,
            capture_output=True,
            env=env,
        )
        if done.returncode == 0:
            break
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )


@dataclass
class World:
    """Everything the tests check against."""

    folder: Path
    fed_port: int
    wk_port: int
    dns_port: int
    us_config: Path
    reporter: StubProcess
    nginx_ok: bool
    nginx_reason: str

    def check(self, name: str) -> tuple[int, dict[str, Any]]:
        """Run ``stubserver check NAME --json -c us.yaml``; (exit status, report)."""
        done = run_stubserver_cli(
            "check", name, "--json", "-c", str(self.us_config), timeout=CHECK_SECONDS
        )
        assert done.stdout, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return done.returncode, report

    def addr(self, address: str) -> str:
        """``ip:port`` on the federation port."""
        return f"{address}:{self.fed_port}"


def _hint_steps(report: dict[str, Any]) -> list[str]:
    return [h["Step"] for h in report["Hints"]]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    folder = Path(tempfile.mkdtemp(prefix="check-integration-"))
    processes: list[subprocess.Popen[Any]] = []
    stubs: list[StubProcess] = []
    try:
        ca = make_ca()
        ca_path = folder / "ca.crt"
        ca_path.write_bytes(ca.cert_pem)
        fed_port, wk_port = _free_port(), _free_port()

        zone = {
            "records": [
                *(
                    {"name": n, "type": "A", "value": a}
                    for n, a in (US, GOOD, WRONG_CERT, SCHEME, DEAD_TARGET, LOST, REPORTER)
                ),
                {"name": REWRITE[0], "type": "A", "value": REWRITE[1]},
                {"name": STRIP[0], "type": "A", "value": STRIP[1]},
                {"name": SRV_CNAME[1], "type": "CNAME", "value": GOOD[0]},
                {
                    "name": f"_matrix-fed._tcp.{SRV_CNAME[0]}",
                    "type": "SRV",
                    "priority": 10,
                    "weight": 5,
                    "port": fed_port,
                    "target": SRV_CNAME[1],
                },
                {
                    "name": f"_matrix-fed._tcp.{SRV_DEAD}",
                    "type": "SRV",
                    "priority": 10,
                    "weight": 5,
                    "port": fed_port,
                    "target": DEAD_TARGET[0],
                },
            ]
        }
        zone_path = folder / "zone.json"
        zone_path.write_text(json.dumps(zone))
        dns = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "stubserver.devtools.dns_server",
                "--zone",
                str(zone_path),
                "--listen",
                f"{DNS_ADDRESS}:0",
            ],
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        processes.append(dns)
        assert dns.stdout is not None
        ready = json.loads(dns.stdout.readline())
        dns_port = int(ready["listen"][0].rsplit(":", 1)[1])

        def federation(allow: bool = True) -> dict[str, Any]:
            return {
                "federation_dns_servers": [f"{DNS_ADDRESS}:{dns_port}"],
                "federation_custom_ca_list": [str(ca_path)],
                "ip_range_allowlist": ["127.0.0.0/8"] if allow else [],
                "federation_default_port": fed_port,
                "federation_well_known_port": wk_port,
            }

        def stub(
            name: str, address: str, *, tls_names: list[str] | None = None, allow: bool = True
        ) -> Path:
            files = write_stub_files(
                folder,
                name,
                ca,
                bind=address,
                port=fed_port,
                tls_names=tls_names,
                extra_config=federation(allow),
            )
            stubs.append(start_stubserver(files.config_path))
            return files.config_path

        us_config = stub(*US)
        stub(*GOOD)
        stub(*WRONG_CERT, tls_names=["other.test"])
        stub(*LOST, allow=False)
        stub(REWRITE[0], REWRITE[2])
        stub(STRIP[0], STRIP[2])

        reporter_files = write_stub_files(
            folder,
            REPORTER[0],
            ca,
            bind=REPORTER[1],
            port=fed_port,
            resources=("report",),
            extra_config={**federation(), "ip_range_allowlist": []},
        )
        reporter = start_stubserver(reporter_files.config_path)
        stubs.append(reporter)

        scheme_tls = issue_cert([SCHEME[0]], ca)
        (folder / "scheme.crt").write_bytes(scheme_tls.cert_pem)
        (folder / "scheme.key").write_bytes(scheme_tls.key_pem)
        script = folder / "wellknown.py"
        script.write_text(_WELL_KNOWN_SERVER)
        wk = subprocess.Popen(
            [
                PYTHON,
                str(script),
                SCHEME[1],
                str(wk_port),
                str(folder / "scheme.crt"),
                str(folder / "scheme.key"),
                json.dumps({"m.server": f"https://{GOOD[0]}"}),
            ],
            stdout=subprocess.DEVNULL,
        )
        processes.append(wk)
        _wait_for_port(SCHEME[1], wk_port, wk)

        nginx_ok, reason = _start_nginx(folder, ca, fed_port, processes)
        yield World(
            folder=folder,
            fed_port=fed_port,
            wk_port=wk_port,
            dns_port=dns_port,
            us_config=us_config,
            reporter=reporter,
            nginx_ok=nginx_ok,
            nginx_reason=reason,
        )
    finally:
        for s in stubs:
            s.terminate()
        for p in processes:
            p.terminate()
            p.wait(STARTUP_SECONDS)
            if p.stdout is not None:
                p.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


def _start_nginx(
    folder: Path, ca: KeyPair, fed_port: int, processes: list[subprocess.Popen[Any]]
) -> tuple[bool, str]:
    nginx = _nginx()
    if nginx is None:
        return False, "nginx is not installed and cannot be (not root, or no apt-get)"
    tls = issue_cert([REWRITE[0], STRIP[0]], ca)
    (folder / "proxy.crt").write_bytes(tls.cert_pem)
    (folder / "proxy.key").write_bytes(tls.key_pem)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / "nginx" / sub).mkdir(parents=True, exist_ok=True)
    n = folder / "nginx"
    user = "user root root;" if os.geteuid() == 0 else ""
    tls_lines = (
        f"ssl_certificate {folder / 'proxy.crt'}; ssl_certificate_key {folder / 'proxy.key'};"
    )
    conf = f"""
{user}
daemon off;
worker_processes 1;
pid {n / "nginx.pid"};
error_log {n / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {n / "body"};
    proxy_temp_path {n / "proxy"};
    fastcgi_temp_path {n / "fastcgi"};
    uwsgi_temp_path {n / "uwsgi"};
    scgi_temp_path {n / "scgi"};
    server {{
        # A path after the port: nginx passes the decoded, re-encoded URI.
        listen {REWRITE[1]}:{fed_port} ssl;
        {tls_lines}
        location /_matrix/ {{ proxy_pass https://{REWRITE[2]}:{fed_port}/_matrix/; }}
    }}
    server {{
        listen {STRIP[1]}:{fed_port} ssl;
        {tls_lines}
        location / {{
            proxy_pass https://{STRIP[2]}:{fed_port};
            proxy_set_header Authorization "";
        }}
    }}
}}
"""
    conf_path = n / "nginx.conf"
    conf_path.write_text(conf)
    process = subprocess.Popen(
        [nginx, "-c", str(conf_path), "-p", str(n)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    processes.append(process)
    try:
        _wait_for_port(REWRITE[1], fed_port, process)
    except RuntimeError as e:
        errors = (n / "error.log").read_text() if (n / "error.log").exists() else ""
        return False, f"nginx did not start: {e}: {errors[-500:]}"
    return True, ""


def test_healthy_server_is_federation_ok(world: World) -> None:
    """A healthy server is FederationOK, and the signed request and the way back pass."""
    status, report = world.check(GOOD[0])
    assert report["FederationOK"] is True, report["Hints"]
    assert report["AllOK"] is True, report["Hints"]
    assert status == 0
    connection = report["ConnectionReports"][world.addr(GOOD[1])]
    assert connection["Checks"]["AllChecksOK"] is True
    assert connection["Keys"]["server_name"] == GOOD[0]
    assert report["SignedRequest"]["OK"] is True
    assert report["WayBack"]["OK"] is True
    assert report["DNSResult"]["Addrs"] == [world.addr(GOOD[1])]
    assert report["Hints"] == []


def test_certificate_for_the_wrong_name(world: World) -> None:
    """A certificate for another name fails ValidCertificates and is named with its fix."""
    status, report = world.check(WRONG_CERT[0])
    assert status == 1
    checks = report["ConnectionReports"][world.addr(WRONG_CERT[1])]["Checks"]
    assert checks["ValidCertificates"] is False
    assert checks["MatchingServerName"] is True
    assert report["FederationOK"] is False
    hint = next(h for h in report["Hints"] if h["Step"] == "certificate")
    assert "other.test" in hint["Fix"]
    assert f"server name {WRONG_CERT[0]}" in hint["Fix"]


def test_scheme_in_m_server(world: World) -> None:
    """An m.server with a scheme is caught, and the hint shows the value without it."""
    status, report = world.check(SCHEME[0])
    assert status == 1
    assert report["FederationOK"] is False
    assert "scheme" in report["WellKnownResult"]["result"]
    assert report["WellKnownResult"]["m.server"] == ""
    assert _hint_steps(report)[0] == ".well-known"
    assert f'"m.server": "{GOOD[0]}"' in report["Hints"][0]["Fix"]


def test_srv_target_not_answering(world: World) -> None:
    """An SRV target that does not answer is a connection error naming the SRV record."""
    status, report = world.check(SRV_DEAD)
    assert status == 1
    records = report["DNSResult"]["SRVRecords"]
    assert records == [
        {"Target": f"{DEAD_TARGET[0]}.", "Port": world.fed_port, "Priority": 10, "Weight": 5}
    ]
    assert world.addr(DEAD_TARGET[1]) in report["ConnectionErrors"]
    hint = next(h for h in report["Hints"] if h["Step"] == "connection")
    assert f"_matrix-fed._tcp.{SRV_DEAD}" in hint["Problem"]


def test_srv_target_that_is_a_cname(world: World) -> None:
    """An SRV target that is a CNAME is named, with the canonical name to use instead."""
    status, report = world.check(SRV_CNAME[0])
    assert status == 1
    host = report["DNSResult"]["Hosts"][f"{SRV_CNAME[1]}."]
    assert host["CName"] == f"{GOOD[0]}."
    assert "CNAME" in host["Error"]["Message"]
    hint = next(h for h in report["Hints"] if h["Step"] == "DNS")
    assert f"point the SRV record at {GOOD[0]}." in hint["Fix"]


def test_server_that_cannot_reach_us(world: World) -> None:
    """A server that cannot reach us back is FederationOK but fails the way back."""
    status, report = world.check(LOST[0])
    assert report["FederationOK"] is True, report["Hints"]
    assert report["WayBack"]["OK"] is False
    assert report["AllOK"] is False
    assert status == 1
    assert "way back" in _hint_steps(report)


def test_proxy_that_rewrites_the_uri(world: World) -> None:
    """A reverse proxy that re-encodes the URI fails the signed request with its hint."""
    if not world.nginx_ok:
        pytest.skip(world.nginx_reason)
    status, report = world.check(REWRITE[0])
    assert report["FederationOK"] is True, report["Hints"]
    assert report["SignedRequest"]["Status"] == 401
    assert report["SignedRequest"]["Hint"] == HINT_URI_REWRITTEN
    assert status == 1


def test_proxy_that_strips_authorization(world: World) -> None:
    """A reverse proxy that drops Authorization fails the signed request with its hint."""
    if not world.nginx_ok:
        pytest.skip(world.nginx_reason)
    status, report = world.check(STRIP[0])
    assert report["FederationOK"] is True, report["Hints"]
    assert report["SignedRequest"]["Status"] == 401
    assert report["SignedRequest"]["Hint"] == HINT_AUTH_STRIPPED
    assert status == 1


def test_report_endpoint_applies_the_blocklist(world: World) -> None:
    """The report endpoint serves the report, and never dials a blocked (private) address."""
    response = https_request(
        REPORTER[1],
        world.reporter.port,
        f"/api/report?server_name={GOOD[0]}",
        ca_pem=(world.folder / "ca.crt").read_bytes(),
        server_hostname=REPORTER[0],
        timeout=CHECK_SECONDS,
    )
    assert response.status == 200
    report = response.json()
    assert report["ConnectionReports"] == {}
    assert "ip_range_blocklist" in report["ConnectionErrors"][world.addr(GOOD[1])]["Message"]
    assert report["FederationOK"] is False
    ok = https_request(
        REPORTER[1],
        world.reporter.port,
        f"/api/federation-ok?server_name={GOOD[0]}",
        ca_pem=(world.folder / "ca.crt").read_bytes(),
        server_hostname=REPORTER[0],
        timeout=CHECK_SECONDS,
    )
    assert ok.body == b"BAD"


def test_text_report_names_the_failing_step_first(world: World) -> None:
    """Without --json the report opens with the verdict and the failing step's hint."""
    done = run_stubserver_cli(
        "check", WRONG_CERT[0], "-c", str(world.us_config), timeout=CHECK_SECONDS
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert lines[0] == f"{WRONG_CERT[0]}: federation FAILED"
    assert lines[2].startswith("[certificate]")


def test_invalid_name_is_bad_usage() -> None:
    """A string that is not a server name exits 2, with the tester's Error in the JSON."""
    done = run_stubserver_cli("check", "https://example.org", "--json")
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["Error"] == "Invalid server name 'https://example.org'"
    assert report["FederationOK"] is False
    assert report["Hints"][0]["Step"] == "server name"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
