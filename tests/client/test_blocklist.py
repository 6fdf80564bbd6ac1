"""The outbound IP blocklist: Synapse's default ranges, their IPv6 forms, the allowlist."""

from __future__ import annotations

import ipaddress

import pytest

from stubserver.client.blocklist import BlockedAddress, IPBlocklist, ipv6_forms_of
from stubserver.config import DEFAULT_IP_RANGE_BLOCKLIST

DEFAULT = IPBlocklist.from_settings(DEFAULT_IP_RANGE_BLOCKLIST, ())

BLOCKED_TABLE = [
    ("127.0.0.1", True),
    ("10.1.2.3", True),
    ("172.16.0.1", True),
    ("172.32.0.1", False),
    ("192.168.1.1", True),
    ("100.64.0.1", True),
    ("169.254.169.254", True),
    ("224.0.0.1", True),
    ("8.8.8.8", False),
    ("1.1.1.1", False),
    ("::1", True),
    ("fe80::1", True),
    ("fd00::1", True),
    ("2001:db8::1", True),
    ("ff02::1", True),
    ("2606:4700::1111", False),
    # IPv4-mapped, IPv4-compatible and 6to4 forms of blocked IPv4 ranges.
    ("::ffff:127.0.0.1", True),
    ("::ffff:10.0.0.1", True),
    ("::ffff:8.8.8.8", False),
    ("::127.0.0.1", True),
    ("::10.0.0.1", True),
    ("2002:7f00:1::", True),
    ("2002:a00:1::1", True),
    ("2002:808:808::", False),
    ("not an address", True),
    # Every spelling of "this host" (0.0.0.0/8 and ::): each reaches our own loopback.
    ("0.0.0.0", True),
    ("0.1.2.3", True),
    ("::", True),
    ("0:0:0:0:0:0:0:0", True),
    ("::ffff:0.0.0.0", True),
    ("::ffff:0:0", True),
    ("::ffff:0.255.255.255", True),
    ("2002::", True),
    ("2002:0:1::1", True),
]


@pytest.mark.parametrize(("address", "blocked"), BLOCKED_TABLE)
def test_default_blocklist(address: str, blocked: bool) -> None:
    """Synapse's default ranges and the IPv6 forms of its IPv4 ranges are blocked."""
    assert DEFAULT.is_blocked(address) is blocked


def test_ipv6_forms_of_a_range() -> None:
    """A /8 yields ::ffff:a.0.0.0/104, ::a.0.0.0/104 and 2002:a00::/24."""
    forms = ipv6_forms_of(ipaddress.IPv4Network("10.0.0.0/8"))
    assert [str(f) for f in forms] == ["::ffff:a00:0/104", "::a00:0/104", "2002:a00::/24"]


def test_allowlist_makes_exceptions() -> None:
    """An allowlisted range is dialable, including its IPv6 forms; others stay blocked."""
    blocklist = IPBlocklist.from_settings(DEFAULT_IP_RANGE_BLOCKLIST, ("127.0.0.0/8",))
    assert not blocklist.is_blocked("127.0.0.22")
    assert not blocklist.is_blocked("::ffff:127.0.0.22")
    assert blocklist.is_blocked("10.0.0.1")


def test_any_blocked_address_drops_all() -> None:
    """When one address of a name is blocked, none of its addresses is usable."""
    usable, blocked = DEFAULT.filter_addresses("mixed.test", ["8.8.8.8", "10.0.0.1"])
    assert usable == ()
    assert blocked == ("10.0.0.1",)
    assert DEFAULT.filter_addresses("ok.test", ["8.8.8.8", "1.1.1.1"]) == (
        ("8.8.8.8", "1.1.1.1"),
        (),
    )


def test_blocked_error_names_address_and_setting() -> None:
    """The error names the address, the host and both ways to allow it."""
    with pytest.raises(BlockedAddress) as info:
        DEFAULT.check("127.0.0.5", "delta.test")
    message = str(info.value)
    assert "127.0.0.5" in message
    assert "delta.test" in message
    assert "ip_range_blocklist" in message
    assert "--allow-ip" in message
    assert info.value.temporary is False


@pytest.mark.parametrize("address", ["0.0.0.0", "0.0.0.1", "::", "::ffff:0.0.0.0", "2002::1"])
def test_unspecified_blocked_even_when_allowed_everything(address: str) -> None:
    """0.0.0.0/8 and :: (with their mapped and 6to4 forms) stay blocked with an empty
    blocklist and an allowlist of everything: they always reach our own host."""
    blocklist = IPBlocklist.from_settings((), ("0.0.0.0/0", "::/0"))
    assert blocklist.is_blocked(address)
    assert not blocklist.is_blocked("127.0.0.1")
    assert not blocklist.is_blocked("::1")
