"""The demo's pieces (zone, CA, configs, process files) and one run of start.sh/stop.sh."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from stubserver.config import load_config
from stubserver.devtools.demo import demo_processes, main, running_pids
from stubserver.devtools.demo_pairs import PairResult, describe_path, format_matrix
from stubserver.devtools.demo_world import (
    CONTROL_PORT,
    DEFAULT_NETWORK,
    DEFAULT_PORT,
    DNS_ADDRESS,
    DNS_PORT,
    TRIO,
    WELL_KNOWN_PORT,
    demo_zone,
    parse_network,
    recorded_network,
    trio,
    write_demo_files,
)

ROOT = Path(__file__).resolve().parents[2]
#: Where the tests' demos run: /24s of loopback that no other test uses and that share no
#: address with the user's demo (127.0.0.0/24), which may be running (issue 19).
TESTS_NETWORK = ipaddress.IPv4Network("127.0.140.0/24")
#: Where the stand-in for a user's demo runs while the tests' demo runs beside it.
STAND_IN_NETWORK = ipaddress.IPv4Network("127.0.141.0/24")


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


@pytest.mark.parametrize("text", ["127.0.0.0/24", "127.0.140.0/24", " 127.255.1.0/24\n"])
def test_a_network_is_a_slash_24_of_ipv4_loopback(text: str) -> None:
    """A /24 anywhere in 127.0.0.0/8 is a demo network (surrounding blanks ignored)."""
    assert parse_network(text) == ipaddress.IPv4Network(text.strip())


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("127.0.140", "is not a network"),
        ("127.0.140.7/24", "is not a network"),
        ("10.0.0.0/24", "is not a /24 inside 127.0.0.0/8"),
        ("127.0.0.0/16", "is not a /24 inside 127.0.0.0/8"),
        ("::1/128", "is not a /24 inside 127.0.0.0/8"),
    ],
)
def test_anything_else_is_not_a_network(text: str, why: str) -> None:
    """Not a network, not loopback, not a /24, not IPv4: refused, saying which."""
    with pytest.raises(ValueError, match=why):
        parse_network(text)


def test_a_folder_made_for_another_network_has_every_address_there(tmp_path: Path) -> None:
    """A folder written for another network binds each listener at the default demo's host
    number and port in that network, points at its own DNS server there, and its zone and
    processes use no other address; the folder records its network."""
    write_demo_files(tmp_path / "default")
    write_demo_files(tmp_path / "tests", TESTS_NETWORK)
    assert recorded_network(tmp_path / "tests") == TESTS_NETWORK

    def binds(folder: str, slug: str) -> list[tuple[int, int]]:
        config = load_config(tmp_path / folder / f"{slug}.yaml")
        return [
            (int(ipaddress.IPv4Address(a)) & 0xFF, listener.port)
            for listener in config.listeners
            for a in listener.bind_addresses
        ]

    addresses: set[str] = set()
    for s in trio(TESTS_NETWORK):
        assert binds("tests", s.slug) == binds("default", s.slug)
        config = load_config(tmp_path / "tests" / f"{s.slug}.yaml")
        assert config.federation.dns_servers == (("127.0.140.53", DNS_PORT),)
        addresses.update(a for listener in config.listeners for a in listener.bind_addresses)
    zone = json.loads((tmp_path / "tests" / "zone.json").read_text())["records"]
    addresses.update(r["value"] for r in zone if r["type"] == "A")
    for p in demo_processes(tmp_path / "tests", TESTS_NETWORK):
        addresses.update(address for address, _ in p.binds)
    assert len(addresses) == 5
    assert all(ipaddress.IPv4Address(a) in TESTS_NETWORK for a in addresses)


def test_the_tests_demo_shares_no_address_with_the_default_demo(tmp_path: Path) -> None:
    """No address the tests' demo binds is one the default demo (the user's) binds, so both
    run at once; nor does the stand-in's."""
    default = {a for p in demo_processes(tmp_path) for a, _ in p.binds}
    for network in (TESTS_NETWORK, STAND_IN_NETWORK):
        ours = {a for p in demo_processes(tmp_path, network) for a, _ in p.binds}
        assert len(ours) == len(default) == 5
        assert not ours & default
    assert default == {"127.0.0.11", "127.0.0.12", "127.0.0.22", "127.0.0.23", DNS_ADDRESS}


def test_a_folder_keeps_the_network_it_was_made_for(tmp_path: Path) -> None:
    """A new folder has no network; one written before networks were recorded (files, no
    record) is the default one; one written for a network keeps it."""
    assert recorded_network(tmp_path) is None
    write_demo_files(tmp_path)
    (tmp_path / "network").unlink()
    assert recorded_network(tmp_path) == DEFAULT_NETWORK
    write_demo_files(tmp_path / "other", TESTS_NETWORK)
    assert recorded_network(tmp_path / "other") == TESTS_NETWORK


def test_start_refuses_another_network_than_the_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """start asked for another network than its folder was made for exits 2 naming both,
    and starts nothing."""
    write_demo_files(tmp_path, TESTS_NETWORK)
    assert main(["start", "--dir", str(tmp_path), "--network", str(STAND_IN_NETWORK)]) == 2
    err = capsys.readouterr().err
    assert f"was made for {TESTS_NETWORK}, not {STAND_IN_NETWORK}" in err
    assert not list(tmp_path.glob("*.pid"))
    assert recorded_network(tmp_path) == TESTS_NETWORK


@pytest.mark.parametrize("action", ["start", "stop"])
def test_a_folder_with_a_broken_network_record_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    """start and stop on a folder whose network file is not a demo network exit 2 naming
    the file, and start nothing."""
    (tmp_path / "network").write_text("10.0.0.0/24\n")
    assert main([action, "--dir", str(tmp_path)]) == 2
    assert f"{tmp_path}/network: '10.0.0.0/24' is not a /24" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.pid"))


def run_script(script: str, run_dir: Path, network: ipaddress.IPv4Network | None = None) -> str:
    """Run ``demo/<script>`` on the demo in ``run_dir`` (in ``network`` when given); its
    stdout, after asserting it succeeded."""
    env = {**os.environ, "STUBSERVER_DEMO_DIR": str(run_dir)}
    env.pop("STUBSERVER_DEMO_NETWORK", None)
    if network is not None:
        env["STUBSERVER_DEMO_NETWORK"] = str(network)
    done = subprocess.run(
        [str(ROOT / "demo" / script)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def room_servers(config: Path) -> set[str]:
    """The servers of the demo's room, as ``stubserver room show`` with ``config`` lists them."""
    shown = subprocess.run(
        [
            str(ROOT / ".venv/bin/stubserver"),
            "room",
            "show",
            "#lobby:alpha.demo",
            "-c",
            str(config),
            "--json",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    return set(json.loads(shown.stdout)["servers"])


def folder_digest(run_dir: Path) -> dict[str, str]:
    """Every file of ``run_dir`` by name, with a digest of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.iterdir())
        if p.is_file()
    }


def start_twice_and_stop(run_dir: Path) -> None:
    """start.sh brings the trio up in the tests' network, all six pairs pass and the room's
    3 messages reach all 3 servers (9/9); a second start keeps the servers and the room and
    adds a round (all rounds counted: 6 messages, 18/18); stop.sh, told nothing of the
    network (the folder says it), leaves no process behind."""
    pids: dict[str, int] = {}
    try:
        started = run_script("start.sh", run_dir, TESTS_NETWORK)
        assert "6/6 pairs OK" in started
        assert started.count(" OK") >= 6
        assert "well-known → beta-fed.demo:8449" in started
        assert "SRV → gamma-srv.demo:8450" in started
        assert "direct → alpha.demo:8448" in started
        last = started.strip().splitlines()[-1]
        assert last.startswith(
            "room #lobby:alpha.demo: 3 servers, 3 messages, 9/9 deliveries OK"
        ), started
        assert "beta.demo joined by alias" in started
        assert started.count("received, verified, accepted") == 6
        pids = running_pids(run_dir, demo_processes(run_dir, TESTS_NETWORK))
        assert set(pids) == {"dns", "alpha", "beta", "gamma"}
        log = [json.loads(x) for x in (run_dir / "beta.requests.jsonl").read_text().splitlines()]
        assert {e["origin"] for e in log if e["authenticated"]} == {"alpha.demo", "gamma.demo"}
        again = run_script("start.sh", run_dir, TESTS_NETWORK)
        assert running_pids(run_dir, demo_processes(run_dir, TESTS_NETWORK)) == pids
        last = again.strip().splitlines()[-1]
        assert last.startswith(
            "room #lobby:alpha.demo: 3 servers, 6 messages, 18/18 deliveries OK"
        ), again
        assert "alpha.demo still holds #lobby:alpha.demo" in again
        assert "round 2: one message from each server" in again
        assert room_servers(run_dir / "gamma.yaml") == {s.server_name for s in TRIO}
    finally:
        run_script("stop.sh", run_dir)
    for pid in pids.values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )
    assert running_pids(run_dir, demo_processes(run_dir, TESTS_NETWORK)) == {}


@pytest.mark.integration
def test_start_checks_every_pair_and_stop_leaves_nothing(tmp_path: Path) -> None:
    """The tests' demo (in its own network) starts, checks every pair, holds the room, starts
    again keeping servers and room, and stops without a trace: :func:`start_twice_and_stop`."""
    start_twice_and_stop(tmp_path)


@pytest.mark.integration
def test_the_tests_demo_runs_beside_a_running_demo_and_leaves_it_alone(tmp_path: Path) -> None:
    """With a demo already running (a stand-in for the user's, in a network of its own as the
    user's is in 127.0.0.0/24), the tests' demo starts, works and stops in full; the running
    demo keeps its processes and every byte of its folder, and still works: its next start
    finds its room and adds round 2 (18/18)."""
    user = tmp_path / "user"
    started = run_script("start.sh", user, STAND_IN_NETWORK)
    try:
        assert "room #lobby:alpha.demo: 3 servers, 3 messages, 9/9 deliveries OK" in started
        procs = demo_processes(user, STAND_IN_NETWORK)
        pids = running_pids(user, procs)
        assert set(pids) == {"dns", "alpha", "beta", "gamma"}
        before = folder_digest(user)
        start_twice_and_stop(tmp_path / "tests")
        assert running_pids(user, procs) == pids
        assert folder_digest(user) == before
        again = run_script("start.sh", user)
        assert "alpha.demo still holds #lobby:alpha.demo" in again
        assert "room #lobby:alpha.demo: 3 servers, 6 messages, 18/18 deliveries OK" in again
        assert running_pids(user, procs) == pids
    finally:
        run_script("stop.sh", user)
    assert running_pids(user, procs) == {}
