"""The YAML configuration file, parsed once into frozen, typed values
(:mod:`stubserver.config.model`).

Names follow Synapse's ``homeserver.yaml`` where Synapse has the same setting. Relative
paths are relative to the config file's folder. Every fault raises :class:`ConfigError`
naming the key and the problem; ``main`` turns it into one line and exit status 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from stubserver.config.listeners import parse_listeners
from stubserver.config.model import (
    CONFIG_ROOM_VERSIONS,
    DEFAULT_LOG_LEVEL,
    DEFAULT_ROOM_VERSION,
    DNS_PORT,
    INVITE_POLICIES,
    SPEC_FEDERATION_PORT,
    SPEC_WELL_KNOWN_PORT,
    Config,
    ConfigError,
    FederationSettings,
    OldVerifyKey,
    UserProfile,
)
from stubserver.config.values import (
    describe,
    expect_bool,
    expect_list,
    expect_mapping,
    expect_port,
    expect_str,
    load_signing_keys,
    parse_cidr,
    parse_duration_ms,
    parse_host_port,
    read_text,
    resolve_path,
)
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.logs.output import LOG_LEVELS
from stubserver.signing.keys import KEY_VERSION_RE, InvalidBase64, decode_base64

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
        "log_level",
        "servers",
    }
)


def federation_settings_from_dict(raw: Mapping[str, Any], base: Path) -> FederationSettings:
    """The federation settings of a config mapping (defaults for those absent)."""
    defaults = FederationSettings()
    dns_servers = tuple(
        parse_host_port(
            f"federation_dns_servers[{i}]", expect_str(f"federation_dns_servers[{i}]", v), DNS_PORT
        )
        for i, v in enumerate(
            expect_list("federation_dns_servers", raw.get("federation_dns_servers", []))
        )
    )
    return FederationSettings(
        verify_certificates=expect_bool(
            "federation_verify_certificates", raw.get("federation_verify_certificates", True)
        ),
        ca_files=tuple(
            resolve_path(base, f"federation_custom_ca_list[{i}]", v)
            for i, v in enumerate(
                expect_list("federation_custom_ca_list", raw.get("federation_custom_ca_list", []))
            )
        ),
        dns_servers=dns_servers,
        ip_range_blocklist=tuple(
            parse_cidr(f"ip_range_blocklist[{i}]", v)
            for i, v in enumerate(
                expect_list(
                    "ip_range_blocklist",
                    raw.get("ip_range_blocklist", list(defaults.ip_range_blocklist)),
                )
            )
        ),
        ip_range_allowlist=tuple(
            parse_cidr(f"ip_range_allowlist[{i}]", v)
            for i, v in enumerate(
                expect_list("ip_range_allowlist", raw.get("ip_range_allowlist", []))
            )
        ),
        well_known_port=expect_port(
            "federation_well_known_port",
            raw.get("federation_well_known_port", SPEC_WELL_KNOWN_PORT),
        ),
        default_port=expect_port(
            "federation_default_port", raw.get("federation_default_port", SPEC_FEDERATION_PORT)
        ),
    )


def parse_server_name_setting(key: str, value: object) -> str:
    """A server name (``HOST[:PORT]``, the spec's grammar) at ``key``."""
    name = expect_str(key, value)
    try:
        parse_server_name(name)
    except InvalidServerName as e:
        raise ConfigError(key, str(e)) from None
    return name


def parse_wellknown(value: object, key: str = "serve_server_wellknown") -> str | None:
    """``serve_server_wellknown``: the ``m.server`` to publish, or None."""
    return None if value is None else parse_server_name_setting(key, value)


def parse_users(value: object, key: str = "users") -> dict[str, UserProfile]:
    """``users``: ``{localpart: {displayname?, avatar_url?}}``."""
    users: dict[str, UserProfile] = {}
    for localpart, profile in expect_mapping(key, value or {}).items():
        where = f"{key}.{localpart}"
        pmap = expect_mapping(where, profile or {})
        if set(pmap) - {"displayname", "avatar_url"}:
            raise ConfigError(where, "expected only 'displayname' and 'avatar_url'")
        users[str(localpart)] = UserProfile(
            displayname=None
            if pmap.get("displayname") is None
            else expect_str(f"{where}.displayname", pmap["displayname"]),
            avatar_url=None
            if pmap.get("avatar_url") is None
            else expect_str(f"{where}.avatar_url", pmap["avatar_url"]),
        )
    return users


def parse_room_version(value: object, key: str = "default_room_version") -> str:
    """``default_room_version``: one of :data:`CONFIG_ROOM_VERSIONS`, as a string."""
    if value not in CONFIG_ROOM_VERSIONS or not isinstance(value, str):
        raise ConfigError(
            key,
            f"expected one of {', '.join(repr(v) for v in CONFIG_ROOM_VERSIONS)} (a quoted"
            f" string), got {describe(value)}",
        )
    return value


def parse_invites(value: object, key: str = "invites") -> str:
    """``invites``: ``accept`` or ``reject``."""
    if value not in INVITE_POLICIES or not isinstance(value, str):
        raise ConfigError(key, f"expected accept or reject, got {describe(value)}")
    return value


def config_from_dict(raw: object, base: Path, path: Path | None = None) -> Config:
    """Validate a parsed YAML document into a :class:`Config`; paths resolve against ``base``."""
    if not isinstance(raw, dict):
        raise ConfigError("config", "the file must hold a YAML mapping")
    unknown = sorted(str(k) for k in raw if k not in _KNOWN_KEYS)
    if unknown:
        raise ConfigError(unknown[0], "unknown setting")
    if "server_name" not in raw:
        raise ConfigError("server_name", "required")
    server_name = parse_server_name_setting("server_name", raw["server_name"])
    if "signing_key_path" not in raw:
        raise ConfigError("signing_key_path", "required")
    signing_keys = load_signing_keys(
        resolve_path(base, "signing_key_path", raw["signing_key_path"])
    )

    listeners = parse_listeners(raw, base)

    wellknown = parse_wellknown(raw.get("serve_server_wellknown"))

    old_keys: dict[str, OldVerifyKey] = {}
    old_raw = expect_mapping("old_signing_keys", raw.get("old_signing_keys") or {})
    for key_id, entry in old_raw.items():
        where = f"old_signing_keys.{key_id}"
        algorithm, _, version = str(key_id).partition(":")
        if algorithm != "ed25519" or not KEY_VERSION_RE.match(version):
            raise ConfigError(where, "key IDs are 'ed25519:<[a-zA-Z0-9_]+>'")
        entry_map = expect_mapping(where, entry)
        if set(entry_map) - {"key", "expired_ts"}:
            raise ConfigError(where, "expected only 'key' and 'expired_ts'")
        key_b64 = expect_str(f"{where}.key", entry_map.get("key"))
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

    users = parse_users(raw.get("users"))

    control_token = raw.get("control_token")
    if control_token is not None:
        control_token = expect_str("control_token", control_token)
    elif any(listener.is_control for listener in listeners):
        raise ConfigError("control_token", "required when a listener serves control")
    room_version = parse_room_version(raw.get("default_room_version", DEFAULT_ROOM_VERSION))
    invites = parse_invites(raw.get("invites", "accept"))
    log_level = raw.get("log_level", DEFAULT_LOG_LEVEL)
    if log_level not in LOG_LEVELS or not isinstance(log_level, str):
        raise ConfigError(
            "log_level", f"expected one of {', '.join(LOG_LEVELS)}, got {describe(log_level)}"
        )

    log_path = raw.get("request_log_path")
    tls_paths = {
        key: resolve_path(base, key, raw[key])
        for key in ("tls_certificate_path", "tls_private_key_path")
        if raw.get(key) is not None
    }
    primary = Config(
        server_name=server_name,
        signing_keys=signing_keys,
        listeners=listeners,
        serve_server_wellknown=wellknown,
        key_refresh_interval_ms=parse_duration_ms(
            "key_refresh_interval", raw.get("key_refresh_interval", "1d")
        ),
        old_signing_keys=old_keys,
        users=users,
        request_log_path=(
            None if log_path is None else resolve_path(base, "request_log_path", log_path)
        ),
        federation=federation_settings_from_dict(raw, base),
        path=path,
        control_token=control_token,
        default_room_version=room_version,
        invites=invites,
        log_level=log_level,
        tls_certificate_path=tls_paths.get("tls_certificate_path"),
        tls_private_key_path=tls_paths.get("tls_private_key_path"),
    )
    if raw.get("servers") is None:
        return primary
    from stubserver.config.servers import parse_servers  # noqa: PLC0415

    return replace(primary, servers=parse_servers(raw["servers"], base, primary))


def load_config(path: Path) -> Config:
    """Read and validate the config file at ``path``."""
    import yaml  # noqa: PLC0415 - only commands that take a config pay for the import

    text = read_text("config", path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("config", f"{path} is not valid YAML{where}") from None
    return config_from_dict(raw, path.resolve().parent, path)
