"""The configuration's values: frozen, typed records and the defaults they start from.

Names follow Synapse's ``homeserver.yaml`` where Synapse has the same setting
(:mod:`stubserver.config.parse` reads the file into these).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stubserver.signing.keys import ServerSigningKey

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
#: The default ``log_level`` (its values: stubserver.logs.output.LOG_LEVELS; issue 24): at
#: info the log says what happened to federation; debug adds Twisted's own lines.
DEFAULT_LOG_LEVEL = "info"

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
    #: The key naming this listener in errors (``listeners[1]``, ``servers[2].listeners[0]``).
    config_key: str = field(default="", compare=False)

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
    #: The least level written to stderr by ``run`` (one of LOG_LEVELS).
    log_level: str = DEFAULT_LOG_LEVEL
    #: This server's certificate and key (the top-level ``tls_certificate_path`` and
    #: ``tls_private_key_path``; a listener without its own uses them). On listeners shared
    #: by several servers, the one a handshake's SNI names is served.
    tls_certificate_path: Path | None = None
    tls_private_key_path: Path | None = None
    #: The other servers this process serves (``servers:``), each a Config of its own whose
    #: process-wide settings (federation, control, request log, log level, key refresh
    #: interval) are this one's; empty in theirs. See :attr:`every_server`.
    servers: tuple[Config, ...] = ()
    #: True for a server of ``servers:`` with ``listeners`` of its own: it is served there
    #: only (``listeners`` holds them), not on the shared ones.
    own_listeners: bool = False

    @property
    def every_server(self) -> tuple[Config, ...]:
        """This (the primary) server, then every server of ``servers:``."""
        return (self, *self.servers)

    @property
    def invites_accept(self) -> bool:
        """True when received invites are accepted."""
        return self.invites == "accept"

    @property
    def signing_key(self) -> ServerSigningKey:
        """The key we sign with: the first in the signing-key file."""
        return self.signing_keys[0]
