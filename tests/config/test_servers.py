"""``servers:``: more servers in one config (issue 23): explicit entries, generator
entries, what they inherit, and every fault a ConfigError naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stubserver.config import ConfigError, UserProfile, load_config
from stubserver.config.servers import dispatch_hosts, entries, expand
from stubserver.signing.keys import ServerSigningKey

KEYS = {name: ServerSigningKey.generate(f"a_{name}") for name in ("top", "s1", "s2", "s3")}


def write(tmp_path: Path, servers: Any, **top: Any) -> Path:
    """A config of primary ``beta.test`` with ``servers`` (and ``top`` keys), beside
    signing keys ``top.key``, ``s1.key``, ``s2.key``, ``s3.key``."""
    for name, key in KEYS.items():
        (tmp_path / f"{name}.key").write_text(key.to_line())
    raw = {
        "server_name": "beta.test",
        "signing_key_path": "top.key",
        "tls_certificate_path": "top.crt",
        "tls_private_key_path": "top.tlskey",
        "listeners": [
            {"port": 8448, "bind_addresses": ["127.0.0.1"]},
            {"port": 0, "resources": ["control"]},
        ],
        "control_token": "tok",
        "users": {"alice": {"displayname": "Alice"}},
        "default_room_version": "11",
        "servers": servers,
        **top,
    }
    path = tmp_path / "stubserver.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def entry(name: str, key: str, **more: Any) -> dict[str, Any]:
    """A server entry named ``name`` with signing key file ``key``."""
    return {
        "server_name": name,
        "signing_key_path": key,
        "tls_certificate_path": f"{name}.crt",
        "tls_private_key_path": f"{name}.tlskey",
        **more,
    }


def error_for(tmp_path: Path, servers: Any, **top: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, servers, **top))
    return info.value


def test_a_config_without_servers_is_one_server(tmp_path: Path) -> None:
    """Without ``servers:``, the config is its primary alone, as before issue 23."""
    path = write(tmp_path, None)
    config = load_config(path)
    assert config.servers == ()
    assert config.every_server == (config,)
    assert config.tls_certificate_path == tmp_path / "top.crt"


def test_explicit_entries_are_servers_of_their_own_over_the_top_levels_settings(
    tmp_path: Path,
) -> None:
    """Each entry is a server with its own name, key and certificate; users, room version
    and invites default to the top level's; process-wide settings are the top level's;
    without listeners of its own it is served on the top-level ones."""
    config = load_config(
        write(
            tmp_path,
            [
                entry("s1.test", "s1.key"),
                entry("s2.test", "s2.key", users={"bob": None}, invites="reject"),
            ],
        )
    )
    primary, s1, s2 = config.every_server
    assert primary.server_name == "beta.test"
    assert (s1.server_name, s1.signing_key.key_id) == ("s1.test", KEYS["s1"].key_id)
    assert s1.tls_certificate_path == tmp_path / "s1.test.crt"
    assert s1.tls_private_key_path == tmp_path / "s1.test.tlskey"
    assert s1.users == {"alice": UserProfile(displayname="Alice")}
    assert (s1.default_room_version, s1.invites) == ("11", "accept")
    assert (s2.users, s2.invites) == ({"bob": UserProfile()}, "reject")
    assert (s1.control_token, s1.listeners, s1.own_listeners) == ("tok", primary.listeners, False)
    assert s1.servers == () and s1.old_signing_keys == {}


def test_serve_server_wellknown_is_not_inherited(tmp_path: Path) -> None:
    """A server's ``serve_server_wellknown`` is its own (absent: none), never the top
    level's: the primary's delegated name is the primary's."""
    config = load_config(
        write(tmp_path, [entry("s1.test", "s1.key")], serve_server_wellknown="fed.test:8448")
    )
    assert config.servers[0].serve_server_wellknown is None


def test_a_generator_entry_expands_every_string_with_the_index(tmp_path: Path) -> None:
    """``count`` servers from ``start``: ``{i}`` is replaced in the name and in every path
    carrying it; a path without it (one certificate for all) is shared."""
    config = load_config(
        write(
            tmp_path,
            [
                {
                    "server_name": "s{i}.test",
                    "count": 3,
                    "signing_key_path": "s{i}.key",
                    "tls_certificate_path": "all.crt",
                    "tls_private_key_path": "all.tlskey",
                    "serve_server_wellknown": "s{i}-fed.test:8448",
                }
            ],
        )
    )
    names = [s.server_name for s in config.servers]
    assert names == ["s1.test", "s2.test", "s3.test"]
    assert [s.signing_key.key_id for s in config.servers] == [
        KEYS[n].key_id for n in ("s1", "s2", "s3")
    ]
    assert {s.tls_certificate_path for s in config.servers} == {tmp_path / "all.crt"}
    assert config.servers[2].serve_server_wellknown == "s3-fed.test:8448"


def test_a_generator_starts_where_told() -> None:
    """``start`` is the first index; ``count`` how many (pure expansion)."""
    raw = {"server_name": "s{i}.test", "count": 2, "start": 0, "signing_key_path": "k{i}"}
    assert [(e["server_name"], e["signing_key_path"]) for e in entries("servers[0]", raw)] == [
        ("s0.test", "k0"),
        ("s1.test", "k1"),
    ]
    assert expand({"a": ["x{i}", 3, {"b": "{i}{i}"}]}, 7) == {"a": ["x7", 3, {"b": "77"}]}


def test_own_listeners_serve_that_server_only(tmp_path: Path) -> None:
    """An entry with ``listeners`` is served there, with its own certificate by default;
    errors name the key under the entry."""
    config = load_config(
        write(
            tmp_path,
            [entry("s1.test", "s1.key", listeners=[{"port": 0, "bind_addresses": ["127.0.0.2"]}])],
        )
    )
    (s1,) = config.servers
    (listener,) = s1.listeners
    assert s1.own_listeners
    assert listener.tls_certificate_path == tmp_path / "s1.test.crt"
    assert listener.config_key == "servers[0].listeners[0]"


def test_dispatch_hosts_are_the_names_and_delegated_hosts_lower_cased(tmp_path: Path) -> None:
    """A server is found by its name's host and its delegated name's host, lower-cased."""
    config = load_config(
        write(tmp_path, [entry("S1.Test:8448", "s1.key", serve_server_wellknown="F.test")])
    )
    assert dispatch_hosts(config.servers[0]) == ("s1.test", "f.test")


@pytest.mark.parametrize(
    ("servers", "key", "problem"),
    [
        ("nope", "servers", "expected a list"),
        ([entry("s1.test", "s1.key", colour="red")], "servers[0].colour", "unknown setting"),
        (
            [{k: v for k, v in entry("s1.test", "s1.key").items() if k != "tls_private_key_path"}],
            "servers[0].tls_private_key_path",
            "required",
        ),
        (
            [entry("s1.test", "s1.key"), entry("s1.test", "s2.key")],
            "servers[1].server_name",
            "also served by servers[0]",
        ),
        ([entry("beta.test", "s1.key")], "servers[0].server_name", "the top level"),
        (
            [entry("s1.test:1", "s1.key"), entry("S1.test:2", "s2.key")],
            "servers[1].server_name",
            "host 's1.test'",
        ),
        (
            [entry("s1.test", "s1.key", serve_server_wellknown="beta.test:8448")],
            "servers[0].serve_server_wellknown",
            "told apart by host",
        ),
        ([entry("s{i}.test", "s1.key")], "servers[0].count", "required"),
        ([entry("s1.test", "s1.key", count=2)], "servers[0].server_name", "must contain {i}"),
        ([entry("s{i}.test", "s1.key", count=0)], "servers[0].count", "from 1"),
        ([entry("s1.test", "s1.key", invites="maybe")], "servers[0].invites", "accept or reject"),
        ([entry("s1.test", "s1.key", users="x")], "servers[0].users", "expected a mapping"),
        (
            [entry("s1.test", "s1.key", default_room_version=11)],
            "servers[0].default_room_version",
            "quoted",
        ),
        ([entry("bad name!", "s1.key")], "servers[0].server_name", ""),
        (
            [entry("s1.test", "s1.key"), entry("s2.test", "missing.key")],
            "servers[1].signing_key_path",
            "missing.key",
        ),
        (
            [entry("s1.test", "s1.key", listeners=[{"port": 0, "resources": ["control"]}])],
            "servers[0].listeners[0].resources",
            "once for every server",
        ),
        (
            [entry("s1.test", "s1.key", listeners=[{"port": "x"}])],
            "servers[0].listeners[0].port",
            "port number",
        ),
    ],
)
def test_bad_entries_are_config_errors_naming_the_key(
    tmp_path: Path, servers: Any, key: str, problem: str
) -> None:
    """Every fault of ``servers:`` stops the program with the key and the problem named."""
    error = error_for(tmp_path, servers)
    assert error.key == key
    assert problem in error.problem


def test_servers_on_listeners_of_their_own_may_share_a_host(tmp_path: Path) -> None:
    """IP-literal names on one address are fine when each has listeners of its own: the
    listener, not the Host header, tells them apart."""
    own = [{"port": 0, "bind_addresses": ["127.0.0.1"]}]
    config = load_config(
        write(
            tmp_path,
            [
                entry("127.0.0.1:9001", "s1.key", listeners=own),
                entry("127.0.0.1:9002", "s2.key", listeners=own),
            ],
            server_name="127.0.0.1:9000",
        )
    )
    assert [s.server_name for s in config.servers] == ["127.0.0.1:9001", "127.0.0.1:9002"]
