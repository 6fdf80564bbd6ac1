"""The configuration file, parsed once into frozen values (DESIGN.md, "Configuration").

- ``model``      the frozen records (:class:`Config`, listeners, federation settings, users,
                 old keys), their defaults and :class:`ConfigError`
- ``values``     one setting's value, checked (strings, ports, durations, IP ranges, paths)
- ``listeners``  the ``listeners`` list, including the plain-HTTP control listener
- ``parse``      the whole file: YAML to :class:`Config`

The names other modules use are re-exported here: import from ``stubserver.config``.
"""

from stubserver.config.listeners import default_bind_addresses
from stubserver.config.model import (
    CONFIG_ROOM_VERSIONS,
    CONTROL_RESOURCE,
    DEFAULT_BIND_ADDRESSES,
    DEFAULT_IP_RANGE_BLOCKLIST,
    DEFAULT_KEY_REFRESH_INTERVAL_MS,
    DEFAULT_ROOM_VERSION,
    DNS_PORT,
    INVITE_POLICIES,
    LOOPBACK_DEFAULT_RESOURCES,
    MAX_CONFIG_BYTES,
    MAX_PORT,
    MS_PER_SECOND,
    REPORT_DEFAULT_BIND_ADDRESSES,
    RESOURCES,
    SPEC_FEDERATION_PORT,
    SPEC_WELL_KNOWN_PORT,
    Config,
    ConfigError,
    FederationSettings,
    ListenerConfig,
    OldVerifyKey,
    UserProfile,
)
from stubserver.config.parse import config_from_dict, federation_settings_from_dict, load_config
from stubserver.config.values import (
    load_signing_keys,
    parse_cidr,
    parse_duration_ms,
    parse_host_port,
)

__all__ = [
    "CONFIG_ROOM_VERSIONS",
    "CONTROL_RESOURCE",
    "DEFAULT_BIND_ADDRESSES",
    "DEFAULT_IP_RANGE_BLOCKLIST",
    "DEFAULT_KEY_REFRESH_INTERVAL_MS",
    "DEFAULT_ROOM_VERSION",
    "DNS_PORT",
    "INVITE_POLICIES",
    "LOOPBACK_DEFAULT_RESOURCES",
    "MAX_CONFIG_BYTES",
    "MAX_PORT",
    "MS_PER_SECOND",
    "REPORT_DEFAULT_BIND_ADDRESSES",
    "RESOURCES",
    "SPEC_FEDERATION_PORT",
    "SPEC_WELL_KNOWN_PORT",
    "Config",
    "ConfigError",
    "FederationSettings",
    "ListenerConfig",
    "OldVerifyKey",
    "UserProfile",
    "config_from_dict",
    "default_bind_addresses",
    "federation_settings_from_dict",
    "load_config",
    "load_signing_keys",
    "parse_cidr",
    "parse_duration_ms",
    "parse_host_port",
]
