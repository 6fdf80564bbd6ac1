"""Pure parts of ``stubserver.testing``: strict mode's judgement and a peer's identity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stubserver.app.federation import build_federation_extensions
from stubserver.app.server_parts import site_parts
from stubserver.app.site import routes_for
from stubserver.config import load_config
from stubserver.testing._files import SPEC_FEDERATION_PORT, choose_identity
from stubserver.testing._strict import SERVED_ROUTES, is_served, unexpected_requests
from tests.support import FakeReactor


@pytest.mark.parametrize(
    ("method", "uri"),
    [
        ("GET", "/_matrix/key/v2/server"),
        ("GET", "/_matrix/key/v2/query/other.test"),
        ("POST", "/_matrix/key/v2/query"),
        ("GET", "/_matrix/federation/v1/version"),
        ("HEAD", "/_matrix/federation/v1/version"),
        ("GET", "/_matrix/federation/v1/query/profile?user_id=%40a%3Ab"),
        ("GET", "/_matrix/federation/v1/make_join/%21r%3Aa/%40u%3Ab?ver=12"),
        ("PUT", "/_matrix/federation/v2/send_join/%21r%3Aa/%24e"),
        ("PUT", "/_matrix/federation/v1/send/txn1"),
        ("GET", "/_matrix/federation/v1/backfill/%21r%3Aa?v=%24e&limit=10"),
        ("POST", "/_matrix/federation/v1/get_missing_events/%21r%3Aa"),
        ("GET", "/_matrix/federation/v1/query/directory?room_alias=%23a%3Ab"),
    ],
)
def test_requests_to_served_routes_are_expected(method: str, uri: str) -> None:
    """Every route a federation listener serves counts as expected, query string or not."""
    assert is_served(method, uri)


@pytest.mark.parametrize(
    ("method", "uri"),
    [
        ("GET", "/_matrix/federation/v1/no_such_endpoint"),
        ("PUT", "/_matrix/federation/v1/version"),
        ("GET", "/_matrix/federation/v1/send/txn1"),
        ("PUT", "/_matrix/federation/v1/send/"),
        ("PUT", "/_matrix/federation/v1/send/txn1/extra"),
        ("POST", "/_matrix/federation/v1/user/keys/claim"),
        ("POST", "/_matrix/federation/v1/user/devices/%40a%3Ab"),
        ("PUT", "/_matrix/federation/v1/send_join/%21r%3Aa/%24e"),
    ],
)
def test_unknown_paths_and_wrong_methods_are_not_served(method: str, uri: str) -> None:
    """An unknown path, a missing segment or a wrong method is what the peer answers 404/405."""
    assert not is_served(method, uri)


def test_unexpected_requests_keeps_unknown_and_declared_ones_in_order() -> None:
    """Strict mode objects to unknown paths and to paths under a declared prefix."""
    entries = [
        {"method": "PUT", "uri": "/_matrix/federation/v1/send/1"},
        {"method": "GET", "uri": "/_matrix/federation/v1/unknown"},
        {"method": "GET", "uri": "/_matrix/federation/v1/backfill/!r:a?v=x"},
        {"method": "GET", "uri": "/_matrix/key/v2/server"},
    ]
    found = unexpected_requests(entries, ["/_matrix/federation/v1/backfill/"])
    assert [e["uri"] for e in found] == [entries[1]["uri"], entries[2]["uri"]]


@pytest.mark.parametrize(
    ("server_name", "port", "expected"),
    [
        ("a.test:8500", None, ("a.test:8500", 8500)),
        ("a.test:8500", 8500, ("a.test:8500", 8500)),
        ("a.test", None, ("a.test", SPEC_FEDERATION_PORT)),
        ("a.test", 9000, ("a.test", 9000)),
        (None, 4242, ("127.0.0.5:4242", 4242)),
    ],
)
def test_the_bound_port_follows_the_server_name(
    server_name: str | None, port: int | None, expected: tuple[str, int]
) -> None:
    """A name's explicit port is bound; without one 8448; no name: the address and a port."""
    assert choose_identity(server_name, "127.0.0.5", port) == expected


def test_an_ipv6_bind_address_makes_a_bracketed_name() -> None:
    """No name and an IPv6 bind: the name is the bracketed literal with the port."""
    assert choose_identity(None, "::1", 4242) == ("[::1]:4242", 4242)


def test_a_port_that_contradicts_the_name_is_refused() -> None:
    """``port`` differing from the name's own port is a usage error."""
    with pytest.raises(ValueError, match="differs"):
        choose_identity("a.test:8500", "127.0.0.1", 8501)


def test_served_routes_are_the_federation_listeners_route_table(tmp_path: Path) -> None:
    """SERVED_ROUTES (strict mode's copy) is exactly what `run` serves on a federation
    listener of a server with rooms: key document and version, profile, notary, rooms."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "stubserver",
            "generate",
            "--server-name",
            "r.test",
            "--dir",
            str(tmp_path),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    config = load_config(Path(out))
    reactor = FakeReactor()
    extensions = build_federation_extensions(config, reactor)
    parts = site_parts(config, reactor, extensions)
    table = routes_for(
        frozenset({"federation"}), config, extensions.key_document, parts.extra_routes
    )
    assert {(r.method, r.pattern) for r in table} == set(SERVED_ROUTES)
