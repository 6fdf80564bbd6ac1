"""The keys of the servers of one process, read from their own key documents (issue 23)."""

from __future__ import annotations

from twisted.internet.task import Clock

from stubserver.config import OldVerifyKey
from stubserver.server_keys.key_document import KeyDocumentSource
from stubserver.server_keys.local_keys import LocalServerKeys, keys_from_document
from stubserver.signing.keys import ServerSigningKey, sign_json

CURRENT = ServerSigningKey.generate("a_now")
OLD = ServerSigningKey.generate("a_old")
OLD_EXPIRED_TS = 1_600_000_000_000
VALIDITY_MS = 3_600_000
NOW_S = 1_700_000_000.0


def source(clock: Clock, name: str = "s1.test") -> KeyDocumentSource:
    old = {OLD.key_id: OldVerifyKey(OLD.verify_key_base64, OLD_EXPIRED_TS)}
    return KeyDocumentSource(clock, name, [CURRENT], old, VALIDITY_MS)


def clock_at(seconds: float = NOW_S) -> Clock:
    clock = Clock()
    clock.advance(seconds)
    return clock


def test_a_documents_keys_are_its_current_and_old_keys_and_its_validity() -> None:
    """The keys read from a server's document are those a fetch of it gives: current
    and old verify keys (with their expiry), valid_until_ts, the document's bytes; no
    target (nothing was fetched)."""
    clock = clock_at()
    document, encoded = source(clock).current_encoded()
    keys = keys_from_document("s1.test", document, encoded, int(NOW_S * 1000))
    assert keys is not None
    assert dict(keys.verify_keys) == {CURRENT.key_id: CURRENT.key.verify_key}
    assert dict(keys.old_verify_keys) == {OLD.key_id: (OLD.key.verify_key, OLD_EXPIRED_TS)}
    assert keys.valid_until_ts == int(NOW_S * 1000) + VALIDITY_MS
    assert keys.response_bytes is encoded
    assert keys.response == document
    assert keys.target is None


def test_a_document_that_does_not_verify_gives_no_keys() -> None:
    """The document is checked as a fetched one is: another server's name, or a
    signature that does not verify, gives no keys."""
    clock = clock_at()
    document, encoded = source(clock).current_encoded()
    now_ms = int(NOW_S * 1000)
    assert keys_from_document("s2.test", document, encoded, now_ms) is None
    unsigned = {k: v for k, v in document.items() if k != "signatures"}
    # Signed with another key under the current key's ID.
    forged = sign_json(unsigned, "s1.test", ServerSigningKey(CURRENT.version, OLD.key))
    assert keys_from_document("s1.test", forged, encoded, now_ms) is None


def test_the_keys_are_read_once_per_build_of_the_document() -> None:
    """Asked again, the same keys are answered until the document is rebuilt (half its
    validity gone); then the new document's, valid for longer."""
    clock = clock_at()
    local = LocalServerKeys(clock, {"s1.test": source(clock)}.get)
    first = local.keys("s1.test")
    assert first is not None and local.keys("s1.test") is first
    clock.advance(VALIDITY_MS / 1000 * 0.6)
    renewed = local.keys("s1.test")
    assert renewed is not None and renewed.valid_until_ts > first.valid_until_ts


def test_a_server_sees_its_siblings_keys_but_not_its_own_nor_a_strangers() -> None:
    """``seen_from(name)`` answers the other servers of the process; its own name and
    names the process does not serve are None (fetched as before)."""
    clock = clock_at()
    local = LocalServerKeys(clock, {n: source(clock, n) for n in ("s1.test", "s2.test")}.get)
    lookup = local.seen_from("s1.test")
    sibling = lookup("s2.test")
    assert sibling is not None and sibling.server_name == "s2.test"
    assert lookup("s1.test") is None
    assert lookup("elsewhere.test") is None
