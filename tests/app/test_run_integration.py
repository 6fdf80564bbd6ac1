"""``stubserver run``: its pure parts, then as a user runs it (real process, TLS, port 0)."""

from __future__ import annotations

import errno
import signal
import socket
import time
from pathlib import Path

import pytest
import signedjson.key
import signedjson.sign
from cryptography import x509

from stubserver.app.run import ignorable_bind_failure
from stubserver.config import ConfigError
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca
from stubserver.tls.server import server_tls_options
from tests.support import (
    https_get_json,
    https_request,
    run_stubserver_cli,
    start_stubserver,
    write_stub,
    write_stub_files,
)


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    """One private CA for the module."""
    return make_ca("stubserver integration test CA")


@pytest.mark.parametrize(
    ("address", "bound", "number", "ignored"),
    [
        ("0.0.0.0", ["::"], errno.EADDRINUSE, True),
        ("0.0.0.0", [], errno.EADDRINUSE, False),
        ("0.0.0.0", ["::"], errno.EACCES, False),
        ("127.0.0.1", ["::"], errno.EADDRINUSE, False),
        ("::", ["0.0.0.0"], errno.EADDRINUSE, False),
    ],
)
def test_ignorable_bind_failure(address: str, bound: list[str], number: int, ignored: bool) -> None:
    """Only 0.0.0.0 failing with EADDRINUSE after a dual-stack :: is ignored (as Synapse)."""
    assert ignorable_bind_failure(address, bound, number) is ignored


def test_tls_options_with_chain(tmp_path: Path, ca: KeyPair) -> None:
    """A leaf followed by an intermediate loads; the context is built at once."""
    leaf = issue_cert(["beta.test"], ca)
    (tmp_path / "chain.crt").write_bytes(leaf.cert_pem + ca.cert_pem)
    (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
    options = server_tls_options(tmp_path / "chain.crt", tmp_path / "leaf.key")
    assert options.extraCertChain is not None
    assert len(options.extraCertChain) == 1


@pytest.mark.parametrize(
    "case",
    [
        ("mismatch", "other", "tls_private_key_path", "is not the private key"),
        ("garbage", "leaf", "tls_certificate_path", "holds no PEM certificate"),
        ("leaf", "garbage", "tls_private_key_path", "holds no PEM private key"),
        ("missing", "leaf", "tls_certificate_path", "cannot read"),
        ("leaf", "missing", "tls_private_key_path", "cannot read"),
    ],
)
def test_tls_options_errors(tmp_path: Path, ca: KeyPair, case: tuple[str, str, str, str]) -> None:
    """Certificate and key faults are ConfigErrors naming the setting."""
    cert, key, bad_key, problem = case
    leaf = issue_cert(["beta.test"], ca)
    files = {
        "leaf": (leaf.cert_pem, leaf.key_pem),
        "mismatch": (leaf.cert_pem, leaf.key_pem),
        "other": (b"", issue_cert(["other.test"], ca).key_pem),
        "garbage": (b"not pem", b"not pem"),
    }
    cert_path, key_path = tmp_path / "c.pem", tmp_path / "k.pem"
    if cert != "missing":
        cert_path.write_bytes(files[cert][0])
    if key != "missing":
        key_path.write_bytes(files[key][1])
    with pytest.raises(ConfigError) as info:
        server_tls_options(cert_path, key_path)
    assert info.value.key == bad_key
    assert problem in info.value.problem


@pytest.mark.integration
def test_ready_line_and_key_document(tmp_path: Path, ca: KeyPair) -> None:
    """The ready line names the bound port; the key document verifies with signedjson."""
    files = write_stub_files(tmp_path, "beta.test", ca, bind="127.0.0.22")
    with start_stubserver(files.config_path) as stub:
        assert stub.ready == {
            "ready": True,
            "server_name": "beta.test",
            "listeners": [
                {"address": "127.0.0.22", "port": stub.port, "resources": ["federation"]}
            ],
        }
        assert stub.port > 0
        status, body = https_get_json(
            stub.address,
            stub.port,
            "/_matrix/key/v2/server",
            ca_pem=ca.cert_pem,
            server_hostname="beta.test",
        )
    assert status == 200
    assert body["server_name"] == "beta.test"
    assert body["valid_until_ts"] > time.time() * 1000
    key_id = files.signing_key.key_id
    verify_key = signedjson.key.decode_verify_key_base64(
        "ed25519", files.signing_key.version, body["verify_keys"][key_id]["key"]
    )
    signedjson.sign.verify_signed_json(body, "beta.test", verify_key)


@pytest.mark.integration
def test_certificate_served_is_the_configured_one(tmp_path: Path, ca: KeyPair) -> None:
    """The handshake presents the configured certificate, which verifies against the CA."""
    files = write_stub_files(tmp_path, "gamma.test", ca, bind="127.0.0.23")
    with start_stubserver(files.config_path) as stub:
        response = https_request(
            stub.address,
            stub.port,
            "/_matrix/federation/v1/version",
            ca_pem=ca.cert_pem,
            server_hostname="gamma.test",
        )
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["server"]["name"] == "stubserver"
    assert response.peer_certificate_der is not None
    served = x509.load_der_x509_certificate(response.peer_certificate_der)
    assert served == files.tls.certificate


@pytest.mark.integration
def test_wrong_name_fails_verification(tmp_path: Path, ca: KeyPair) -> None:
    """A client that expects another name rejects the certificate: verification is real."""
    config = write_stub(tmp_path, "delta.test", ca, bind="127.0.0.24")
    with start_stubserver(config) as stub, pytest.raises(OSError, match="certificate"):
        https_request(
            stub.address,
            stub.port,
            "/_matrix/federation/v1/version",
            ca_pem=ca.cert_pem,
            server_hostname="other.test",
        )


@pytest.mark.integration
def test_well_known_listener(tmp_path: Path, ca: KeyPair) -> None:
    """A well_known listener serves m.server with a Cache-Control max-age."""
    config = write_stub(
        tmp_path,
        "epsilon.test",
        ca,
        bind="127.0.0.25",
        resources=["well_known"],
        wellknown="epsilon-fed.test:8448",
    )
    with start_stubserver(config) as stub:
        response = https_request(
            stub.address,
            stub.port,
            "/.well-known/matrix/server",
            ca_pem=ca.cert_pem,
            server_hostname="epsilon.test",
        )
        keys = https_request(
            stub.address,
            stub.port,
            "/_matrix/key/v2/server",
            ca_pem=ca.cert_pem,
            server_hostname="epsilon.test",
        )
    assert response.status == 200
    assert response.json() == {"m.server": "epsilon-fed.test:8448"}
    assert response.headers["cache-control"] == "max-age=86400"
    assert keys.status == 404
    assert keys.json()["errcode"] == "M_UNRECOGNIZED"


@pytest.mark.integration
def test_ip_literal_server_name(tmp_path: Path, ca: KeyPair) -> None:
    """An IP-literal server gets an IP SAN that a client verifying the IP accepts."""
    config = write_stub(tmp_path, "127.0.0.26", ca, bind="127.0.0.26")
    with start_stubserver(config) as stub:
        status, body = https_get_json(
            stub.address,
            stub.port,
            "/_matrix/federation/v1/version",
            ca_pem=ca.cert_pem,
            server_hostname="127.0.0.26",
        )
    assert status == 200
    assert body["server"]["name"] == "stubserver"


@pytest.mark.integration
def test_two_addresses_share_the_port_chosen_for_port_zero(tmp_path: Path, ca: KeyPair) -> None:
    """Port 0 picks one free port; the listener's second address binds the same port."""
    config = write_stub(tmp_path, "zeta.test", ca, bind=["127.0.0.27", "127.0.0.28"])
    with start_stubserver(config) as stub:
        ports = {entry["port"] for entry in stub.listeners}
        addresses = [entry["address"] for entry in stub.listeners]
    assert addresses == ["127.0.0.27", "127.0.0.28"]
    assert len(ports) == 1


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.integration
def test_signal_exits_zero_and_closes_listeners(
    tmp_path: Path, ca: KeyPair, sig: signal.Signals
) -> None:
    """SIGTERM and SIGINT stop the server with exit status 0 and free the port."""
    config = write_stub(tmp_path, "eta.test", ca, bind="127.0.0.29")
    with start_stubserver(config) as stub:
        status = stub.terminate(sig)
        stderr = stub.stderr_text()
        address, port = stub.address, stub.port
    assert status == 0, stderr
    with socket.create_server((address, port)):
        pass


@pytest.mark.integration
def test_sigint_stops_a_server_started_with_sigint_ignored(tmp_path: Path, ca: KeyPair) -> None:
    """A server started as a background job (SIGINT ignored) still stops on SIGINT, exit 0."""
    config = write_stub(tmp_path, "iota.test", ca, bind="127.0.0.29")
    with start_stubserver(config, sigint_ignored=True) as stub:
        status = stub.terminate(signal.SIGINT)
        stderr = stub.stderr_text()
    assert status == 0, stderr


@pytest.mark.integration
def test_port_in_use_is_one_line_and_exit_2(tmp_path: Path, ca: KeyPair) -> None:
    """A port already in use stops start-up with one line on stderr and exit status 2."""
    with socket.create_server(("127.0.0.30", 0)) as taken:
        port = taken.getsockname()[1]
        config = write_stub(tmp_path, "theta.test", ca, bind="127.0.0.30", port=port)
        result = run_stubserver_cli("run", "-c", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"stubserver: config error: listeners[0].bind_addresses[0]: "
        f"cannot listen on 127.0.0.30:{port}: address already in use"
    ]


@pytest.mark.integration
def test_certificate_key_mismatch_exits_2(tmp_path: Path, ca: KeyPair) -> None:
    """A private key that is not the certificate's stops start-up with exit status 2."""
    config = write_stub(tmp_path, "iota.test", ca, bind="127.0.0.31")
    (config.parent / "tls.key").write_bytes(issue_cert(["other.test"], ca).key_pem)
    result = run_stubserver_cli("run", "-c", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "listeners[0].tls_private_key_path" in result.stderr
    assert "is not the private key of the certificate" in result.stderr


@pytest.mark.integration
def test_bad_signing_key_file_exits_2(tmp_path: Path, ca: KeyPair) -> None:
    """A malformed signing-key file stops start-up with one line and exit status 2."""
    config = write_stub(tmp_path, "kappa.test", ca, bind="127.0.0.32")
    (config.parent / "signing.key").write_text("ed25519 a_test not-base64!\n")
    result = run_stubserver_cli("run", "-c", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "signing_key_path" in result.stderr


@pytest.mark.integration
def test_generated_config_runs(tmp_path: Path, ca: KeyPair) -> None:
    """``generate`` with a CA writes a config that ``run`` serves and a client verifies."""
    # The generated config has a control listener, served by the room service.
    pytest.importorskip("stubserver.rooms.service")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "ca.key").write_bytes(ca.key_pem)
    result = run_stubserver_cli(
        "generate",
        "--control-port",
        "0",
        "--server-name",
        "lambda.test",
        "--dir",
        str(tmp_path / "keys"),
        "--port",
        "0",
        "--bind",
        "127.0.0.33",
        "--ca-cert",
        str(tmp_path / "ca.crt"),
        "--ca-key",
        str(tmp_path / "ca.key"),
        "--serve-wellknown",
        "lambda-fed.test:443",
    )
    assert result.returncode == 0, result.stderr
    config = Path(result.stdout.strip())
    with start_stubserver(config) as stub:
        status, body = https_get_json(
            stub.address,
            stub.port,
            "/.well-known/matrix/server",
            ca_pem=ca.cert_pem,
            server_hostname="lambda.test",
        )
    assert status == 200
    assert body == {"m.server": "lambda-fed.test:443"}
