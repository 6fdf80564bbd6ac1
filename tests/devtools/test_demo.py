"""The demo's pieces (zone, CA, configs, process files) and one run of start.sh/stop.sh."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from stubserver.config import load_config
from stubserver.devtools.demo import demo_processes, running_pids
from stubserver.devtools.demo_pairs import PairResult, describe_path, format_matrix
from stubserver.devtools.demo_world import (
    CONTROL_PORT,
    DEFAULT_PORT,
    DNS_ADDRESS,
    DNS_PORT,
    TRIO,
    WELL_KNOWN_PORT,
    demo_zone,
    write_demo_files,
)

ROOT = Path(__file__).resolve().parents[2]


def test_trio_uses_three_delegation_methods() -> None:
    """Each server of the trio is found a different way."""
    assert sorted(s.method for s in TRIO) == ["direct", "srv", "well-known"]


def test_zone_has_srv_for_the_srv_server_only() -> None:
    """Only gamma has a _matrix-fed._tcp record, pointing at its own host and port."""
    srv = [r for r in demo_zone(TRIO) if r["type"] == "SRV"]
    assert srv == [
        {
            "name": "_matrix-fed._tcp.gamma.demo",
            "type": "SRV",
            "priority": 10,
            "weight": 5,
            "port": 8450,
            "target": "gamma-srv.demo",
            "ttl": 300,
        }
    ]


def test_zone_gives_the_direct_server_an_address_and_no_srv() -> None:
    """alpha.demo has an A record and no SRV, so resolution falls through to the default port."""
    records = [r for r in demo_zone(TRIO) if r["name"].endswith("alpha.demo")]
    assert records == [{"name": "alpha.demo", "type": "A", "value": "127.0.0.11", "ttl": 300}]


def test_srv_server_name_has_no_address() -> None:
    """gamma.demo itself has no A record: only its SRV target has one."""
    names = {(r["name"], r["type"]) for r in demo_zone(TRIO)}
    assert ("gamma.demo", "A") not in names
    assert ("gamma-srv.demo", "A") in names


def test_written_configs_load_and_use_demo_dns_and_ca(tmp_path: Path) -> None:
    """Every config parses, trusts the demo CA, uses the demo DNS and private ports."""
    write_demo_files(tmp_path)
    for s in TRIO:
        config = load_config(tmp_path / f"{s.slug}.yaml")
        assert config.server_name == s.server_name
        assert config.federation.dns_servers == ((DNS_ADDRESS, DNS_PORT),)
        assert config.federation.ca_files == (tmp_path / "ca.crt",)
        assert config.federation.verify_certificates is True
        assert config.federation.well_known_port == WELL_KNOWN_PORT
        assert config.federation.default_port == DEFAULT_PORT
        assert config.serve_server_wellknown == s.wellknown_value


def test_each_server_has_a_loopback_control_listener_with_a_kept_token(tmp_path: Path) -> None:
    """Each config serves control on its own loopback address above 1024 with a token of
    its own, kept 0600 (config included) and unchanged by a second write."""
    write_demo_files(tmp_path)
    tokens = set()
    for s in TRIO:
        config = load_config(tmp_path / f"{s.slug}.yaml")
        (control,) = [listener for listener in config.listeners if listener.is_control]
        assert control.port == CONTROL_PORT > 1024
        assert control.bind_addresses == (s.fed_address,)
        assert s.fed_address.startswith("127.")
        assert config.control_token
        tokens.add(config.control_token)
        assert (tmp_path / f"{s.slug}.yaml").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / f"{s.slug}.control_token").stat().st_mode & 0o777 == 0o600
    assert len(tokens) == len(TRIO)
    write_demo_files(tmp_path)
    assert {load_config(tmp_path / f"{s.slug}.yaml").control_token for s in TRIO} == tokens


def test_certificates_are_issued_by_the_ca_for_the_spec_names(tmp_path: Path) -> None:
    """Federation certificates name the server (or delegated) name, never the SRV target."""
    write_demo_files(tmp_path)
    expected = {"alpha": ["alpha.demo"], "beta": ["beta-fed.demo"], "gamma": ["gamma.demo"]}
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert ctx.get_ca_certs()
    for slug, names in expected.items():
        cert = x509.load_pem_x509_certificate((tmp_path / f"{slug}.fed.crt").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == names
        ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
        cert.verify_directly_issued_by(ca)


def test_keys_are_private_and_kept_on_rewrite(tmp_path: Path) -> None:
    """Signing and TLS keys are 0600, and a second write keeps the same keys."""
    write_demo_files(tmp_path)
    before = (tmp_path / "alpha.signing.key").read_bytes()
    assert (tmp_path / "alpha.signing.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "beta.fed.key").stat().st_mode & 0o777 == 0o600
    write_demo_files(tmp_path)
    assert (tmp_path / "alpha.signing.key").read_bytes() == before


def test_no_process_counts_as_running_without_pid_files(tmp_path: Path) -> None:
    """With no pid files, nothing is running."""
    assert running_pids(tmp_path, demo_processes(tmp_path)) == {}


def test_a_recycled_pid_is_not_taken_for_a_demo_process(tmp_path: Path) -> None:
    """A pid file naming some other live process (our own) does not count as the demo's."""
    (tmp_path / "alpha.pid").write_text(f"{os.getpid()}\n")
    assert running_pids(tmp_path, demo_processes(tmp_path)) == {}


def test_describe_path_names_the_method() -> None:
    """The matrix shows how the target was found and where it is."""
    assert describe_path("srv", "gamma-srv.demo", 8450) == "SRV → gamma-srv.demo:8450"
    assert describe_path("default_port", "alpha.demo", 8448) == "direct → alpha.demo:8448"


def test_matrix_names_the_failing_step() -> None:
    """A failed pair shows its failing step and error; a good one shows OK."""
    text = format_matrix(
        TRIO,
        [
            PairResult("alpha.demo", "beta.demo", "well-known → beta-fed.demo:8449", ok=True),
            PairResult(
                "beta.demo",
                "alpha.demo",
                "direct → alpha.demo:8448",
                ok=False,
                failed_step="keys",
                error="connection refused",
            ),
        ],
    )
    lines = text.splitlines()
    assert lines[0].endswith("OK")
    assert lines[1].endswith("FAIL at keys: connection refused")


@pytest.mark.integration
def test_start_checks_every_pair_and_stop_leaves_nothing(tmp_path: Path) -> None:
    """start.sh brings the trio up, all six pairs pass and the room's 3 messages reach all
    3 servers (9/9); a second start keeps the servers and the room and adds a round (all
    rounds counted: 6 messages, 18/18); stop.sh leaves no process behind."""
    env = {**os.environ, "STUBSERVER_DEMO_DIR": str(tmp_path)}
    started = subprocess.run(
        [str(ROOT / "demo/start.sh")],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "6/6 pairs OK" in started.stdout
        assert started.stdout.count(" OK") >= 6
        assert "well-known → beta-fed.demo:8449" in started.stdout
        assert "SRV → gamma-srv.demo:8450" in started.stdout
        assert "direct → alpha.demo:8448" in started.stdout
        last = started.stdout.strip().splitlines()[-1]
        assert last.startswith(
            "room #lobby:alpha.demo: 3 servers, 3 messages, 9/9 deliveries OK"
        ), started.stdout
        assert "beta.demo joined by alias" in started.stdout
        assert started.stdout.count("received, verified, accepted") == 6
        pids = running_pids(tmp_path, demo_processes(tmp_path))
        assert set(pids) == {"dns", "alpha", "beta", "gamma"}
        log = [json.loads(x) for x in (tmp_path / "beta.requests.jsonl").read_text().splitlines()]
        assert {e["origin"] for e in log if e["authenticated"]} == {"alpha.demo", "gamma.demo"}
        again = subprocess.run(
            [str(ROOT / "demo/start.sh")],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert running_pids(tmp_path, demo_processes(tmp_path)) == pids
        last = again.stdout.strip().splitlines()[-1]
        assert last.startswith(
            "room #lobby:alpha.demo: 3 servers, 6 messages, 18/18 deliveries OK"
        ), again.stdout
        assert "alpha.demo still holds #lobby:alpha.demo" in again.stdout
        assert "round 2: one message from each server" in again.stdout
        shown = subprocess.run(
            [
                str(ROOT / ".venv/bin/stubserver"),
                "room",
                "show",
                "#lobby:alpha.demo",
                "-c",
                str(tmp_path / "gamma.yaml"),
                "--json",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert set(json.loads(shown.stdout)["servers"]) == {s.server_name for s in TRIO}
    finally:
        stopped = subprocess.run(
            [str(ROOT / "demo/stop.sh")],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert stopped.returncode == 0
    for pid in pids.values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    assert running_pids(tmp_path, demo_processes(tmp_path)) == {}
