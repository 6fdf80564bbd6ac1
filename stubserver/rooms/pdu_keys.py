"""Fetching the verify keys that received PDUs need, before the pure signature checks.

The checks themselves (``stubserver.rooms.transaction.verify_with_keys``) are
synchronous and take a synchronous key lookup. The keys live on other servers, so the
Twisted shell first collects every ``(server, key_id, origin_server_ts)`` the PDUs'
signatures call for (:func:`latest_key_requests`, pure: one lookup per ``(server, key_id)`` at
the latest ``origin_server_ts`` that needs it, as Synapse's keyring asks at the largest
``minimum_valid_until_ts``), fetches them concurrently with a bound (:func:`fetch_keys`),
then verifies against what was found (:func:`verifier_for`). A key valid until the
latest time is valid for every earlier event; when none is, the earlier times are looked
up on their own (:func:`fallback_requests`), so an old key still serves old events.

Spec: Server-Server API "Validating hashes and signatures on received events"; rooms.md
1.3 (only the sender's server must sign in v3+, and for a restricted join the
authorising server; the key must be valid at the event's ``origin_server_ts``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from nacl.signing import VerifyKey
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, gatherResults
from twisted.logger import Logger

from stubserver.rooms.event import Event
from stubserver.rooms.transaction import KeyLookup, VerifyPdu, required_signers, verify_with_keys

#: Most ed25519 key IDs tried per required signer of one event (a server signs with one).
MAX_KEY_IDS_PER_SIGNER: Final = 4
#: Most key lookups one request starts (a transaction's 50 PDUs from a few servers need
#: far fewer); lookups past it count as "no key".
MAX_KEY_LOOKUPS_PER_REQUEST: Final = 200
#: Most key lookups in flight at once for one request.
MAX_CONCURRENT_KEY_LOOKUPS: Final = 8

#: ``fetch_verify_key(server_name, key_id, minimum_valid_until_ts)``: the key, valid at
#: least until that time (ms), or None when the server has no such key.
FetchVerifyKey = Callable[[str, str, int], "Deferred[VerifyKey | None]"]
KeyRequest = tuple[str, str, int]

log = Logger()


def latest_key_requests(events: Iterable[Event]) -> list[KeyRequest]:
    """The lookups of :func:`key_requests`, one per ``(server, key_id)``, at the latest
    time any of the events needs, in order of first need."""
    return _latest(key_requests(events))


def _latest(requests: Iterable[KeyRequest]) -> list[KeyRequest]:
    latest: dict[tuple[str, str], int] = {}
    for server, key_id, ts in requests:
        if (server, key_id) in latest:
            latest[(server, key_id)] = max(latest[(server, key_id)], ts)
        elif len(latest) < MAX_KEY_LOOKUPS_PER_REQUEST:
            latest[(server, key_id)] = ts
    return [(server, key_id, ts) for (server, key_id), ts in latest.items()]


def fallback_requests(
    events: Iterable[Event], found: Mapping[KeyRequest, VerifyKey]
) -> list[KeyRequest]:
    """The lookups, at each event's own time, for the ``(server, key_id)`` pairs whose
    lookup at the latest time found no key (in ``found``); at most
    :data:`MAX_KEY_LOOKUPS_PER_REQUEST`."""
    return _fallback(key_requests(events), found)


def _fallback(
    requests: Iterable[KeyRequest], found: Mapping[KeyRequest, VerifyKey]
) -> list[KeyRequest]:
    served = {(server, key_id) for server, key_id, _ in found}
    return [r for r in requests if (r[0], r[1]) not in served]


def key_requests(events: Iterable[Event]) -> list[KeyRequest]:
    """The ``(server, key_id, minimum_valid_until_ts)`` lookups verifying ``events``
    needs, without repeats, in order, at most :data:`MAX_KEY_LOOKUPS_PER_REQUEST`."""
    found: dict[KeyRequest, None] = {}
    for event in events:
        signatures = event.pdu.get("signatures")
        if not isinstance(signatures, Mapping):
            continue
        for server in required_signers(event):
            block = signatures.get(server)
            if not isinstance(block, Mapping):
                continue
            key_ids = sorted(k for k in block if isinstance(k, str) and k.startswith("ed25519:"))
            for key_id in key_ids[:MAX_KEY_IDS_PER_SIGNER]:
                found[(server, key_id, event.origin_server_ts)] = None
                if len(found) >= MAX_KEY_LOOKUPS_PER_REQUEST:
                    return list(found)
    return list(found)


async def fetch_keys(
    fetch_verify_key: FetchVerifyKey,
    requests: Iterable[KeyRequest],
    max_concurrent: int = MAX_CONCURRENT_KEY_LOOKUPS,
) -> dict[KeyRequest, VerifyKey]:
    """Run the lookups, at most ``max_concurrent`` at a time; the keys found. A lookup
    that fails is logged and counts as "no key" (the event's check then fails)."""
    semaphore = DeferredSemaphore(max_concurrent)
    found: dict[KeyRequest, VerifyKey] = {}

    async def one(request: KeyRequest) -> None:
        try:
            key = await semaphore.run(fetch_verify_key, *request)
        except CancelledError:
            raise
        except Exception as e:
            log.info(
                "No key {key_id} of {server}: {error}",
                server=request[0],
                key_id=request[1],
                error=e,
            )
            return
        if key is not None:
            found[request] = key

    pending = [Deferred.fromCoroutine(one(request)) for request in requests]
    if pending:
        await gatherResults(pending, consumeErrors=True)
    return found


def lookup_from(keys: Mapping[KeyRequest, VerifyKey]) -> KeyLookup:
    """A synchronous :data:`~stubserver.rooms.transaction.KeyLookup` over fetched keys: a
    key found at a time at least as late as the one asked about, or at exactly that time."""
    latest = {(server, key_id): (ts, key) for (server, key_id, ts), key in keys.items()}

    def lookup(server: str, key_id: str, minimum_valid_until_ts: int) -> VerifyKey | None:
        exact = keys.get((server, key_id, minimum_valid_until_ts))
        if exact is not None:
            return exact
        found = latest.get((server, key_id))
        if found is not None and found[0] >= minimum_valid_until_ts:
            return found[1]
        return None

    return lookup


async def verifier_for(fetch_verify_key: FetchVerifyKey, events: Iterable[Event]) -> VerifyPdu:
    """Fetch the keys ``events`` need (module docstring: the latest time first, each
    event's own time for what that did not find); a :data:`VerifyPdu` checking with them."""
    # The events' signatures are read once for both rounds (issue 22: they were read
    # again for the fallback, even when every key had been found).
    requests = key_requests(events)
    keys = await fetch_keys(fetch_verify_key, _latest(requests))
    fallback = _fallback(requests, keys)
    if fallback:
        keys.update(await fetch_keys(fetch_verify_key, fallback))
    return verify_with_keys(lookup_from(keys))
