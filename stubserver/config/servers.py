"""``servers:``: more server names served by the same process (issue 23).

The top level describes the first (primary) server, as it always has; each entry of
``servers:`` adds one server (or, with ``count``, a generated series of them) with its own
name, signing key, certificate and, optionally, ``serve_server_wellknown``, ``users``,
``default_room_version``, ``invites`` (those three default to the top level's) and
``listeners`` of its own. Everything else (federation settings, control listener and
token, request log, log level, key refresh interval) is the process's: the top level's.

A generator entry has ``{i}`` in its ``server_name`` and a ``count`` (and ``start``,
default 1): every string of the entry containing ``{i}`` (paths, ``serve_server_wellknown``,
bind addresses, display names) is expanded per server; a string without it (one
certificate valid for all the names, say) is shared.

``serve_server_wellknown`` is not inherited from the top level: an inherited delegation
would send the server's federation traffic to the primary's delegated name, whose Host
header and SNI then cannot tell the servers apart.

Servers without listeners of their own share the top-level listeners, where the TLS
handshake's SNI chooses the certificate and the Host header the server
(``stubserver.app.hosting``); so their hosts (the server name's host and the delegated
name's host, compared case-insensitively) must all differ. A clash is a ConfigError, as
is a name served twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from stubserver.config.listeners import parse_listeners
from stubserver.config.model import CONTROL_RESOURCE, Config, ConfigError, ListenerConfig
from stubserver.config.parse import (
    parse_invites,
    parse_room_version,
    parse_server_name_setting,
    parse_users,
    parse_wellknown,
)
from stubserver.config.values import (
    describe,
    expect_list,
    expect_mapping,
    load_signing_keys,
    resolve_path,
)
from stubserver.discovery.server_name import parse_server_name

#: The mark a generator entry's strings are expanded at.
INDEX_MARK: Final = "{i}"
#: Most servers one process serves (the primary included).
MAX_SERVERS: Final = 10_000

_ENTRY_KEYS: Final = frozenset(
    {
        "server_name",
        "signing_key_path",
        "tls_certificate_path",
        "tls_private_key_path",
        "serve_server_wellknown",
        "users",
        "default_room_version",
        "invites",
        "listeners",
        "count",
        "start",
    }
)
_REQUIRED: Final = (
    "server_name",
    "signing_key_path",
    "tls_certificate_path",
    "tls_private_key_path",
)


def dispatch_hosts(config: Config) -> tuple[str, ...]:
    """The hosts a request to ``config``'s server may carry in its Host header and SNI
    (pure): its name's host and its delegated name's (``serve_server_wellknown``),
    lower-cased, each once."""
    hosts = [parse_server_name(config.server_name).bare_host.lower()]
    if config.serve_server_wellknown is not None:
        delegated = parse_server_name(config.serve_server_wellknown).bare_host.lower()
        if delegated not in hosts:
            hosts.append(delegated)
    return tuple(hosts)


def expand(value: Any, index: int) -> Any:
    """``value`` with ``{i}`` replaced by ``index`` in every string in it (pure)."""
    if isinstance(value, str):
        return value.replace(INDEX_MARK, str(index))
    if isinstance(value, list):
        return [expand(v, index) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, index) for k, v in value.items()}
    return value


def _count(where: str, entry: Mapping[str, Any], key: str, default: int, low: int) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_SERVERS:
        raise ConfigError(
            f"{where}.{key}",
            f"expected a whole number from {low} to {MAX_SERVERS}, got {describe(value)}",
        )
    return value


def entries(where: str, entry: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The server entries one ``servers:`` item stands for: itself, or the ``count``
    expansions of a generator entry (pure)."""
    name = entry.get("server_name")
    generator = isinstance(name, str) and INDEX_MARK in name
    if "count" not in entry and "start" not in entry and not generator:
        yield entry
        return
    if not generator:
        raise ConfigError(f"{where}.server_name", f"must contain {INDEX_MARK} with count")
    if "count" not in entry:
        raise ConfigError(f"{where}.count", f"required when server_name contains {INDEX_MARK}")
    count = _count(where, entry, "count", 1, 1)
    start = _count(where, entry, "start", 1, 0)
    template = {k: v for k, v in entry.items() if k not in ("count", "start")}
    for index in range(start, start + count):
        yield expand(template, index)


def parse_servers(value: object, base: Path, primary: Config) -> tuple[Config, ...]:
    """The servers of ``servers:`` (``value``), each a Config over ``primary``'s process-wide
    settings; paths resolve against ``base``. Raises ConfigError naming the key."""
    servers: list[Config] = []
    seen_names = {primary.server_name: "the top level"}
    shared_hosts = dict.fromkeys(dispatch_hosts(primary), "the top level")
    keys_by_path: dict[Path, Any] = {}
    for n, item in enumerate(expect_list("servers", value)):
        where = f"servers[{n}]"
        raw_entry = expect_mapping(where, item)
        unknown = sorted(str(k) for k in raw_entry if k not in _ENTRY_KEYS)
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", "unknown setting")
        for key in _REQUIRED:
            if key not in raw_entry:
                raise ConfigError(f"{where}.{key}", "required")
        for entry in entries(where, raw_entry):
            if len(servers) + 1 >= MAX_SERVERS:
                raise ConfigError("servers", f"more than {MAX_SERVERS} servers in one process")
            name = parse_server_name_setting(f"{where}.server_name", entry["server_name"])
            if name in seen_names:
                raise ConfigError(
                    f"{where}.server_name", f"{name} is also served by {seen_names[name]}"
                )
            seen_names[name] = where
            key_path = resolve_path(base, f"{where}.signing_key_path", entry["signing_key_path"])
            if key_path not in keys_by_path:
                keys_by_path[key_path] = load_signing_keys(key_path, f"{where}.signing_key_path")
            listeners: tuple[ListenerConfig, ...] = ()
            if "listeners" in entry:
                listeners = parse_listeners(entry, base, prefix=f"{where}.")
                for j, listener in enumerate(listeners):
                    if listener.is_control:
                        raise ConfigError(
                            f"{where}.listeners[{j}].resources",
                            f"{CONTROL_RESOURCE} is served once for every server, by a"
                            " top-level listener",
                        )
            server = replace(
                primary,
                server_name=name,
                signing_keys=keys_by_path[key_path],
                old_signing_keys={},
                serve_server_wellknown=parse_wellknown(
                    entry.get("serve_server_wellknown"), f"{where}.serve_server_wellknown"
                ),
                users=parse_users(entry["users"], f"{where}.users")
                if "users" in entry
                else primary.users,
                default_room_version=parse_room_version(
                    entry.get("default_room_version", primary.default_room_version),
                    f"{where}.default_room_version",
                ),
                invites=parse_invites(entry.get("invites", primary.invites), f"{where}.invites"),
                tls_certificate_path=resolve_path(
                    base, f"{where}.tls_certificate_path", entry["tls_certificate_path"]
                ),
                tls_private_key_path=resolve_path(
                    base, f"{where}.tls_private_key_path", entry["tls_private_key_path"]
                ),
                listeners=listeners if listeners else primary.listeners,
                own_listeners=bool(listeners),
                servers=(),
            )
            if not server.own_listeners:
                _claim_hosts(where, server, shared_hosts)
            servers.append(server)
    return tuple(servers)


def _claim_hosts(where: str, server: Config, claimed: dict[str, str]) -> None:
    """Note ``server``'s dispatch hosts in ``claimed``; ConfigError when one is taken."""
    name_host, *delegated = dispatch_hosts(server)
    for host, key in (
        (name_host, "server_name"),
        *((h, "serve_server_wellknown") for h in delegated),
    ):
        if host in claimed:
            raise ConfigError(
                f"{where}.{key}",
                f"host {host!r} is also {claimed[host]}'s: servers on shared listeners are"
                " told apart by host (SNI, Host header); give it listeners of its own",
            )
        claimed[host] = where
