"""``stubserver generate``: files, modes, names, certificates, refusal to overwrite."""

from __future__ import annotations

import ipaddress
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stubserver.cli.generate import main
from stubserver.cli.main import build_parser
from stubserver.config import ConfigError, load_config
from stubserver.signing.key_files import paths_for
from stubserver.tls.certificates import KeyPair, make_ca


def generate(tmp_path: Path, *args: str) -> int:
    """Run ``generate`` in-process with ``--dir tmp_path/keys`` and ``args``."""
    parsed = build_parser().parse_args(["generate", "--dir", str(tmp_path / "keys"), *args])
    return main(parsed)


def sans(cert_path: Path) -> list[object]:
    """The subject-alternative names of the certificate at ``cert_path``."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [*ext.get_values_for_type(x509.DNSName), *ext.get_values_for_type(x509.IPAddress)]


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    """A test CA."""
    return make_ca("generate test CA")


def test_writes_four_files_with_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Key files are 0600, the certificate and config 0644; the config's path is printed."""
    assert generate(tmp_path, "--server-name", "beta.test") == 0
    paths = paths_for(tmp_path / "keys", "beta.test")
    assert capsys.readouterr().out == f"{paths.config}\n"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths.all()}
    assert modes == {
        "beta.test.signing.key": 0o600,
        "beta.test.key": 0o600,
        "beta.test.crt": 0o644,
        "beta.test.yaml": 0o644,
    }
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == sorted(modes)


def test_config_loads_and_names_the_files(tmp_path: Path) -> None:
    """The written config loads and points at the generated key and certificate."""
    generate(tmp_path, "--server-name", "beta.test", "--port", "8449", "--bind", "127.0.0.22")
    paths = paths_for(tmp_path / "keys", "beta.test")
    config = load_config(paths.config)
    assert config.server_name == "beta.test"
    assert re.fullmatch(r"a_[a-zA-Z0-9]{4}", config.signing_key.version)
    listener, control = config.listeners
    assert (control.port, control.bind_addresses) == (8009, ("127.0.0.1",))
    assert control.resources == frozenset({"control"})
    assert (listener.port, listener.bind_addresses) == (8449, ("127.0.0.22",))
    assert listener.resources == frozenset({"federation"})
    assert listener.tls_certificate_path == paths.certificate.resolve()
    assert listener.tls_private_key_path == paths.private_key.resolve()
    assert config.serve_server_wellknown is None


def test_signing_key_in_synapse_format(tmp_path: Path) -> None:
    """The signing key file is one 'ed25519 <version> <base64 seed>' line."""
    generate(tmp_path, "--server-name", "beta.test")
    line = paths_for(tmp_path / "keys", "beta.test").signing_key.read_text()
    assert re.fullmatch(r"ed25519 a_[a-zA-Z0-9]{4} [A-Za-z0-9+/]{43}\n", line)


def test_serve_wellknown(tmp_path: Path) -> None:
    """--serve-wellknown sets serve_server_wellknown and adds the well_known resource."""
    generate(tmp_path, "--server-name", "beta.test", "--serve-wellknown", "beta-fed.test:8448")
    config = load_config(paths_for(tmp_path / "keys", "beta.test").config)
    assert config.serve_server_wellknown == "beta-fed.test:8448"
    assert config.listeners[0].resources == frozenset({"federation", "well_known"})


def test_self_signed_default_name(tmp_path: Path) -> None:
    """Without --tls-name the certificate names the server name's bare host, self-signed."""
    generate(tmp_path, "--server-name", "beta.test:8448")
    cert_path = paths_for(tmp_path / "keys", "beta.test:8448").certificate
    assert sans(cert_path) == ["beta.test"]
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)


def test_ca_issued_and_ip_sans(tmp_path: Path, ca: KeyPair) -> None:
    """With a CA the certificate verifies against it; IP names become IP SANs."""
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "ca.key").write_bytes(ca.key_pem)
    code = generate(
        tmp_path,
        "--server-name",
        "beta.test",
        "--tls-name",
        "beta.test",
        "--tls-name",
        "127.0.0.22",
        "--tls-name",
        "::1",
        "--ca-cert",
        str(tmp_path / "ca.crt"),
        "--ca-key",
        str(tmp_path / "ca.key"),
    )
    assert code == 0
    paths = paths_for(tmp_path / "keys", "beta.test")
    assert sans(paths.certificate) == [
        "beta.test",
        ipaddress.ip_address("127.0.0.22"),
        ipaddress.ip_address("::1"),
    ]
    cert = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    cert.verify_directly_issued_by(ca.certificate)
    config = load_config(paths.config)
    assert config.federation.ca_files == ((tmp_path / "ca.crt").resolve(),)


def test_ip_literal_server_name(tmp_path: Path) -> None:
    """An IPv6 literal server name gets safe file names and an IP SAN."""
    assert generate(tmp_path, "--server-name", "[::1]:8448") == 0
    paths = paths_for(tmp_path / "keys", "[::1]:8448")
    assert paths.config.name == "__1_8448.yaml"
    assert sans(paths.certificate) == [ipaddress.ip_address("::1")]
    assert load_config(paths.config).server_name == "[::1]:8448"


def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second run without --force exits 2 with one line and leaves the key unchanged."""
    generate(tmp_path, "--server-name", "beta.test")
    key_path = paths_for(tmp_path / "keys", "beta.test").signing_key
    before = key_path.read_bytes()
    capsys.readouterr()
    assert generate(tmp_path, "--server-name", "beta.test") == 2
    err = capsys.readouterr().err
    assert err == f"stubserver: {key_path} already exists; pass --force to replace it\n"
    assert key_path.read_bytes() == before


def test_force_replaces(tmp_path: Path) -> None:
    """--force writes a new key over the old one, still 0600."""
    generate(tmp_path, "--server-name", "beta.test")
    key_path = paths_for(tmp_path / "keys", "beta.test").signing_key
    before = key_path.read_bytes()
    assert generate(tmp_path, "--server-name", "beta.test", "--force") == 0
    assert key_path.read_bytes() != before
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert not [p for p in (tmp_path / "keys").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--server-name", "bad name"], "--server-name"),
        (["--server-name", "beta.test", "--port", "70000"], "--port"),
        (["--server-name", "beta.test", "--bind", "localhost"], "--bind"),
        (["--server-name", "beta.test", "--ca-cert", "ca.crt"], "--ca-cert"),
        (["--server-name", "beta.test", "--serve-wellknown", "a b"], "--serve-wellknown"),
        (
            ["--server-name", "beta.test", "--ca-cert", "/nx.crt", "--ca-key", "/nx.key"],
            "--ca-cert",
        ),
    ],
)
def test_bad_arguments(tmp_path: Path, args: list[str], key: str) -> None:
    """Bad arguments raise ConfigError naming the flag (exit 2) and write nothing."""
    with pytest.raises(ConfigError) as info:
        generate(tmp_path, *args)
    assert info.value.key == key
    assert not (tmp_path / "keys").exists()


def test_tls_key_is_ec(tmp_path: Path) -> None:
    """The TLS private key is an unencrypted PEM EC key matching the certificate."""
    from cryptography.hazmat.primitives import serialization

    generate(tmp_path, "--server-name", "beta.test")
    paths = paths_for(tmp_path / "keys", "beta.test")
    key = serialization.load_pem_private_key(paths.private_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert = x509.load_pem_x509_certificate(paths.certificate.read_bytes())
    assert cert.public_key() == key.public_key()


def test_control_listener_and_token(tmp_path: Path) -> None:
    """The config has a loopback control listener on --control-port, a random token of
    at least 32 URL-safe characters (a new one each time) and the room defaults."""
    generate(tmp_path / "a", "--server-name", "beta.test", "--control-port", "8123")
    generate(tmp_path / "b", "--server-name", "beta.test")
    first = load_config(paths_for(tmp_path / "a" / "keys", "beta.test").config)
    second = load_config(paths_for(tmp_path / "b" / "keys", "beta.test").config)
    (control,) = [listener for listener in first.listeners if listener.is_control]
    assert (control.port, control.bind_addresses) == (8123, ("127.0.0.1",))
    assert control.tls_certificate_path is None
    assert first.control_token is not None and second.control_token is not None
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", first.control_token)
    assert first.control_token != second.control_token
    assert (first.default_room_version, first.invites) == ("12", "accept")


def test_control_port_out_of_range(tmp_path: Path) -> None:
    """--control-port outside 0-65535 is a ConfigError naming the flag."""
    with pytest.raises(ConfigError) as info:
        generate(tmp_path, "--server-name", "beta.test", "--control-port", "70000")
    assert info.value.key == "--control-port"


def test_count_writes_one_config_of_n_servers_from_one_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--count 3 --server-name 's{i}.test'``: one config (named after the first, the
    primary) whose generator entry serves the other two, each with its own key (0600) and a
    certificate for its name from one CA made here, which the config trusts."""
    assert generate(tmp_path, "--count", "3", "--server-name", "s{i}.test", "--port", "0") == 0
    folder = tmp_path / "keys"
    config_path = Path(capsys.readouterr().out.strip())
    assert config_path == paths_for(folder, "s1.test").config
    config = load_config(config_path)
    servers = config.every_server
    assert [s.server_name for s in servers] == ["s1.test", "s2.test", "s3.test"]
    assert len({s.signing_key.key_id for s in servers}) == 3
    ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    assert config.federation.ca_files == ((folder / "ca.crt").resolve(),)
    for server in servers:
        assert server.tls_certificate_path is not None
        assert sans(server.tls_certificate_path) == [server.server_name]
        cert = x509.load_pem_x509_certificate(server.tls_certificate_path.read_bytes())
        assert cert.issuer == ca_cert.subject
        key_path = paths_for(folder, server.server_name).signing_key
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "ca.key").stat().st_mode) == 0o600


def test_count_refuses_to_overwrite_any_servers_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing file of any of the servers stops ``--count`` (exit 2) unless --force."""
    generate(tmp_path, "--server-name", "s2.test")
    assert generate(tmp_path, "--count", "2", "--server-name", "s{i}.test") == 2
    assert "s2.test" in capsys.readouterr().err
    assert not (tmp_path / "keys" / "s1.test.yaml").exists()


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--server-name", "s{i}.test"], "--count"),
        (["--server-name", "s.test", "--count", "2"], "--server-name"),
        (["--server-name", "s{i}.test", "--count", "0"], "--count"),
        (["--server-name", "s{i}.test", "--count", "2", "--start", "-1"], "--start"),
        (
            ["--server-name", "s{i}.test", "--count", "2", "--serve-wellknown", "f.test"],
            "--serve-wellknown",
        ),
    ],
)
def test_bad_count_arguments(tmp_path: Path, args: list[str], key: str) -> None:
    """``{i}`` without ``--count``, ``--count`` without ``{i}`` (in the name or the
    delegated name), a count or start out of range: ConfigError naming the flag."""
    with pytest.raises(ConfigError) as info:
        generate(tmp_path, *args)
    assert info.value.key == key
    assert not (tmp_path / "keys").exists()
