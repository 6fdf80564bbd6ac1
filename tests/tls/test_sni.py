"""SNI on listeners several servers share (issue 23): a real ``stubserver run`` on
loopback, real TLS with a test CA: the certificate served is the one of the server the
SNI names, the primary's without SNI or for an unknown name; the Host header chooses the
server that answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from stubserver.signing.keys import ServerSigningKey
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca
from stubserver.tls.sni import sni_host
from tests.support import StubProcess, https_request, run_stubserver_cli, start_stubserver

CA = make_ca("sni test CA")


def names_in(der: bytes | None) -> list[str]:
    """The DNS and IP names of a DER certificate."""
    assert der is not None
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return [str(n.value) for n in san.value]


def write_three_servers(folder: Path) -> Path:
    """The config of ``a.test`` (certificate also valid for 127.0.0.1) with ``s1.test`` and
    ``s2.test`` from a generator entry, on one listener; certificates from one CA."""

    def write_pair(stem: str, pair: KeyPair) -> None:
        (folder / f"{stem}.crt").write_bytes(pair.cert_pem)
        (folder / f"{stem}.key").write_bytes(pair.key_pem)

    write_pair("a", issue_cert(["a.test", "127.0.0.1"], CA))
    for i in (1, 2):
        write_pair(f"s{i}", issue_cert([f"s{i}.test"], CA))
    for stem in ("a", "s1", "s2"):
        key = ServerSigningKey.generate(f"a_{stem}")
        (folder / f"{stem}.signing.key").write_text(key.to_line())
    config = {
        "server_name": "a.test",
        "signing_key_path": "a.signing.key",
        "tls_certificate_path": "a.crt",
        "tls_private_key_path": "a.key",
        "listeners": [{"port": 0, "bind_addresses": ["127.0.0.1"]}],
        "servers": [
            {
                "server_name": "s{i}.test",
                "count": 2,
                "signing_key_path": "s{i}.signing.key",
                "tls_certificate_path": "s{i}.crt",
                "tls_private_key_path": "s{i}.key",
            }
        ],
    }
    path = folder / "stubserver.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def three_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubProcess]:
    """``stubserver run`` serving :func:`write_three_servers`' config."""
    with start_stubserver(write_three_servers(tmp_path_factory.mktemp("sni"))) as process:
        yield process


def test_a_servers_key_that_is_not_its_certificates_stops_start_up(tmp_path: Path) -> None:
    """A server's TLS key that does not belong to its certificate is a config error at
    start-up (exit 2, the server named), before anything is served."""
    path = write_three_servers(tmp_path)
    (tmp_path / "s2.key").write_bytes((tmp_path / "s1.key").read_bytes())
    result = run_stubserver_cli("run", "-c", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "servers[s2.test].tls_private_key_path" in result.stderr


def test_the_ready_line_names_every_server(three_servers: StubProcess) -> None:
    """The ready line keeps the primary's ``server_name`` and lists every server."""
    assert three_servers.ready["server_name"] == "a.test"
    assert three_servers.ready["servers"] == ["a.test", "s1.test", "s2.test"]


@pytest.mark.parametrize("name", ["s1.test", "s2.test", "a.test"])
def test_the_certificate_and_the_server_are_those_the_sni_and_host_name(
    three_servers: StubProcess, name: str
) -> None:
    """A handshake naming ``name`` is served ``name``'s certificate (verified against the
    CA), and the key document answered for Host ``name`` is ``name``'s."""
    response = https_request(
        three_servers.address,
        three_servers.port,
        "/_matrix/key/v2/server",
        ca_pem=CA.cert_pem,
        server_hostname=name,
    )
    assert name in names_in(response.peer_certificate_der)
    assert response.json()["server_name"] == name


def test_without_sni_the_primarys_certificate_is_served(three_servers: StubProcess) -> None:
    """No SNI (an IP address is never sent as SNI) gets the primary's certificate and the
    primary's answer."""
    response = https_request(
        three_servers.address,
        three_servers.port,
        "/_matrix/key/v2/server",
        ca_pem=CA.cert_pem,
        server_hostname="127.0.0.1",
    )
    assert "a.test" in names_in(response.peer_certificate_der)
    assert response.json()["server_name"] == "a.test"


@pytest.mark.parametrize(
    ("value", "host"),
    [(b"S1.Test", "s1.test"), (b"s1.test.", "s1.test"), (b"", None), (None, None), (b"\xff", None)],
)
def test_sni_host(value: bytes | None, host: str | None) -> None:
    """The SNI's host: lower-cased, without a trailing dot; None when absent or not ASCII."""
    assert sni_host(value) == host
