"""How often a server's keys may be fetched afresh: once a minute per server
(:class:`RefetchLimit`), shared by everything that asks for keys on demand.

Two paths fetch a server's keys because something named a key we do not hold: the
X-Matrix check of an inbound request (``stubserver.auth.authenticator``: a key ID not in
the cached keys, perhaps rotated) and the signature checks of received PDUs
(``stubserver.app.rooms_wiring.verify_key_lookup``: keys of any server a PDU names). Both
take their turn from one :class:`RefetchLimit`, so neither can be used to make us ask a
server for its keys more than once a minute (issue 22 row 6: 25 fetches per ``/send``
toward any server an attacker named). Synapse's keyring batches the lookups of one
request per server and caches what it fetched (``synapse/crypto/keyring.py``,
``Keyring``, ``_FetchKeyRequest`` batching; read for behaviour only).
"""

from __future__ import annotations

from typing import Final

from twisted.internet.interfaces import IReactorTime

from stubserver.cache import BoundedCache

#: Least time between two on-demand fetches of one server's keys, in seconds.
REFETCH_INTERVAL_SECONDS: Final = 60
#: Most servers whose last on-demand fetch is remembered (the least recent is forgotten).
MAX_REMEMBERED_SERVERS: Final = 10_000


class RefetchLimit:
    """Allows one on-demand key fetch per server per :data:`REFETCH_INTERVAL_SECONDS`."""

    def __init__(
        self,
        clock: IReactorTime,
        interval_seconds: float = REFETCH_INTERVAL_SECONDS,
        max_servers: int = MAX_REMEMBERED_SERVERS,
    ) -> None:
        self._interval = interval_seconds
        # server -> True while another fetch is not allowed
        self._recent: BoundedCache[str, bool] = BoundedCache(clock, max_entries=max_servers)

    def allow(self, server_name: str) -> bool:
        """True (and the turn is taken) when ``server_name``'s keys may be fetched now."""
        if self._recent.get(server_name) is not None:
            return False
        self._recent.set(server_name, True, self._interval)
        return True
