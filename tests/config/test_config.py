"""The config file: a full example parses; every fault is a ConfigError naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stubserver.config import (
    DEFAULT_BIND_ADDRESSES,
    DEFAULT_IP_RANGE_BLOCKLIST,
    MAX_CONFIG_BYTES,
    ConfigError,
    OldVerifyKey,
    UserProfile,
    load_config,
    parse_duration_ms,
)
from stubserver.signing.keys import ServerSigningKey

KEY = ServerSigningKey.generate("a_cfg")
OLD_KEY_B64 = "A" * 43


def base() -> dict[str, Any]:
    """A minimal valid config (paths relative to the config's folder)."""
    return {
        "server_name": "beta.test",
        "signing_key_path": "signing.key",
        "tls_certificate_path": "tls.crt",
        "tls_private_key_path": "tls.key",
        "listeners": [{"port": 8448, "bind_addresses": ["127.0.0.22"]}],
    }


def write(tmp_path: Path, raw: object) -> Path:
    """Write ``raw`` as the config file next to a valid signing key; return its path."""
    (tmp_path / "signing.key").write_text(KEY.to_line())
    path = tmp_path / "stubserver.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def error_for(tmp_path: Path, raw: object) -> ConfigError:
    """The ConfigError that loading ``raw`` raises."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, raw))
    return info.value


def test_full_example(tmp_path: Path) -> None:
    """DESIGN.md's example config parses into the expected values."""
    raw = {
        **base(),
        "listeners": [
            {"port": 8448, "bind_addresses": ["127.0.0.22"], "resources": ["federation"]},
            {
                "port": 443,
                "bind_addresses": ["127.0.0.12"],
                "resources": ["well_known"],
                "tls_certificate_path": "other.crt",
                "tls_private_key_path": "/abs/other.key",
            },
        ],
        "serve_server_wellknown": "beta-fed.test:8448",
        "key_refresh_interval": "12h",
        "old_signing_keys": {"ed25519:old": {"key": OLD_KEY_B64, "expired_ts": 5}},
        "users": {"alice": {"displayname": "Alice"}, "bob": None},
        "request_log_path": "requests.jsonl",
        "federation_verify_certificates": False,
        "federation_custom_ca_list": ["ca.crt"],
        "federation_dns_servers": ["127.0.0.53", "[::1]:5353"],
        "ip_range_allowlist": ["127.0.0.0/8"],
        "federation_well_known_port": 4443,
        "federation_default_port": 8449,
    }
    path = write(tmp_path, raw)
    config = load_config(path)
    folder = path.resolve().parent
    assert config.server_name == "beta.test"
    assert config.signing_key.key_id == "ed25519:a_cfg"
    first, second = config.listeners
    assert (first.port, first.bind_addresses, first.resources) == (
        8448,
        ("127.0.0.22",),
        frozenset({"federation"}),
    )
    assert first.tls_certificate_path == folder / "tls.crt"
    assert second.tls_certificate_path == folder / "other.crt"
    assert second.tls_private_key_path == Path("/abs/other.key")
    assert config.serve_server_wellknown == "beta-fed.test:8448"
    assert config.key_refresh_interval_ms == 12 * 3600 * 1000
    assert config.old_signing_keys == {"ed25519:old": OldVerifyKey(OLD_KEY_B64, 5)}
    assert config.users == {"alice": UserProfile(displayname="Alice"), "bob": UserProfile()}
    assert config.request_log_path == folder / "requests.jsonl"
    fed = config.federation
    assert fed.verify_certificates is False
    assert fed.ca_files == (folder / "ca.crt",)
    assert fed.dns_servers == (("127.0.0.53", 53), ("::1", 5353))
    assert fed.ip_range_allowlist == ("127.0.0.0/8",)
    assert (fed.well_known_port, fed.default_port) == (4443, 8449)
    assert config.path == path


def test_defaults(tmp_path: Path) -> None:
    """Absent settings take Synapse's defaults."""
    raw = base()
    raw["listeners"] = [{"port": 8448}]
    config = load_config(write(tmp_path, raw))
    (listener,) = config.listeners
    assert listener.bind_addresses == DEFAULT_BIND_ADDRESSES
    assert listener.resources == frozenset({"federation"})
    assert config.key_refresh_interval_ms == 86_400_000
    assert config.serve_server_wellknown is None
    assert config.federation.ip_range_blocklist == DEFAULT_IP_RANGE_BLOCKLIST
    assert config.federation.verify_certificates is True
    assert (config.federation.well_known_port, config.federation.default_port) == (443, 8448)


def with_(**changes: Any) -> dict[str, Any]:
    """The base config with top-level ``changes`` (a value of None removes the key)."""
    raw = base()
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def listener_with(**changes: Any) -> dict[str, Any]:
    """The base config whose listener has ``changes`` (None removes the key)."""
    entry: dict[str, Any] = {"port": 8448, "bind_addresses": ["127.0.0.22"]}
    for key, value in changes.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    return with_(listeners=[entry])


CASES: list[tuple[str, object, str, str]] = [
    ("not a mapping", ["x"], "config", "must hold a YAML mapping"),
    ("unknown key", with_(colour="blue"), "colour", "unknown setting"),
    ("no server_name", with_(server_name=None), "server_name", "required"),
    ("server_name not a string", with_(server_name=5), "server_name", "expected a non-empty"),
    ("server_name invalid", with_(server_name="a b"), "server_name", "hostname may hold"),
    ("no signing key path", with_(signing_key_path=None), "signing_key_path", "required"),
    ("signing key missing", with_(signing_key_path="nx.key"), "signing_key_path", "cannot read"),
    ("listeners not a list", with_(listeners={"port": 1}), "listeners", "expected a list"),
    ("listener not a mapping", with_(listeners=[5]), "listeners[0]", "expected a mapping"),
    (
        "listener unknown key",
        listener_with(colour="blue"),
        "listeners[0].colour",
        "unknown setting",
    ),
    ("listener without port", listener_with(port=None), "listeners[0].port", "required"),
    ("port not a number", listener_with(port="80"), "listeners[0].port", "expected a port"),
    ("port is a bool", listener_with(port=True), "listeners[0].port", "expected a port"),
    ("port out of range", listener_with(port=65536), "listeners[0].port", "out of range"),
    (
        "bind address not an IP",
        listener_with(bind_addresses=["localhost"]),
        "listeners[0].bind_addresses[0]",
        "is not an IP address",
    ),
    (
        "bind address not a string",
        listener_with(bind_addresses=[1]),
        "listeners[0].bind_addresses[0]",
        "expected a non-empty string",
    ),
    (
        "unknown resource",
        listener_with(resources=["client"]),
        "listeners[0].resources[0]",
        "unknown resource 'client'",
    ),
    (
        "resources not a list",
        listener_with(resources="federation"),
        "listeners[0].resources",
        "expected a list",
    ),
    (
        "no certificate",
        with_(tls_certificate_path=None),
        "listeners[0].tls_certificate_path",
        "required",
    ),
    (
        "no private key",
        with_(tls_private_key_path=None),
        "listeners[0].tls_private_key_path",
        "required",
    ),
    (
        "well-known not a server name",
        with_(serve_server_wellknown="a b:1"),
        "serve_server_wellknown",
        "hostname may hold",
    ),
    (
        "well-known empty",
        with_(serve_server_wellknown=""),
        "serve_server_wellknown",
        "expected a non-empty string",
    ),
    (
        "duration junk",
        with_(key_refresh_interval="soon"),
        "key_refresh_interval",
        "is not a duration",
    ),
    ("duration zero", with_(key_refresh_interval="0s"), "key_refresh_interval", "positive"),
    ("duration negative", with_(key_refresh_interval=-5), "key_refresh_interval", "positive"),
    (
        "duration bool",
        with_(key_refresh_interval=True),
        "key_refresh_interval",
        "expected a duration",
    ),
    (
        "old keys not a mapping",
        with_(old_signing_keys=["x"]),
        "old_signing_keys",
        "expected a mapping",
    ),
    (
        "old key id wrong algorithm",
        with_(old_signing_keys={"rsa:x": {"key": OLD_KEY_B64, "expired_ts": 1}}),
        "old_signing_keys.rsa:x",
        "key IDs are",
    ),
    (
        "old key id bad version",
        with_(old_signing_keys={"ed25519:a-b": {"key": OLD_KEY_B64, "expired_ts": 1}}),
        "old_signing_keys.ed25519:a-b",
        "key IDs are",
    ),
    (
        "old key entry not a mapping",
        with_(old_signing_keys={"ed25519:o": "x"}),
        "old_signing_keys.ed25519:o",
        "expected a mapping",
    ),
    (
        "old key extra field",
        with_(old_signing_keys={"ed25519:o": {"key": OLD_KEY_B64, "expired_ts": 1, "x": 1}}),
        "old_signing_keys.ed25519:o",
        "expected only",
    ),
    (
        "old key not base64",
        with_(old_signing_keys={"ed25519:o": {"key": "!!", "expired_ts": 1}}),
        "old_signing_keys.ed25519:o.key",
        "not valid base64",
    ),
    (
        "old key wrong length",
        with_(old_signing_keys={"ed25519:o": {"key": "AAAA", "expired_ts": 1}}),
        "old_signing_keys.ed25519:o.key",
        "32 bytes",
    ),
    (
        "old key missing",
        with_(old_signing_keys={"ed25519:o": {"expired_ts": 1}}),
        "old_signing_keys.ed25519:o.key",
        "expected a non-empty string",
    ),
    (
        "old key bad expiry",
        with_(old_signing_keys={"ed25519:o": {"key": OLD_KEY_B64, "expired_ts": "x"}}),
        "old_signing_keys.ed25519:o.expired_ts",
        "expected a timestamp",
    ),
    (
        "old key negative expiry",
        with_(old_signing_keys={"ed25519:o": {"key": OLD_KEY_B64, "expired_ts": -1}}),
        "old_signing_keys.ed25519:o.expired_ts",
        "expected a timestamp",
    ),
    (
        "old key is current",
        with_(old_signing_keys={"ed25519:a_cfg": {"key": OLD_KEY_B64, "expired_ts": 1}}),
        "old_signing_keys.ed25519:a_cfg",
        "also a current signing key",
    ),
    ("users not a mapping", with_(users=["alice"]), "users", "expected a mapping"),
    (
        "user extra field",
        with_(users={"alice": {"age": 3}}),
        "users.alice",
        "expected only",
    ),
    (
        "user displayname not a string",
        with_(users={"alice": {"displayname": 5}}),
        "users.alice.displayname",
        "expected a non-empty string",
    ),
    (
        "user avatar not a string",
        with_(users={"alice": {"avatar_url": ["x"]}}),
        "users.alice.avatar_url",
        "expected a non-empty string",
    ),
    (
        "request log path not a string",
        with_(request_log_path=5),
        "request_log_path",
        "expected a non-empty string",
    ),
    (
        "verify certificates not a bool",
        with_(federation_verify_certificates="yes"),
        "federation_verify_certificates",
        "expected true or false",
    ),
    (
        "CA list not a list",
        with_(federation_custom_ca_list="ca.crt"),
        "federation_custom_ca_list",
        "expected a list",
    ),
    (
        "CA list entry not a string",
        with_(federation_custom_ca_list=[1]),
        "federation_custom_ca_list[0]",
        "expected a non-empty string",
    ),
    (
        "DNS server not an IP",
        with_(federation_dns_servers=["dns.test"]),
        "federation_dns_servers[0]",
        "must be an IP address",
    ),
    (
        "DNS server unclosed bracket",
        with_(federation_dns_servers=["[::1"]),
        "federation_dns_servers[0]",
        "unclosed",
    ),
    (
        "DNS server bad port",
        with_(federation_dns_servers=["127.0.0.1:x"]),
        "federation_dns_servers[0]",
        "bad port",
    ),
    (
        "DNS server port out of range",
        with_(federation_dns_servers=["127.0.0.1:70000"]),
        "federation_dns_servers[0]",
        "out of range",
    ),
    (
        "DNS server not a string",
        with_(federation_dns_servers=[53]),
        "federation_dns_servers[0]",
        "expected a non-empty string",
    ),
    (
        "blocklist entry not a CIDR",
        with_(ip_range_blocklist=["10.0.0.0/33"]),
        "ip_range_blocklist[0]",
        "is not an IP range",
    ),
    (
        "allowlist entry not a CIDR",
        with_(ip_range_allowlist=["everything"]),
        "ip_range_allowlist[0]",
        "is not an IP range",
    ),
    (
        "allowlist not a list",
        with_(ip_range_allowlist="127.0.0.0/8"),
        "ip_range_allowlist",
        "expected a list",
    ),
    (
        "well-known port zero",
        with_(federation_well_known_port=0),
        "federation_well_known_port",
        "out of range",
    ),
    (
        "default port not a number",
        with_(federation_default_port="8448"),
        "federation_default_port",
        "expected a port",
    ),
]


@pytest.mark.parametrize(
    ("raw", "key", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_config_errors(tmp_path: Path, raw: object, key: str, problem: str) -> None:
    """Each fault raises a ConfigError naming the key and the problem."""
    error = error_for(tmp_path, raw)
    assert error.key == key
    assert problem in error.problem
    assert str(error) == f"{key}: {error.problem}"


def test_bad_signing_key_file(tmp_path: Path) -> None:
    """A malformed signing-key file is a ConfigError on signing_key_path, with the line."""
    path = write(tmp_path, base())
    (tmp_path / "signing.key").write_text("ed25519 a_1 short\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "signing_key_path"
    assert "line 1" in info.value.problem


def test_invalid_yaml(tmp_path: Path) -> None:
    """Text that is not YAML is a ConfigError with the line number."""
    path = tmp_path / "bad.yaml"
    path.write_text("server_name: beta.test\nlisteners: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "config"
    assert "is not valid YAML at line" in info.value.problem


def test_missing_file(tmp_path: Path) -> None:
    """A config file that cannot be read is a ConfigError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nx.yaml")


def test_not_utf8(tmp_path: Path) -> None:
    """A config file that is not UTF-8 is a ConfigError."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"server_name: b\xe9ta.test\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_too_large(tmp_path: Path) -> None:
    """A config file larger than the limit is a ConfigError."""
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (5, 5),
        ("5", 5),
        ("5ms", 5),
        ("2s", 2000),
        ("3m", 180_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
        ("1y", 31_536_000_000),
    ],
)
def test_durations(value: object, ms: int) -> None:
    """Synapse's duration syntax: a bare number is milliseconds."""
    assert parse_duration_ms("key_refresh_interval", value) == ms


CONTROL = {"port": 8009, "resources": ["control"]}


def with_control(listener: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """The base config plus a control listener (``listener``) and top-level ``changes``."""
    raw = with_(**{"control_token": "secret", **changes})
    raw["listeners"] = [*raw["listeners"], listener if listener is not None else CONTROL]
    return raw


def test_control_listener(tmp_path: Path) -> None:
    """A control listener is plain HTTP (no certificate) and binds to loopback by default."""
    config = load_config(write(tmp_path, with_control()))
    _, control = config.listeners
    assert control.is_control
    assert control.bind_addresses == ("::1", "127.0.0.1")
    assert (control.tls_certificate_path, control.tls_private_key_path) == (None, None)
    assert config.control_token == "secret"


def test_room_defaults(tmp_path: Path) -> None:
    """Without the room keys: no control token, room version 12, invites accepted."""
    config = load_config(write(tmp_path, base()))
    assert config.control_token is None
    assert config.default_room_version == "12"
    assert config.invites_accept is True


def test_log_level(tmp_path: Path) -> None:
    """log_level is info unless the config names another level (issue 24)."""
    assert load_config(write(tmp_path, base())).log_level == "info"
    assert load_config(write(tmp_path, with_(log_level="debug"))).log_level == "debug"


def test_room_keys(tmp_path: Path) -> None:
    """default_room_version and invites are read as given."""
    config = load_config(write(tmp_path, with_(default_room_version="10", invites="reject")))
    assert config.default_room_version == "10"
    assert config.invites_accept is False


ROOM_CASES = [
    (
        "control beside federation",
        with_control({"port": 8009, "resources": ["federation", "control"]}),
        "listeners[1].resources",
        "listener of its own",
    ),
    (
        "control beside well_known",
        with_control({"port": 8009, "resources": ["control", "well_known"]}),
        "listeners[1].resources",
        "not with well_known",
    ),
    (
        "control listener with a certificate",
        with_control({"port": 8009, "resources": ["control"], "tls_certificate_path": "a.crt"}),
        "listeners[1].tls_certificate_path",
        "plain HTTP",
    ),
    (
        "control listener without a token",
        with_control(control_token=None),
        "control_token",
        "required when a listener serves control",
    ),
    ("empty token", with_control(control_token=""), "control_token", "non-empty string"),
    ("token not a string", with_(control_token=123), "control_token", "non-empty string"),
    ("unknown room version", with_(default_room_version="9"), "default_room_version", "'12'"),
    (
        "room version as a number",
        with_(default_room_version=12),
        "default_room_version",
        "quoted",
    ),
    ("unknown invite policy", with_(invites="maybe"), "invites", "accept or reject"),
    ("invite policy not a string", with_(invites=True), "invites", "accept or reject"),
    ("unknown log level", with_(log_level="verbose"), "log_level", "debug, info, warn, error"),
    ("log level in capitals", with_(log_level="DEBUG"), "log_level", "got str 'DEBUG'"),
    ("log level not a string", with_(log_level=10), "log_level", "debug, info, warn, error"),
]


@pytest.mark.parametrize(
    ("raw", "key", "problem"), [c[1:] for c in ROOM_CASES], ids=[c[0] for c in ROOM_CASES]
)
def test_room_config_errors(tmp_path: Path, raw: object, key: str, problem: str) -> None:
    """Each fault of the room and control keys is a ConfigError naming the key."""
    error = error_for(tmp_path, raw)
    assert error.key == key
    assert problem in error.problem


def test_room_config_error_exits_2_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A control listener without control_token: `run` exits 2 with one line naming it."""
    from stubserver.cli.main import main

    path = write(tmp_path, with_control(control_token=None))
    assert main(["run", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "control_token: required" in err
