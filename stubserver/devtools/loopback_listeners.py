"""Listeners on 127.0.0.1 and ::1 sharing one port, that count who reached them.

They stand for "a service on our own host" in the blocklist tests and the soak: a
connection to them means the server under test dialled its own loopback.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

#: Ports tried before giving up on one free on both addresses.
PORT_ATTEMPTS = 20


@dataclass
class LoopbackListeners:
    """Non-blocking listeners on 127.0.0.1 and ::1 on ``port``."""

    port: int
    v4: socket.socket
    v6: socket.socket

    @classmethod
    def open(cls, backlog: int = 64) -> LoopbackListeners:
        """Listen on a port free on both addresses."""
        for _ in range(PORT_ATTEMPTS):
            v4 = socket.socket()
            v4.bind(("127.0.0.1", 0))
            port: int = v4.getsockname()[1]
            v6 = socket.socket(socket.AF_INET6)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                v6.bind(("::1", port))
            except OSError:
                v4.close()
                v6.close()
                continue
            for s in (v4, v6):
                s.listen(backlog)
                s.setblocking(False)
            return cls(port, v4, v6)
        raise RuntimeError("no port free on both 127.0.0.1 and ::1")

    def accept_all(self) -> int:
        """Accept (and close) every connection waiting; how many there were."""
        seen = 0
        for listener in (self.v4, self.v6):
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                conn.close()
                seen += 1
        return seen

    def close(self) -> None:
        """Stop listening."""
        self.v4.close()
        self.v6.close()
