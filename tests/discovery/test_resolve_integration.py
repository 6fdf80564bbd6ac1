"""``stubserver resolve`` and ``stubserver keys`` against real processes on loopback.

A real ``python -m stubserver.devtools.dns_server`` serves a test zone; real ``stubserver run``
processes, each on its own 127.0.0.x address with a certificate from a test CA, are
reached through every resolution route: default port, explicit port, IP literal,
.well-known (to the default port and to SRV), ``_matrix-fed._tcp`` SRV and legacy
``_matrix._tcp`` SRV. The commands run as subprocesses with the flags a user would give.
Bad peers (wrong name, unknown CA, silent, SRV to nowhere, SERVFAIL, DNS timeout,
blocked address) each fail with a clear error naming the step, in bounded time.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stubserver.tls.certificates import KeyPair, make_ca
from tests.support import (
    REPO_ROOT,
    run_stubserver_cli,
    start_stubserver,
    write_stub_files,
)

pytestmark = pytest.mark.integration

#: Generous bound on one CLI run, in seconds (the slowest case waits out a 10 s deadline).
CLI_TIMEOUT_SECONDS = 40.0


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Federation:
    tmp: Path
    ca: KeyPair
    dns: str
    default_port: int
    srv_port: int
    well_known_port: int

    def args(self, *, allow: bool = True) -> list[str]:
        flags = [
            "--dns-server",
            self.dns,
            "--ca-file",
            str(self.tmp / "ca.crt"),
            "--well-known-port",
            str(self.well_known_port),
            "--default-port",
            str(self.default_port),
        ]
        return [*flags, "--allow-ip", "127.0.0.0/8"] if allow else flags

    def run(self, *args: str, allow: bool = True) -> subprocess.CompletedProcess[str]:
        result = run_stubserver_cli(*args, *self.args(allow=allow), timeout=CLI_TIMEOUT_SECONDS)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def resolve(self, name: str, *, allow: bool = True) -> tuple[int, dict[str, Any]]:
        result = self.run("resolve", name, "--json", allow=allow)
        return result.returncode, json.loads(result.stdout)

    def keys(self, name: str) -> tuple[int, dict[str, Any]]:
        result = self.run("keys", name, "--json")
        return result.returncode, json.loads(result.stdout)


def listener(address: str, port: int, resources: list[str]) -> dict[str, Any]:
    return {"port": port, "bind_addresses": [address], "resources": resources}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    tmp = tmp_path_factory.mktemp("federation")
    ca = make_ca("integration CA")
    (tmp / "ca.crt").write_bytes(ca.cert_pem)
    default_port = free_port("127.0.0.31")
    srv_port = free_port("127.0.0.31")
    well_known_port = free_port("127.0.0.31")

    zone = {
        "records": [
            {"name": "alpha.test", "type": "A", "value": "127.0.0.31"},
            {"name": "beta.test", "type": "A", "value": "127.0.0.32"},
            {"name": "beta-fed.test", "type": "A", "value": "127.0.0.33"},
            {"name": "gamma.test", "type": "A", "value": "127.0.0.34"},
            {
                "name": "_matrix-fed._tcp.gamma.test",
                "type": "SRV",
                "priority": 10,
                "weight": 5,
                "port": srv_port,
                "target": "gamma-srv.test",
            },
            {"name": "gamma-srv.test", "type": "A", "value": "127.0.0.34"},
            {
                "name": "_matrix._tcp.delta.test",
                "type": "SRV",
                "priority": 10,
                "weight": 5,
                "port": srv_port,
                "target": "delta-srv.test",
            },
            {"name": "delta-srv.test", "type": "A", "value": "127.0.0.35"},
            {"name": "epsilon.test", "type": "A", "value": "127.0.0.36"},
            {
                "name": "_matrix-fed._tcp.epsilon-fed.test",
                "type": "SRV",
                "priority": 10,
                "weight": 5,
                "port": srv_port,
                "target": "epsilon-srv.test",
            },
            {"name": "epsilon-srv.test", "type": "A", "value": "127.0.0.37"},
            {"name": "wrongname.test", "type": "A", "value": "127.0.0.38"},
            {"name": "unknownca.test", "type": "A", "value": "127.0.0.39"},
            {"name": "silent.test", "type": "A", "value": "127.0.0.40"},
            {
                "name": "_matrix-fed._tcp.ghost.test",
                "type": "SRV",
                "port": srv_port,
                "target": "nothing.test",
            },
            {"name": "_matrix-fed._tcp.broken.test", "type": "SERVFAIL"},
            {"name": "broken.test", "type": "A", "value": "127.0.0.41"},
            {"name": "_matrix-fed._tcp.slow.test", "type": "TIMEOUT"},
            {"name": "slow.test", "type": "A", "value": "127.0.0.41"},
            {"name": "_matrix-fed._tcp.refused.test", "type": "SRV", "port": 0, "target": "."},
        ]
    }
    (tmp / "zone.json").write_text(json.dumps(zone))

    stubs = [
        (
            "alpha.test",
            ca,
            ["alpha.test", "127.0.0.31"],
            [listener("127.0.0.31", default_port, ["federation"])],
            None,
        ),
        (
            "beta.test",
            ca,
            ["beta.test", "beta-fed.test"],
            [
                listener("127.0.0.32", well_known_port, ["well_known"]),
                listener("127.0.0.33", default_port, ["federation"]),
            ],
            "beta-fed.test",
        ),
        (
            f"127.0.0.42:{default_port}",
            ca,
            ["127.0.0.42"],
            [listener("127.0.0.42", default_port, ["federation"])],
            None,
        ),
        (
            "gamma.test",
            ca,
            ["gamma.test"],
            [listener("127.0.0.34", srv_port, ["federation"])],
            None,
        ),
        (
            "delta.test",
            ca,
            ["delta.test"],
            [listener("127.0.0.35", srv_port, ["federation"])],
            None,
        ),
        (
            "epsilon.test",
            ca,
            ["epsilon.test", "epsilon-fed.test"],
            [
                listener("127.0.0.36", well_known_port, ["well_known"]),
                listener("127.0.0.37", srv_port, ["federation"]),
            ],
            "epsilon-fed.test",
        ),
        (
            "wrongname.test",
            ca,
            ["other.test"],
            [listener("127.0.0.38", default_port, ["federation"])],
            None,
        ),
        (
            "unknownca.test",
            None,
            ["unknownca.test"],
            [listener("127.0.0.39", default_port, ["federation"])],
            None,
        ),
    ]
    with ExitStack() as stack:
        dns = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stubserver.devtools.dns_server",
                "--zone",
                str(tmp / "zone.json"),
                "--listen",
                "127.0.0.53:0",
            ],
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        stack.callback(dns.wait, 10)
        stack.callback(dns.terminate)
        assert dns.stdout is not None
        ready = json.loads(dns.stdout.readline())
        assert ready["ready"] is True
        for name, issuer, tls_names, listeners, wellknown in stubs:
            files = write_stub_files(
                tmp,
                name,
                issuer,
                tls_names=tls_names,
                wellknown=wellknown,
                extra_config={"listeners": listeners},
            )
            stack.enter_context(start_stubserver(files.config_path))
        # A peer that accepts TCP connections and never says anything.
        silent = socket.socket()
        silent.bind(("127.0.0.40", default_port))
        silent.listen(16)
        stack.callback(silent.close)
        yield Federation(tmp, ca, ready["listen"][0], default_port, srv_port, well_known_port)


def only_target(output: dict[str, Any]) -> dict[str, Any]:
    assert output["error"] is None
    assert len(output["targets"]) == 1
    target: dict[str, Any] = output["targets"][0]
    return target


def test_default_port(federation: Federation) -> None:
    """No delegation, no SRV: the hostname on the default port, .well-known consulted."""
    status, out = federation.resolve("alpha.test")
    assert status == 0
    assert out["well_known"]["m.server"] is None
    assert out["well_known"]["error"]
    assert only_target(out) == {
        "host": "alpha.test",
        "port": federation.default_port,
        "addresses": ["127.0.0.31"],
        "host_header": "alpha.test",
        "tls_server_name": "alpha.test",
        "source": "default_port",
    }


def test_explicit_port(federation: Federation) -> None:
    """An explicit port skips .well-known; Host carries the port."""
    status, out = federation.resolve(f"alpha.test:{federation.default_port}")
    assert status == 0
    assert out["well_known"] is None
    target = only_target(out)
    assert (target["source"], target["host_header"]) == (
        "explicit_port",
        f"alpha.test:{federation.default_port}",
    )


def test_keys_over_ip_literal(federation: Federation) -> None:
    """Keys fetched from an IP literal verify against the certificate's IP SAN."""
    status, out = federation.keys(f"127.0.0.42:{federation.default_port}")
    assert status == 0, out["error"]
    assert out["target"]["tls_server_name"] == "127.0.0.42"
    assert out["target"]["host_header"] == f"127.0.0.42:{federation.default_port}"
    assert out["target"]["source"] == "ip_literal"


def test_keys_naming_another_server(federation: Federation) -> None:
    """Keys whose response names another server fail (exit 1), the body still shown."""
    status, out = federation.keys(f"127.0.0.31:{federation.default_port}")
    assert status == 1
    assert "names server 'alpha.test'" in out["error"]
    assert out["response"]["server_name"] == "alpha.test"


def test_keys_direct(federation: Federation) -> None:
    """Keys of a direct server verify: named, self-signed, current."""
    status, out = federation.keys("alpha.test")
    assert status == 0, out["error"]
    assert out["signature_ok"] is True
    assert out["error"] is None
    assert out["response"]["server_name"] == "alpha.test"
    assert list(out["verify_keys"]) == ["ed25519:a_test"]


def test_well_known_to_default_port(federation: Federation) -> None:
    """.well-known delegation without port → delegated name on the default port."""
    status, out = federation.resolve("beta.test")
    assert status == 0
    assert out["well_known"]["m.server"] == "beta-fed.test"
    assert out["well_known"]["status"] == 200
    assert out["delegated_server_name"] == "beta-fed.test"
    target = only_target(out)
    assert (target["host"], target["addresses"], target["source"]) == (
        "beta-fed.test",
        ["127.0.0.33"],
        "default_port",
    )
    assert (target["host_header"], target["tls_server_name"]) == ("beta-fed.test", "beta-fed.test")
    status, keys = federation.keys("beta.test")
    assert status == 0, keys["error"]


def test_matrix_fed_srv(federation: Federation) -> None:
    """_matrix-fed._tcp SRV: the SRV target and port, certificate checked for the name."""
    status, out = federation.resolve("gamma.test")
    assert status == 0
    target = only_target(out)
    assert target == {
        "host": "gamma-srv.test",
        "port": federation.srv_port,
        "addresses": ["127.0.0.34"],
        "host_header": "gamma.test",
        "tls_server_name": "gamma.test",
        "source": "srv",
    }
    status, keys = federation.keys("gamma.test")
    assert status == 0, keys["error"]
    assert keys["target"]["host"] == "gamma-srv.test"


def test_legacy_srv(federation: Federation) -> None:
    """_matrix._tcp SRV is used when there is no _matrix-fed._tcp record."""
    status, out = federation.resolve("delta.test")
    assert status == 0
    assert only_target(out)["source"] == "legacy_srv"
    status, keys = federation.keys("delta.test")
    assert status == 0, keys["error"]


def test_well_known_to_srv(federation: Federation) -> None:
    """.well-known then the delegated name's SRV; Host and certificate the delegated name."""
    status, out = federation.resolve("epsilon.test")
    assert status == 0
    target = only_target(out)
    assert (target["host"], target["source"]) == ("epsilon-srv.test", "srv")
    assert (target["host_header"], target["tls_server_name"]) == (
        "epsilon-fed.test",
        "epsilon-fed.test",
    )
    status, keys = federation.keys("epsilon.test")
    assert status == 0, keys["error"]


def test_human_output(federation: Federation) -> None:
    """Without --json the output is short and names each target."""
    result = federation.run("resolve", "epsilon.test")
    assert result.returncode == 0
    assert "epsilon-srv.test" in result.stdout
    assert "Host: epsilon-fed.test" in result.stdout


def test_wrong_certificate_name(federation: Federation) -> None:
    """A certificate for another name fails the key fetch naming TLS and the name."""
    status, out = federation.keys("wrongname.test")
    assert status == 1
    assert "TLS" in out["error"]
    assert "wrongname.test" in out["error"]


def test_unknown_ca(federation: Federation) -> None:
    """A certificate from an untrusted issuer fails verification."""
    status, out = federation.keys("unknownca.test")
    assert status == 1
    assert "TLS" in out["error"]


def test_silent_peer_bounded(federation: Federation) -> None:
    """A peer that accepts TCP and never answers fails after the 10 s deadline."""
    status, out = federation.keys("silent.test")
    assert status == 1
    assert "timed out" in out["error"]


def test_srv_to_nothing(federation: Federation) -> None:
    """An SRV target that does not resolve fails at the addresses step naming it."""
    status, out = federation.resolve("ghost.test")
    assert status == 1
    assert "nothing.test" in out["error"]


def test_servfail(federation: Federation) -> None:
    """SERVFAIL on the SRV lookup fails resolution naming the SRV name."""
    status, out = federation.resolve("broken.test")
    assert status == 1
    assert "_matrix-fed._tcp.broken.test" in out["error"]
    assert "SERVFAIL" in out["error"]


def test_dns_timeout(federation: Federation) -> None:
    """An unanswered SRV query fails after the DNS timeouts."""
    status, out = federation.resolve("slow.test")
    assert status == 1
    assert "timed out" in out["error"]


def test_srv_refused(federation: Federation) -> None:
    """A '.' SRV target means the service is not available there."""
    status, out = federation.resolve("refused.test")
    assert status == 1
    assert "not available" in out["error"]


def test_blocked_without_allow_ip(federation: Federation) -> None:
    """Without --allow-ip, loopback is blocked and the error says how to allow it."""
    status, out = federation.resolve("alpha.test", allow=False)
    assert status == 1
    assert "127.0.0.31" in out["error"]
    assert "--allow-ip" in out["error"]


def test_bad_name_is_usage_error(federation: Federation) -> None:
    """A malformed server name is bad usage (exit 2)."""
    result = federation.run("resolve", "https://alpha.test")
    assert result.returncode == 2
