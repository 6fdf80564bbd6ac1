"""Counting inbound connections: the caps :class:`~stubserver.server.limits.LimitedSite`
enforces as connections are accepted (DESIGN.md's inbound limits; issue 12, row 8).

At most :data:`MAX_CONCURRENT_CONNECTIONS` open at once over all listeners sharing a
:class:`ConnectionCounter`, and at most :data:`MAX_CONNECTIONS_PER_ADDRESS` from one client
address (an IPv6 client: one /64, see :func:`client_address_key`). Control listeners count
their connections apart, in a counter of their own (:data:`MAX_CONTROL_CONNECTIONS` in
all and from one address). At the global cap, the
connection idle longest (no request in progress or partly received) is aborted to make
room; only when none is idle is the newcomer refused instead. So 1,024 idle sockets lock
nobody out. The counter also holds the process-wide slots for bodies over the ordinary
cap (:data:`~stubserver.server.limits.MAX_CONCURRENT_LARGE_BODIES`).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import cast

from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.web import http

#: Most connections open at once over all listeners of one process.
MAX_CONCURRENT_CONNECTIONS = 1024
#: Most connections open at once from one client address (IPv4) or /64 (IPv6): a sixteenth
#: of the global cap, far above what a homeserver opens to a peer (Synapse: one per peer).
MAX_CONNECTIONS_PER_ADDRESS = 64
#: Most connections open at once to the control listeners of one process, and from one
#: address to them (issue 22, row 10): their own budget, apart from the federation
#: listeners'. Their clients are the tests that drive the peer, all from one address and
#: each holding long polls (``GET .../events?wait_ms=...``) open, so one address with
#: hundreds of connections is normal there; the control listener is bound to loopback and
#: asks a bearer token of every request.
MAX_CONTROL_CONNECTIONS = 1024
#: Prefix length under which IPv6 clients are counted together (one customer's network).
IPV6_CLIENT_PREFIX_LENGTH = 64

log = Logger()


def client_address_key(host: str) -> str:
    """The key a client's connections are counted under (pure).

    An IPv4 address counts alone (an IPv4-mapped IPv6 address as its IPv4 address); an IPv6
    address counts with its whole /64, since any client holds at least that many addresses.
    Anything else (a UNIX socket's path, say) counts as given.
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX_LENGTH), strict=False))
    return str(ip)


class ConnectionCounter:
    """Counts open connections against a global and a per-address cap; shared by every
    listener of a process, and keeps the idle ones in order so that the oldest can make room.
    """

    def __init__(self, limit: int, per_address_limit: int = MAX_CONNECTIONS_PER_ADDRESS) -> None:
        self.limit = limit
        self.per_address_limit = per_address_limit
        #: The counted connections and their address keys, so that shutdown can close them.
        self.channels: dict[http.HTTPChannel, str] = {}
        self._per_address: dict[str, int] = {}
        #: Idle counted connections, the one idle longest first.
        self._idle: OrderedDict[http.HTTPChannel, None] = OrderedDict()
        #: Channels holding a body over the ordinary cap (see MAX_CONCURRENT_LARGE_BODIES).
        self.large_bodies: set[http.HTTPChannel] = set()

    @property
    def open(self) -> int:
        """How many connections are counted."""
        return len(self.channels)

    def count_for(self, address_key: str) -> int:
        """How many connections are counted under ``address_key``."""
        return self._per_address.get(address_key, 0)

    def try_admit(self, channel: http.HTTPChannel, address_key: str) -> str | None:
        """Count ``channel`` (as idle), or say why not: None when admitted, else a reason.

        At the global cap the connection idle longest is aborted to make room.
        """
        if self.count_for(address_key) >= self.per_address_limit:
            return f"{self.per_address_limit} connections are open from {address_key}"
        if len(self.channels) >= self.limit and not self._evict_idle():
            return f"{self.limit} connections are open and none is idle"
        self.channels[channel] = address_key
        self._per_address[address_key] = self.count_for(address_key) + 1
        self._idle[channel] = None
        return None

    def _evict_idle(self) -> bool:
        if not self._idle:
            return False
        oldest = next(iter(self._idle))
        log.debug("At the connection cap: closing the connection idle longest")
        self.release(oldest)
        if oldest.transport is not None:
            cast(ITCPTransport, oldest.transport).abortConnection()
        return True

    def mark_idle(self, channel: http.HTTPChannel) -> None:
        """``channel`` has no request in progress: it may be closed to make room."""
        if channel in self.channels:
            self._idle[channel] = None
            self._idle.move_to_end(channel)

    def mark_busy(self, channel: http.HTTPChannel) -> None:
        """``channel`` started a request: it is not closed to make room."""
        self._idle.pop(channel, None)

    def is_idle(self, channel: http.HTTPChannel) -> bool:
        """Whether ``channel`` is counted as idle."""
        return channel in self._idle

    def try_hold_large_body(self, channel: http.HTTPChannel, limit: int) -> bool:
        """Let ``channel`` hold a body over the ordinary cap, if fewer than ``limit`` do."""
        if channel in self.large_bodies:
            return True
        if len(self.large_bodies) >= limit:
            return False
        self.large_bodies.add(channel)
        return True

    def release(self, channel: http.HTTPChannel) -> None:
        """Stop counting ``channel`` (idempotent)."""
        self.large_bodies.discard(channel)
        address_key = self.channels.pop(channel, None)
        if address_key is None:
            return
        self._idle.pop(channel, None)
        remaining = self._per_address[address_key] - 1
        if remaining:
            self._per_address[address_key] = remaining
        else:
            del self._per_address[address_key]

    def abort_all(self) -> int:
        """Abort every open connection (at shutdown); returns how many there were.

        Requests still in flight see their client go: their handlers are cancelled and the
        router's observers record them, so the request log can still write them out.
        """
        channels = list(self.channels)
        for channel in channels:
            if channel.transport is not None:
                cast(ITCPTransport, channel.transport).abortConnection()
        return len(channels)
