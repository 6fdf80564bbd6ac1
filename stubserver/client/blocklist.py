"""The outbound IP blocklist: which addresses outbound federation may dial.

The configured ranges (Synapse's ``ip_range_blocklist`` default unless set) are
extended, for every IPv4 range, with the IPv6 forms that reach the same IPv4 host:
IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``) and 6to4
(``2002:aabb:ccdd::``). ``ip_range_allowlist`` makes exceptions. The check applies to
every address actually dialled, .well-known fetches and redirects included (see
:mod:`stubserver.outbound.agent`). When any address of a name is blocked, every address of that
name is dropped (as Synapse does), so a name cannot mix a public and a private address
to reach the private one.

Whatever the settings say, :data:`ALWAYS_BLOCKED_RANGES` (the unspecified addresses
``0.0.0.0/8`` and ``::``, with their IPv6 forms such as ``::ffff:0.0.0.0/104``) are
blocked and no allowlist entry lifts them: dialling them reaches our own host (Linux
treats a connect to ``0.0.0.0`` or ``::`` as one to loopback), and with the system
resolver the names ``0``, ``00`` and ``0x0`` resolve there. Synapse always blocks
``0.0.0.0`` and ``::`` the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Prefix lengths of the IPv6 embeddings of IPv4 (the IPv4 address follows the prefix).
_MAPPED_PREFIX = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPATIBLE_PREFIX = ipaddress.IPv6Network("::/96")
_SIXTOFOUR_PREFIX = ipaddress.IPv6Network("2002::/16")
IPV4_BITS = 32
#: Ranges blocked whatever ``ip_range_blocklist`` and ``ip_range_allowlist`` say: the
#: "this host" network, its IPv4-mapped and 6to4 forms, and the IPv6 unspecified address
#: (each reaches our own loopback). Written out rather than expanded: the IPv4-compatible
#: form of 0.0.0.0/8 (``::/104``) would cover ``::1``, which an operator may allowlist.
ALWAYS_BLOCKED_RANGES: tuple[str, ...] = ("0.0.0.0/8", "::ffff:0.0.0.0/104", "2002::/24", "::/128")


class BlockedAddress(Exception):
    """An address we would dial is in ``ip_range_blocklist`` and not in the allowlist.

    Never temporary: the same address stays blocked until the operator changes a setting.
    """

    temporary = False

    def __init__(self, address: str, host: str | None = None) -> None:
        self.address = address
        self.host = host
        of = f" (of {host})" if host and host != address else ""
        super().__init__(
            f"address {address}{of} is in ip_range_blocklist;"
            f" allow it with ip_range_allowlist or --allow-ip"
        )


def ipv6_forms_of(network: ipaddress.IPv4Network) -> tuple[ipaddress.IPv6Network, ...]:
    """The IPv4-mapped, IPv4-compatible and 6to4 IPv6 ranges that embed ``network``."""
    value = int(network.network_address)
    forms = []
    for prefix, shift in (
        (_MAPPED_PREFIX, 0),
        (_COMPATIBLE_PREFIX, 0),
        (_SIXTOFOUR_PREFIX, 128 - 16 - IPV4_BITS),
    ):
        address = int(prefix.network_address) | (value << shift)
        forms.append(
            ipaddress.IPv6Network((address, prefix.prefixlen + network.prefixlen), strict=False)
        )
    return tuple(forms)


def expand_ranges(ranges: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse CIDR strings and add the IPv6 forms of every IPv4 range."""
    result: list[IPNetwork] = []
    for text in ranges:
        network = ipaddress.ip_network(text, strict=False)
        result.append(network)
        if isinstance(network, ipaddress.IPv4Network):
            result.extend(ipv6_forms_of(network))
    return tuple(result)


@dataclass(frozen=True)
class IPBlocklist:
    """Blocked ranges (IPv6 forms included) and the allowlist's exceptions."""

    blocked: tuple[IPNetwork, ...]
    allowed: tuple[IPNetwork, ...] = ()
    always_blocked: tuple[IPNetwork, ...] = tuple(
        ipaddress.ip_network(r) for r in ALWAYS_BLOCKED_RANGES
    )

    @classmethod
    def from_settings(cls, blocklist: Sequence[str], allowlist: Sequence[str]) -> IPBlocklist:
        """Build from the ``ip_range_blocklist`` and ``ip_range_allowlist`` settings."""
        return cls(blocked=expand_ranges(blocklist), allowed=expand_ranges(allowlist))

    def is_blocked(self, address: str | IPAddress) -> bool:
        """True when ``address`` may not be dialled. Unparseable addresses are blocked."""
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%")[0])
        if any(ip in net for net in self.always_blocked if net.version == ip.version):
            return True
        if any(ip in net for net in self.allowed if net.version == ip.version):
            return False
        return any(ip in net for net in self.blocked if net.version == ip.version)

    def check(self, address: str, host: str | None = None) -> None:
        """Raise :class:`BlockedAddress` when ``address`` may not be dialled."""
        if self.is_blocked(address):
            raise BlockedAddress(address, host)

    def filter_addresses(
        self, host: str, addresses: Sequence[str]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(usable, blocked)``: if any address of ``host`` is blocked, none is usable."""
        blocked = tuple(a for a in addresses if self.is_blocked(a))
        if blocked:
            return (), blocked
        return tuple(addresses), ()
