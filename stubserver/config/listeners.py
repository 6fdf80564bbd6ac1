"""The ``listeners`` of the configuration: where each binds, what it serves, and with
which certificate (the control listener is plain HTTP, alone on its port).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stubserver.config.model import (
    CONTROL_RESOURCE,
    DEFAULT_BIND_ADDRESSES,
    LOOPBACK_DEFAULT_RESOURCES,
    REPORT_DEFAULT_BIND_ADDRESSES,
    RESOURCES,
    ConfigError,
    ListenerConfig,
)
from stubserver.config.values import (
    expect_list,
    expect_mapping,
    expect_port,
    expect_str,
    resolve_path,
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


def parse_listeners(
    raw: Mapping[str, Any], base: Path, prefix: str = ""
) -> tuple[ListenerConfig, ...]:
    """The ``listeners`` of a config mapping; certificate paths default to the top-level
    ``tls_certificate_path``/``tls_private_key_path`` and resolve against ``base``.

    ``prefix`` comes before every key an error names (``servers[2].`` for a server's own).
    """
    top_cert = raw.get("tls_certificate_path")
    top_key = raw.get("tls_private_key_path")
    listeners: list[ListenerConfig] = []
    for i, item in enumerate(expect_list(f"{prefix}listeners", raw.get("listeners", []))):
        where = f"{prefix}listeners[{i}]"
        lraw = expect_mapping(where, item)
        lunknown = sorted(str(k) for k in lraw if k not in _LISTENER_KEYS)
        if lunknown:
            raise ConfigError(f"{where}.{lunknown[0]}", "unknown setting")
        if "port" not in lraw:
            raise ConfigError(f"{where}.port", "required")
        port = expect_port(f"{where}.port", lraw["port"], allow_zero=True)
        binds = tuple(
            expect_str(f"{where}.bind_addresses[{j}]", b)
            for j, b in enumerate(
                expect_list(
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
        resources = expect_list(f"{where}.resources", lraw.get("resources", ["federation"]))
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
                tls_certificate_path=resolve_path(base, f"{where}.tls_certificate_path", cert),
                tls_private_key_path=resolve_path(base, f"{where}.tls_private_key_path", key),
                config_key=where,
            )
        )
    return tuple(listeners)


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
        config_key=where,
    )
