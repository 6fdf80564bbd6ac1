"""``stubserver check`` end to end: TAP, ``--client``, a warning and the plain-text verdict,
through the real command line and real servers on loopback (127.0.9.x).

One world for the module: our DNS server, a test CA, stubs on one federation port (a
healthy one, one with a certificate for another name, one per client case, one behind an
unusable ``.well-known``, and a ``report`` listener), and one small HTTPS server process
(Python's ``http.server``) answering canned files on the ``.well-known`` port of some names
and on the client API port of two homeservers, with or without the CORS header.
"""

from __future__ import annotations

import json
import re
import selectors
import shutil
import socket
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from stubserver.check.client_section import CLIENT_VERSIONS_PATH, CLIENT_WELL_KNOWN_PATH, HINT_CORS
from stubserver.check.warning_rules import WELL_KNOWN_UNUSABLE
from stubserver.check.well_known_section import WELL_KNOWN_PATH
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca
from tests.support import (
    PYTHON,
    REPO_ROOT,
    StubProcess,
    run_stubserver_cli,
    start_stubserver,
    write_stub_files,
)

pytestmark = pytest.mark.integration

DNS_ADDRESS = "127.0.9.53"
US = ("us.test", "127.0.9.10")
GOOD = ("good.test", "127.0.9.11")
WRONG_CERT = ("wrongcert.test", "127.0.9.12")
#: Client discovery: everything with CORS; the .well-known without; the versions without.
CLIENT_OK = ("clientok.test", "127.0.9.20")
CLIENT_WK_NO_CORS = ("clientwk.test", "127.0.9.21")
CLIENT_V_NO_CORS = ("clientv.test", "127.0.9.22")
HS_CORS = ("hs-cors.test", "127.0.9.30")
HS_NO_CORS = ("hs-nocors.test", "127.0.9.31")
#: A .well-known served as an HTML page, the server itself reachable at the fallback.
BAD_WK = ("badwk.test", "127.0.9.40")
REPORTER = ("reporter.test", "127.0.9.50")
SPEC_VERSIONS = ["v1.11", "v1.12"]
#: How long we wait for a helper process to accept connections, in seconds.
STARTUP_SECONDS = 20.0
#: How long one check (or one report request) may take, in seconds.
CHECK_SECONDS = 120.0

#: Serves canned answers: argv[1] is a JSON file listing listeners, each
#: ``{"address", "port", "cert", "key", "routes": {path: {"status", "headers", "body"}}}``;
#: any other path answers 404. Prints "ready" once every listener is bound.
_HTTPS_FILES_SERVER = """
import http.server, json, ssl, sys, threading
listeners = json.load(open(sys.argv[1]))
def handler_for(routes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                route = {"status": 404, "headers": {"Content-Type": "text/plain"}, "body": "no"}
            data = route["body"].encode()
            self.send_response(route["status"])
            for name, value in route["headers"].items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        def log_message(self, *args):
            pass
    return Handler
for spec in listeners:
    server = http.server.ThreadingHTTPServer(
        (spec["address"], spec["port"]), handler_for(spec["routes"])
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(spec["cert"], spec["key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

JSON_TYPE = {"Content-Type": "application/json"}
CORS = {"Access-Control-Allow-Origin": "*"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _route(document: Any, headers: dict[str, str]) -> dict[str, Any]:
    return {"status": 200, "headers": headers, "body": json.dumps(document)}


@dataclass
class World:
    """Everything the tests check against."""

    folder: Path
    fed_port: int
    wk_port: int
    hs_port: int
    us_config: Path
    reporter: StubProcess

    def run(self, name: str, *options: str) -> subprocess.CompletedProcess[str]:
        """``stubserver check NAME OPTIONS -c us.yaml``, as a user types it."""
        return run_stubserver_cli(
            "check", name, *options, "-c", str(self.us_config), timeout=CHECK_SECONDS
        )

    def check_json(self, name: str, *options: str) -> tuple[int, dict[str, Any]]:
        """``check NAME --json OPTIONS``: (exit status, report)."""
        done = self.run(name, "--json", *options)
        assert done.stdout, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return done.returncode, report

    def addr(self, address: str) -> str:
        """``ip:port`` on the federation port."""
        return f"{address}:{self.fed_port}"

    def report_url(self, path: str, name: str) -> str:
        """The reporter's URL for ``path?server_name=name``, by IP (its certificate has it)."""
        return f"https://{REPORTER[1]}:{self.reporter.port}{path}?server_name={name}"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    folder = Path(tempfile.mkdtemp(prefix="check-cli-e2e-"))
    processes: list[subprocess.Popen[Any]] = []
    stubs: list[StubProcess] = []
    try:
        ca = make_ca()
        ca_path = folder / "ca.crt"
        ca_path.write_bytes(ca.cert_pem)
        fed_port, wk_port, hs_port = _free_port(), _free_port(), _free_port()
        named = [US, GOOD, WRONG_CERT, CLIENT_OK, CLIENT_WK_NO_CORS, CLIENT_V_NO_CORS]
        named += [HS_CORS, HS_NO_CORS, BAD_WK, REPORTER]
        zone = {"records": [{"name": n, "type": "A", "value": a} for n, a in named]}
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
        federation = {
            "federation_dns_servers": [f"{DNS_ADDRESS}:{dns_port}"],
            "federation_custom_ca_list": [str(ca_path)],
            "ip_range_allowlist": ["127.0.0.0/8"],
            "federation_default_port": fed_port,
            "federation_well_known_port": wk_port,
        }

        def stub(name: str, address: str, *, tls_names: list[str] | None = None) -> Path:
            files = write_stub_files(
                folder,
                name,
                ca,
                bind=address,
                port=fed_port,
                tls_names=tls_names,
                extra_config=federation,
            )
            stubs.append(start_stubserver(files.config_path))
            return files.config_path

        us_config = stub(*US)
        stub(*GOOD)
        stub(*WRONG_CERT, tls_names=["other.test"])
        for name, address in (CLIENT_OK, CLIENT_WK_NO_CORS, CLIENT_V_NO_CORS, BAD_WK):
            stub(name, address)
        reporter_files = write_stub_files(
            folder,
            REPORTER[0],
            ca,
            bind=REPORTER[1],
            port=0,
            resources=("report",),
            tls_names=[REPORTER[0], REPORTER[1]],
            extra_config=federation,
        )
        reporter = start_stubserver(reporter_files.config_path)
        stubs.append(reporter)

        processes.append(_start_files_server(folder, ca, wk_port, hs_port))
        yield World(
            folder=folder,
            fed_port=fed_port,
            wk_port=wk_port,
            hs_port=hs_port,
            us_config=us_config,
            reporter=reporter,
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


def _start_files_server(
    folder: Path, ca: KeyPair, wk_port: int, hs_port: int
) -> subprocess.Popen[Any]:
    """The canned HTTPS server: the client .well-known files, two client APIs (with and
    without CORS) and an unusable server .well-known (an HTML page)."""
    tls = issue_cert(
        [
            n
            for n, _ in (
                CLIENT_OK,
                CLIENT_WK_NO_CORS,
                CLIENT_V_NO_CORS,
                HS_CORS,
                HS_NO_CORS,
                BAD_WK,
            )
        ],
        ca,
    )
    cert, key = folder / "files.crt", folder / "files.key"
    cert.write_bytes(tls.cert_pem)
    key.write_bytes(tls.key_pem)

    def client_well_known(homeserver: str, headers: dict[str, str]) -> dict[str, Any]:
        base_url = f"https://{homeserver}:{hs_port}"
        return {CLIENT_WELL_KNOWN_PATH: _route({"m.homeserver": {"base_url": base_url}}, headers)}

    versions = {"versions": SPEC_VERSIONS}
    listeners = [
        (CLIENT_OK[1], wk_port, client_well_known(HS_CORS[0], {**JSON_TYPE, **CORS})),
        (CLIENT_WK_NO_CORS[1], wk_port, client_well_known(HS_CORS[0], JSON_TYPE)),
        (CLIENT_V_NO_CORS[1], wk_port, client_well_known(HS_NO_CORS[0], {**JSON_TYPE, **CORS})),
        (HS_CORS[1], hs_port, {CLIENT_VERSIONS_PATH: _route(versions, {**JSON_TYPE, **CORS})}),
        (HS_NO_CORS[1], hs_port, {CLIENT_VERSIONS_PATH: _route(versions, JSON_TYPE)}),
        (
            BAD_WK[1],
            wk_port,
            {
                WELL_KNOWN_PATH: {
                    "status": 200,
                    "headers": {"Content-Type": "text/html"},
                    "body": "<html><body><h1>It works!</h1></body></html>",
                }
            },
        ),
    ]
    spec = [
        {"address": a, "port": p, "cert": str(cert), "key": str(key), "routes": routes}
        for a, p, routes in listeners
    ]
    (folder / "files.json").write_text(json.dumps(spec))
    script = folder / "files_server.py"
    script.write_text(_HTTPS_FILES_SERVER)
    process = subprocess.Popen(
        [PYTHON, str(script), str(folder / "files.json")], stdout=subprocess.PIPE
    )
    _wait_ready(process)
    return process


def _wait_ready(process: subprocess.Popen[Any]) -> None:
    """Wait (up to :data:`STARTUP_SECONDS`) for the helper's ready line, printed once every
    listener is bound; kill it and raise when it does not come."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(STARTUP_SECONDS) and process.stdout.readline().strip() == b"ready":
            return
    process.kill()
    process.wait()
    process.stdout.close()
    raise RuntimeError(f"the HTTPS files server did not start ({process.returncode})")


# -- TAP --------------------------------------------------------------------------------

_TEST_LINE = re.compile(r"^(ok|not ok) (\d+) - (\S.*)$")


@dataclass(frozen=True)
class TapTest:
    """One test line of a TAP stream and its YAML diagnostics (None without a block)."""

    ok: bool
    number: int
    name: str
    diagnostics: Any


def parse_tap13(text: str) -> tuple[list[TapTest], list[str]]:
    """The tests and comments of a TAP version 13 stream; AssertionError when it is not
    valid: a version line, a plan ``1..N`` matching N test lines numbered 1 to N, YAML
    blocks indented under their test line, only comments otherwise."""
    lines = text.splitlines()
    assert lines[0] == "TAP version 13", lines[:1]
    plan = re.fullmatch(r"1\.\.(\d+)", lines[1])
    assert plan is not None, lines[1]
    tests: list[TapTest] = []
    comments: list[str] = []
    i = 2
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("#"):
            comments.append(line)
            continue
        match = _TEST_LINE.match(line)
        assert match is not None, f"not a TAP line: {line!r}"
        diagnostics: Any = None
        if i < len(lines) and lines[i] == "  ---":
            end = lines.index("  ...", i)
            block = "\n".join(raw[2:] for raw in lines[i + 1 : end])
            diagnostics = yaml.safe_load(block) if block else {}
            i = end + 1
        tests.append(
            TapTest(match.group(1) == "ok", int(match.group(2)), match.group(3), diagnostics)
        )
    assert len(tests) == int(plan.group(1)), (len(tests), plan.group(1))
    assert [t.number for t in tests] == list(range(1, len(tests) + 1))
    return tests, comments


def test_tap_healthy_server(world: World) -> None:
    """``--format tap`` for a healthy server is valid TAP 13 whose every named test passes
    (a connection per address, the version, the signed request, the way back and
    FederationOK), exit status 0."""
    done = world.run(GOOD[0], "--format", "tap")
    assert done.returncode == 0, done.stdout + done.stderr
    tests, _ = parse_tap13(done.stdout)
    assert all(t.ok and t.diagnostics is None for t in tests), done.stdout
    assert [t.name for t in tests] == [
        f"connection {world.addr(GOOD[1])}",
        "version",
        "signed request",
        "way back",
        "FederationOK",
    ]


def test_tap_certificate_for_the_wrong_name(world: World) -> None:
    """``--format tap`` for a server whose certificate names another host is valid TAP 13:
    its connection and FederationOK are ``not ok``, each followed by a YAML block with a
    message; exit status 1."""
    done = world.run(WRONG_CERT[0], "--format", "tap")
    assert done.returncode == 1, done.stdout + done.stderr
    tests, _ = parse_tap13(done.stdout)
    by_name = {t.name: t for t in tests}
    connection = by_name[f"connection {world.addr(WRONG_CERT[1])}"]
    assert connection.ok is False
    assert isinstance(connection.diagnostics, dict) and connection.diagnostics["message"]
    assert by_name["FederationOK"].ok is False
    assert all(isinstance(t.diagnostics, dict) for t in tests if not t.ok), done.stdout


def test_tap_warning_is_a_comment(world: World) -> None:
    """A warning (an unusable .well-known) is a ``# warning CODE: ...`` comment in TAP and
    fails no test: exit status 0."""
    done = world.run(BAD_WK[0], "--format", "tap")
    assert done.returncode == 0, done.stdout + done.stderr
    tests, comments = parse_tap13(done.stdout)
    assert all(t.ok for t in tests), done.stdout
    assert any(c.startswith(f"# warning {WELL_KNOWN_UNUSABLE}: ") for c in comments), comments


# -- --client ---------------------------------------------------------------------------


def test_client_discovery_with_cors(world: World) -> None:
    """``--client`` against a client .well-known and a client API both sending CORS: the
    Client section passes both steps and lists the spec versions; AllOK, exit 0."""
    status, report = world.check_json(CLIENT_OK[0], "--client")
    client = report["Client"]
    assert client["OK"] is True, client
    assert client["WellKnown"]["OK"] is True
    assert client["WellKnown"]["Status"] == 200
    assert client["WellKnown"]["CORS"] is True
    assert client["BaseURL"] == f"https://{HS_CORS[0]}:{world.hs_port}"
    assert client["Versions"]["OK"] is True
    assert client["Versions"]["CORS"] is True
    assert client["SpecVersions"] == SPEC_VERSIONS
    assert report["FederationOK"] is True, report["Hints"]
    assert report["AllOK"] is True
    assert status == 0


def test_client_well_known_without_cors(world: World) -> None:
    """A client .well-known without Access-Control-Allow-Origin fails its step with the
    CORS hint (its base_url is still followed); AllOK is false, FederationOK true, exit 1."""
    status, report = world.check_json(CLIENT_WK_NO_CORS[0], "--client")
    client = report["Client"]
    assert client["OK"] is False
    assert client["WellKnown"]["OK"] is False
    assert client["WellKnown"]["CORS"] is False
    assert client["WellKnown"]["Hint"] == HINT_CORS
    assert client["Versions"]["OK"] is True
    assert report["FederationOK"] is True, report["Hints"]
    assert report["AllOK"] is False
    assert status == 1


def test_client_versions_without_cors(world: World) -> None:
    """A base_url whose /_matrix/client/versions lacks the CORS header fails the versions
    step with the CORS hint: with --client AllOK is false and exit 1, while the same
    server without --client is AllOK with the same FederationOK."""
    status, report = world.check_json(CLIENT_V_NO_CORS[0], "--client")
    client = report["Client"]
    assert client["WellKnown"]["OK"] is True
    assert client["BaseURL"] == f"https://{HS_NO_CORS[0]}:{world.hs_port}"
    assert client["Versions"]["OK"] is False
    assert client["Versions"]["Status"] == 200
    assert client["Versions"]["CORS"] is False
    assert client["Versions"]["Hint"] == HINT_CORS
    assert report["AllOK"] is False
    assert status == 1
    plain_status, plain = world.check_json(CLIENT_V_NO_CORS[0])
    assert "Client" not in plain or plain["Client"] is None
    assert plain["FederationOK"] is report["FederationOK"] is True
    assert plain["AllOK"] is True
    assert plain_status == 0


# -- a warning --------------------------------------------------------------------------


def test_unusable_well_known_is_a_warning(world: World) -> None:
    """A .well-known served as an HTML page while the server answers at the fallback
    (the name, on the default port) is FederationOK with a WellKnownUnusable warning
    naming the URL, and no hint."""
    status, report = world.check_json(BAD_WK[0])
    assert report["FederationOK"] is True, report["Hints"]
    assert status == 0
    assert world.addr(BAD_WK[1]) in report["ConnectionReports"]
    warnings = [w for w in report["Warnings"] if w["Code"] == WELL_KNOWN_UNUSABLE]
    assert len(warnings) == 1, report["Warnings"]
    assert f"{BAD_WK[0]}" in warnings[0]["Message"]
    assert WELL_KNOWN_PATH in warnings[0]["Message"]
    assert warnings[0]["Hint"]
    assert report["WellKnownResult"]["result"]
    assert report["Hints"] == []


# -- the plain-text verdict ---------------------------------------------------------------


def _curl(world: World, path: str, name: str) -> tuple[int, str, bytes]:
    """GET like curl (its User-Agent, ``Accept: */*``), trusting only the test CA."""
    context = ssl.create_default_context(cafile=str(world.folder / "ca.crt"))
    request = urllib.request.Request(
        world.report_url(path, name), headers={"User-Agent": "curl/8.5.0", "Accept": "*/*"}
    )
    with urllib.request.urlopen(request, context=context, timeout=CHECK_SECONDS) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


@pytest.mark.parametrize("path", ["/api/federation-ok", "/api/federation/federation-ok"])
def test_federation_ok_is_plain_text_good(world: World, path: str) -> None:
    """The report listener's federation-ok (ours and the Rust tester's path) answers a
    healthy server with exactly ``GOOD`` as text/plain."""
    status, content_type, body = _curl(world, path, GOOD[0])
    assert status == 200
    assert content_type.split(";")[0].strip() == "text/plain"
    assert body == b"GOOD"


def test_federation_ok_is_plain_text_bad(world: World) -> None:
    """A broken server (certificate for another name) answers exactly ``BAD``."""
    status, content_type, body = _curl(world, "/api/federation-ok", WRONG_CERT[0])
    assert status == 200
    assert content_type.split(";")[0].strip() == "text/plain"
    assert body == b"BAD"
