"""Counting inbound connections (stubserver.server.connections): the address keys."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from stubserver.server.connections import client_address_key


class ClientAddressKeyTests(SynchronousTestCase):
    CASES: tuple[tuple[str, str], ...] = (
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("/run/stub.sock", "/run/stub.sock"),
    )

    def test_keys(self) -> None:
        """IPv4 counts per address, IPv4-mapped as IPv4, IPv6 per /64, anything else as is."""
        for host, key in self.CASES:
            assert client_address_key(host) == key, host
