"""The keys of the servers one process serves, known from their own key documents
(issue 23: one process, a hundred servers).

A server of the process that needs the keys of another server of the same process (a PDU
it signed, a request it sent) takes them from that server's :class:`KeyDocumentSource`,
the document its ``/_matrix/key/v2/server`` serves, instead of asking over HTTPS: when
server k of a room joins, the send_join state holds the member events of the k - 1 that
joined before, so fetching each of their keys over the network costs O(N²) TLS requests
to ourselves (about 5,000 for 100 servers).

The document goes through the same check as a fetched one
(:func:`~stubserver.server_keys.key_response_check.check_key_response`: server name,
signatures, ``valid_until_ts``), and becomes the same :class:`ServerKeys` (current and old
verify keys, ``valid_until_ts``, the document's bytes for the notary; no ``target``: it
was not fetched), so whatever uses fetched keys uses these unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from stubserver.server_keys.fetcher import ServerKeys, keys_of_check
from stubserver.server_keys.key_document import KeyDocumentSource
from stubserver.server_keys.key_response_check import check_key_response
from stubserver.signing.canonical_json import JsonDict

MS_PER_SECOND: Final = 1000

log = Logger()

#: A server's keys by its name when it is a server of this process (else None).
LocalKeyLookup = Callable[[str], ServerKeys | None]


def keys_from_document(
    server_name: str, document: JsonDict, encoded: bytes, now_ms: int
) -> ServerKeys | None:
    """``server_name``'s keys from its key ``document`` (``encoded``: its JSON bytes),
    checked as a fetched document is at ``now_ms`` (pure); None when the check fails."""
    check = check_key_response(document, server_name, now_ms)
    if check.error is not None:
        return None
    return keys_of_check(server_name, check, encoded, None)


class LocalServerKeys:
    """The keys of the servers of one process, by name, from their key documents.

    ``documents`` gives the key document of a server of the process by its name (None for
    any other name); each document's keys are checked once per build of the document (it
    is rebuilt when half its validity is gone) and shared by every server asking.
    """

    def __init__(
        self, clock: IReactorTime, documents: Callable[[str], KeyDocumentSource | None]
    ) -> None:
        self._clock = clock
        self._documents = documents
        # server name -> (the document's bytes the keys were read from, the keys)
        self._checked: dict[str, tuple[bytes, ServerKeys]] = {}

    def keys(self, server_name: str) -> ServerKeys | None:
        """The keys of ``server_name`` when it is a server of this process, else None."""
        source = self._documents(server_name)
        if source is None:
            return None
        document, encoded = source.current_encoded()
        checked = self._checked.get(server_name)
        if checked is not None and checked[0] is encoded:
            return checked[1]
        now_ms = int(self._clock.seconds() * MS_PER_SECOND)
        keys = keys_from_document(server_name, document, encoded, now_ms)
        if keys is None:
            # Our own document always passes; should it not, the keys are fetched as any
            # other server's would be (and the failure shows there, with its reason).
            log.error("The key document of {server} does not verify", server=server_name)
            return None
        self._checked[server_name] = (encoded, keys)
        return keys

    def seen_from(self, server_name: str) -> LocalKeyLookup:
        """The lookup of ``server_name``'s siblings: every server of the process but itself
        (its own keys are fetched as before, as in a process of one server)."""

        def lookup(name: str) -> ServerKeys | None:
            return None if name == server_name else self.keys(name)

        return lookup


def no_local_keys(server_name: str) -> ServerKeys | None:
    """The lookup of a server without siblings: none is known locally."""
    return None


__all__ = (
    "LocalKeyLookup",
    "LocalServerKeys",
    "keys_from_document",
    "no_local_keys",
)
