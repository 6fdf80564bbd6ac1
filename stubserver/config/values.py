"""One setting's value, checked: strings, booleans, ports, lists, mappings, durations,
IP ranges, ``HOST[:PORT]``, paths and the files they name. Every fault raises
:class:`~stubserver.config.model.ConfigError` naming the key and the problem.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stubserver.config.model import MAX_CONFIG_BYTES, MAX_PORT, ConfigError
from stubserver.signing.keys import InvalidKeyFile, ServerSigningKey, parse_signing_key_file

_DURATION_RE = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)?\Z")
_DURATION_UNITS_MS = {
    None: 1,
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}


def parse_duration_ms(key: str, value: object) -> int:
    """Synapse's duration syntax: an int is milliseconds; else ``<n>(ms|s|m|h|d|w|y)``."""
    if isinstance(value, bool):
        raise ConfigError(key, "expected a duration such as 1d, 12h or 30m")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(key, "must be positive")
        return value
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if m:
            ms = int(m.group(1)) * _DURATION_UNITS_MS[m.group(2)]
            if ms <= 0:
                raise ConfigError(key, "must be positive")
            return ms
    raise ConfigError(key, f"{value!r} is not a duration such as 1d, 12h or 30m")


def expect_str(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {describe(value)}")
    return value


def expect_bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {describe(value)}")
    return value


def expect_port(key: str, value: object, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected a port number, got {describe(value)}")
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_PORT:
        raise ConfigError(key, f"port {value} is out of range ({low}-{MAX_PORT})")
    return value


def expect_list(key: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list, got {describe(value)}")
    return value


def expect_mapping(key: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping, got {describe(value)}")
    return value


def describe(value: object) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"[:80]


def parse_cidr(key: str, value: object) -> str:
    """Validate an IP range (CIDR) setting; return it unchanged."""
    text = expect_str(key, value)
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an IP range (CIDR)") from None
    return text


def parse_host_port(key: str, text: str, default_port: int) -> tuple[str, int]:
    """``HOST[:PORT]`` or ``[V6]:PORT`` as used by --dns-server and federation_dns_servers."""
    host, port_s = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(key, f"{text!r}: unclosed '['")
        host, port_s = text[1:end], text[end + 1 :].lstrip(":")
    elif text.count(":") == 1:
        host, port_s = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(key, f"{text!r}: the DNS server must be an IP address") from None
    port = default_port
    if port_s:
        if not port_s.isdigit():
            raise ConfigError(key, f"{text!r}: bad port")
        port = expect_port(key, int(port_s))
    return host, port


def resolve_path(base: Path, key: str, value: object) -> Path:
    p = Path(expect_str(key, value)).expanduser()
    return p if p.is_absolute() else base / p


def read_text(key: str, path: Path, limit: int = MAX_CONFIG_BYTES) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror}") from None
    if len(data) > limit:
        raise ConfigError(key, f"{path} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(key, f"{path} is not UTF-8 text") from None


def load_signing_keys(path: Path, key: str = "signing_key_path") -> tuple[ServerSigningKey, ...]:
    """Read a Synapse-format signing-key file, as a ConfigError on any fault."""
    try:
        return tuple(parse_signing_key_file(read_text(key, path)))
    except InvalidKeyFile as e:
        raise ConfigError(key, f"{path}: {e}") from None
