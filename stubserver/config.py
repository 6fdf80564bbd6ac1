"""The YAML configuration file, parsed once into frozen, typed values.

Names follow Synapse's ``homeserver.yaml`` where Synapse has the same setting. Relative
paths are relative to the config file's folder. Every fault raises :class:`ConfigError`
naming the key and the problem; ``main`` turns it into one line and exit status 2.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.signing.keys import (
    KEY_VERSION_RE,
    InvalidBase64,
    InvalidKeyFile,
    ServerSigningKey,
    decode_base64,
    parse_signing_key_file,
)

MS_PER_SECOND = 1000
#: Synapse's default key_refresh_interval: published keys are valid for one day.
DEFAULT_KEY_REFRESH_INTERVAL_MS = 24 * 3600 * MS_PER_SECOND
#: The spec's port for /.well-known/matrix/server (https) and for federation.
SPEC_WELL_KNOWN_PORT = 443
SPEC_FEDERATION_PORT = 8448
DNS_PORT = 53
MAX_PORT = 65535
#: Largest config file we read, in bytes.
MAX_CONFIG_BYTES = 1024 * 1024

#: Synapse's default bind_addresses: every interface, both families.
DEFAULT_BIND_ADDRESSES = ("::", "0.0.0.0")  # noqa: S104

RESOURCES = frozenset({"federation", "well_known", "report", "control"})
#: The resource of the control API (DESIGN.md, "Rooms and the control API"): plain HTTP,
#: so always a listener of its own (never beside federation's TLS).
CONTROL_RESOURCE = "control"
#: A listener serving ``report`` binds to loopback unless told otherwise: the report
#: endpoint makes outbound requests for whoever asks (issue 6). So does ``control``: it
#: drives the whole server.
REPORT_DEFAULT_BIND_ADDRESSES = ("::1", "127.0.0.1")
LOOPBACK_DEFAULT_RESOURCES = frozenset({"report", CONTROL_RESOURCE})
#: The room versions ``default_room_version`` may name (stubserver.rooms.versions holds
#: their rules; not imported here so that reading a config stays cheap).
CONFIG_ROOM_VERSIONS = ("10", "11", "12")
#: Synapse's default room version, and ours.
DEFAULT_ROOM_VERSION = "12"
#: What ``invites`` may say about the /v2/invite requests we receive.
INVITE_POLICIES = ("accept", "reject")

#: Synapse's DEFAULT_IP_RANGE_BLOCKLIST (synapse/config/server.py): outbound federation
#: never dials these unless ip_range_allowlist makes an exception.
DEFAULT_IP_RANGE_BLOCKLIST: tuple[str, ...] = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
)

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


class ConfigError(Exception):
    """A configuration fault: ``key`` names the setting, ``problem`` says what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class ListenerConfig:
    """One listener: where it binds, what it serves, and with which certificate.

    A ``control`` listener is plain HTTP: its certificate paths are None. Every other
    listener is TLS and has both.
    """

    port: int
    bind_addresses: tuple[str, ...]
    resources: frozenset[str]
    tls_certificate_path: Path | None
    tls_private_key_path: Path | None

    @property
    def is_control(self) -> bool:
        """True for the (plain HTTP) control listener."""
        return CONTROL_RESOURCE in self.resources


@dataclass(frozen=True)
class OldVerifyKey:
    """A retired key, published under ``old_verify_keys``."""

    key: str
    expired_ts: int


@dataclass(frozen=True)
class UserProfile:
    """A user answered at /_matrix/federation/v1/query/profile."""

    displayname: str | None = None
    avatar_url: str | None = None


@dataclass(frozen=True)
class FederationSettings:
    """How outbound federation resolves, dials and verifies; shared by every outbound command."""

    verify_certificates: bool = True
    ca_files: tuple[Path, ...] = ()
    dns_servers: tuple[tuple[str, int], ...] = ()
    ip_range_blocklist: tuple[str, ...] = DEFAULT_IP_RANGE_BLOCKLIST
    ip_range_allowlist: tuple[str, ...] = ()
    well_known_port: int = SPEC_WELL_KNOWN_PORT
    default_port: int = SPEC_FEDERATION_PORT


@dataclass(frozen=True)
class Config:
    """A whole parsed configuration file."""

    server_name: str
    signing_keys: tuple[ServerSigningKey, ...]
    listeners: tuple[ListenerConfig, ...] = ()
    serve_server_wellknown: str | None = None
    key_refresh_interval_ms: int = DEFAULT_KEY_REFRESH_INTERVAL_MS
    old_signing_keys: Mapping[str, OldVerifyKey] = field(default_factory=dict)
    users: Mapping[str, UserProfile] = field(default_factory=dict)
    request_log_path: Path | None = None
    federation: FederationSettings = field(default_factory=FederationSettings)
    path: Path | None = None
    #: The bearer token of the control API; required when a listener serves control.
    control_token: str | None = None
    default_room_version: str = DEFAULT_ROOM_VERSION
    #: ``accept`` or ``reject`` (403 M_FORBIDDEN) the /v2/invite requests received.
    invites: str = "accept"

    @property
    def invites_accept(self) -> bool:
        """True when received invites are accepted."""
        return self.invites == "accept"

    @property
    def signing_key(self) -> ServerSigningKey:
        """The key we sign with: the first in the signing-key file."""
        return self.signing_keys[0]


_KNOWN_KEYS = frozenset(
    {
        "server_name",
        "signing_key_path",
        "tls_certificate_path",
        "tls_private_key_path",
        "listeners",
        "serve_server_wellknown",
        "key_refresh_interval",
        "old_signing_keys",
        "users",
        "request_log_path",
        "federation_verify_certificates",
        "federation_custom_ca_list",
        "federation_dns_servers",
        "ip_range_blocklist",
        "ip_range_allowlist",
        "federation_well_known_port",
        "federation_default_port",
        "control_token",
        "default_room_version",
        "invites",
    }
)
_LISTENER_KEYS = frozenset(
    {"port", "bind_addresses", "resources", "tls_certificate_path", "tls_private_key_path"}
)


def default_bind_addresses(listener: Mapping[str, Any]) -> tuple[str, ...]:
    """Where a listener binds when ``bind_addresses`` is absent: loopback when it serves
    ``report`` or ``control``, else every interface (Synapse's default)."""
    resources = listener.get("resources")
    if isinstance(resources, list) and LOOPBACK_DEFAULT_RESOURCES.intersection(
        r for r in resources if isinstance(r, str)
    ):
        return REPORT_DEFAULT_BIND_ADDRESSES
    return DEFAULT_BIND_ADDRESSES


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


def _str(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {_describe(value)}")
    return value


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {_describe(value)}")
    return value


def _port(key: str, value: object, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"expected a port number, got {_describe(value)}")
    low = 0 if allow_zero else 1
    if not low <= value <= MAX_PORT:
        raise ConfigError(key, f"port {value} is out of range ({low}-{MAX_PORT})")
    return value


def _list(key: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected a list, got {_describe(value)}")
    return value


def _mapping(key: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping, got {_describe(value)}")
    return value


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"[:80]


def parse_cidr(key: str, value: object) -> str:
    """Validate an IP range (CIDR) setting; return it unchanged."""
    text = _str(key, value)
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
        port = _port(key, int(port_s))
    return host, port


def _path(base: Path, key: str, value: object) -> Path:
    p = Path(_str(key, value)).expanduser()
    return p if p.is_absolute() else base / p


def _read_text(key: str, path: Path, limit: int = MAX_CONFIG_BYTES) -> str:
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
        return tuple(parse_signing_key_file(_read_text(key, path)))
    except InvalidKeyFile as e:
        raise ConfigError(key, f"{path}: {e}") from None


def federation_settings_from_dict(raw: Mapping[str, Any], base: Path) -> FederationSettings:
    """The federation settings of a config mapping (defaults for those absent)."""
    defaults = FederationSettings()
    dns_servers = tuple(
        parse_host_port(
            f"federation_dns_servers[{i}]", _str(f"federation_dns_servers[{i}]", v), DNS_PORT
        )
        for i, v in enumerate(
            _list("federation_dns_servers", raw.get("federation_dns_servers", []))
        )
    )
    return FederationSettings(
        verify_certificates=_bool(
            "federation_verify_certificates", raw.get("federation_verify_certificates", True)
        ),
        ca_files=tuple(
            _path(base, f"federation_custom_ca_list[{i}]", v)
            for i, v in enumerate(
                _list("federation_custom_ca_list", raw.get("federation_custom_ca_list", []))
            )
        ),
        dns_servers=dns_servers,
        ip_range_blocklist=tuple(
            parse_cidr(f"ip_range_blocklist[{i}]", v)
            for i, v in enumerate(
                _list(
                    "ip_range_blocklist",
                    raw.get("ip_range_blocklist", list(defaults.ip_range_blocklist)),
                )
            )
        ),
        ip_range_allowlist=tuple(
            parse_cidr(f"ip_range_allowlist[{i}]", v)
            for i, v in enumerate(_list("ip_range_allowlist", raw.get("ip_range_allowlist", [])))
        ),
        well_known_port=_port(
            "federation_well_known_port",
            raw.get("federation_well_known_port", SPEC_WELL_KNOWN_PORT),
        ),
        default_port=_port(
            "federation_default_port", raw.get("federation_default_port", SPEC_FEDERATION_PORT)
        ),
    )


def config_from_dict(raw: object, base: Path, path: Path | None = None) -> Config:
    """Validate a parsed YAML document into a :class:`Config`; paths resolve against ``base``."""
    if not isinstance(raw, dict):
        raise ConfigError("config", "the file must hold a YAML mapping")
    unknown = sorted(str(k) for k in raw if k not in _KNOWN_KEYS)
    if unknown:
        raise ConfigError(unknown[0], "unknown setting")
    if "server_name" not in raw:
        raise ConfigError("server_name", "required")
    server_name = _str("server_name", raw["server_name"])
    try:
        parse_server_name(server_name)
    except InvalidServerName as e:
        raise ConfigError("server_name", str(e)) from None
    if "signing_key_path" not in raw:
        raise ConfigError("signing_key_path", "required")
    signing_keys = load_signing_keys(_path(base, "signing_key_path", raw["signing_key_path"]))

    top_cert = raw.get("tls_certificate_path")
    top_key = raw.get("tls_private_key_path")
    listeners: list[ListenerConfig] = []
    for i, item in enumerate(_list("listeners", raw.get("listeners", []))):
        where = f"listeners[{i}]"
        lraw = _mapping(where, item)
        lunknown = sorted(str(k) for k in lraw if k not in _LISTENER_KEYS)
        if lunknown:
            raise ConfigError(f"{where}.{lunknown[0]}", "unknown setting")
        if "port" not in lraw:
            raise ConfigError(f"{where}.port", "required")
        port = _port(f"{where}.port", lraw["port"], allow_zero=True)
        binds = tuple(
            _str(f"{where}.bind_addresses[{j}]", b)
            for j, b in enumerate(
                _list(
                    f"{where}.bind_addresses",
                    lraw.get("bind_addresses", list(default_bind_addresses(lraw))),
                )
            )
        )
        for j, b in enumerate(binds):
            try:
                ipaddress.ip_address(b)
            except ValueError:
                raise ConfigError(
                    f"{where}.bind_addresses[{j}]", f"{b!r} is not an IP address"
                ) from None
        resources = _list(f"{where}.resources", lraw.get("resources", ["federation"]))
        for j, r in enumerate(resources):
            if r not in RESOURCES:
                raise ConfigError(
                    f"{where}.resources[{j}]",
                    f"unknown resource {r!r} (one of: {', '.join(sorted(RESOURCES))})",
                )
        if CONTROL_RESOURCE in resources:
            listeners.append(_control_listener(where, lraw, port, binds, resources))
            continue
        cert = lraw.get("tls_certificate_path", top_cert)
        key = lraw.get("tls_private_key_path", top_key)
        if cert is None:
            raise ConfigError(
                f"{where}.tls_certificate_path", "required (here or at the top level)"
            )
        if key is None:
            raise ConfigError(
                f"{where}.tls_private_key_path", "required (here or at the top level)"
            )
        listeners.append(
            ListenerConfig(
                port=port,
                bind_addresses=binds,
                resources=frozenset(resources),
                tls_certificate_path=_path(base, f"{where}.tls_certificate_path", cert),
                tls_private_key_path=_path(base, f"{where}.tls_private_key_path", key),
            )
        )

    wellknown = raw.get("serve_server_wellknown")
    if wellknown is not None:
        wellknown = _str("serve_server_wellknown", wellknown)
        try:
            parse_server_name(wellknown)
        except InvalidServerName as e:
            raise ConfigError("serve_server_wellknown", str(e)) from None

    old_keys: dict[str, OldVerifyKey] = {}
    for key_id, entry in _mapping("old_signing_keys", raw.get("old_signing_keys") or {}).items():
        where = f"old_signing_keys.{key_id}"
        algorithm, _, version = str(key_id).partition(":")
        if algorithm != "ed25519" or not KEY_VERSION_RE.match(version):
            raise ConfigError(where, "key IDs are 'ed25519:<[a-zA-Z0-9_]+>'")
        entry_map = _mapping(where, entry)
        if set(entry_map) - {"key", "expired_ts"}:
            raise ConfigError(where, "expected only 'key' and 'expired_ts'")
        key_b64 = _str(f"{where}.key", entry_map.get("key"))
        try:
            if len(decode_base64(key_b64)) != 32:
                raise ConfigError(f"{where}.key", "an ed25519 key is 32 bytes")
        except InvalidBase64:
            raise ConfigError(f"{where}.key", "not valid base64") from None
        expired = entry_map.get("expired_ts")
        if isinstance(expired, bool) or not isinstance(expired, int) or expired < 0:
            raise ConfigError(f"{where}.expired_ts", "expected a timestamp in milliseconds")
        if any(k.key_id == key_id for k in signing_keys):
            raise ConfigError(where, "is also a current signing key")
        old_keys[str(key_id)] = OldVerifyKey(key=key_b64, expired_ts=expired)

    users: dict[str, UserProfile] = {}
    for localpart, profile in _mapping("users", raw.get("users") or {}).items():
        where = f"users.{localpart}"
        pmap = _mapping(where, profile or {})
        if set(pmap) - {"displayname", "avatar_url"}:
            raise ConfigError(where, "expected only 'displayname' and 'avatar_url'")
        users[str(localpart)] = UserProfile(
            displayname=None
            if pmap.get("displayname") is None
            else _str(f"{where}.displayname", pmap["displayname"]),
            avatar_url=None
            if pmap.get("avatar_url") is None
            else _str(f"{where}.avatar_url", pmap["avatar_url"]),
        )

    control_token = raw.get("control_token")
    if control_token is not None:
        control_token = _str("control_token", control_token)
    elif any(listener.is_control for listener in listeners):
        raise ConfigError("control_token", "required when a listener serves control")
    room_version = raw.get("default_room_version", DEFAULT_ROOM_VERSION)
    if room_version not in CONFIG_ROOM_VERSIONS or not isinstance(room_version, str):
        raise ConfigError(
            "default_room_version",
            f"expected one of {', '.join(repr(v) for v in CONFIG_ROOM_VERSIONS)} (a quoted"
            f" string), got {_describe(room_version)}",
        )
    invites = raw.get("invites", "accept")
    if invites not in INVITE_POLICIES or not isinstance(invites, str):
        raise ConfigError(
            "invites", f"expected accept or reject, got {_describe(invites)}"
        )

    log_path = raw.get("request_log_path")
    return Config(
        server_name=server_name,
        signing_keys=signing_keys,
        listeners=tuple(listeners),
        serve_server_wellknown=wellknown,
        key_refresh_interval_ms=parse_duration_ms(
            "key_refresh_interval", raw.get("key_refresh_interval", "1d")
        ),
        old_signing_keys=old_keys,
        users=users,
        request_log_path=None if log_path is None else _path(base, "request_log_path", log_path),
        federation=federation_settings_from_dict(raw, base),
        path=path,
        control_token=control_token,
        default_room_version=room_version,
        invites=invites,
    )


def _control_listener(
    where: str,
    lraw: Mapping[str, Any],
    port: int,
    binds: tuple[str, ...],
    resources: list[Any],
) -> ListenerConfig:
    """A control listener: plain HTTP, so alone on its listener and without certificate."""
    others = sorted(str(r) for r in resources if r != CONTROL_RESOURCE)
    if others:
        raise ConfigError(
            f"{where}.resources",
            f"control is plain HTTP and needs a listener of its own (not with {others[0]})",
        )
    for tls_key in ("tls_certificate_path", "tls_private_key_path"):
        if tls_key in lraw:
            raise ConfigError(f"{where}.{tls_key}", "a control listener is plain HTTP")
    return ListenerConfig(
        port=port,
        bind_addresses=binds,
        resources=frozenset(resources),
        tls_certificate_path=None,
        tls_private_key_path=None,
    )


def load_config(path: Path) -> Config:
    """Read and validate the config file at ``path``."""
    import yaml  # noqa: PLC0415 - only commands that take a config pay for the import

    text = _read_text("config", path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("config", f"{path} is not valid YAML{where}") from None
    return config_from_dict(raw, path.resolve().parent, path)
