"""The key document: its content, Complement's checks, signatures and rebuild timing."""

from __future__ import annotations

import json
import re
from typing import Any

import signedjson.key
import signedjson.sign
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from stubserver.config import OldVerifyKey
from stubserver.server_keys.key_document import KeyDocumentSource, build_key_document, needs_rebuild
from stubserver.signing.keys import ServerSigningKey

DAY_MS = 86_400_000
OLD = {"ed25519:old": OldVerifyKey(key="A" * 43, expired_ts=1_000)}


def complement_problems(doc: dict[str, Any], server_name: str, now_ms: int) -> list[str]:
    """Complement's checks of a key document (TestInboundFederationKeys); [] when all pass."""
    problems = []
    if doc["server_name"] != server_name:
        problems.append("server_name")
    if doc["valid_until_ts"] <= now_ms:
        problems.append("valid_until_ts not in the future")
    for key_id in [*doc["verify_keys"], *doc["old_verify_keys"]]:
        if not re.fullmatch(r"ed25519:[a-zA-Z0-9_]+", key_id):
            problems.append(f"key id {key_id}")
    if set(doc["verify_keys"]) & set(doc["old_verify_keys"]):
        problems.append("a key id in both maps")
    if len(doc["signatures"]) != 1:
        problems.append("not exactly one entry in signatures")
    for key_id, entry in doc["verify_keys"].items():
        version = key_id.split(":", 1)[1]
        verify_key = signedjson.key.decode_verify_key_base64("ed25519", version, entry["key"])
        try:
            signedjson.sign.verify_signed_json(doc, server_name, verify_key)
        except signedjson.sign.SignatureVerifyException:
            problems.append(f"signature by {key_id}")
    return problems


class BuildTests(SynchronousTestCase):
    def test_content(self) -> None:
        """The document lists current and old keys, the expiry and the server name."""
        key = ServerSigningKey.generate("a_1")
        doc = build_key_document("beta.test", [key], OLD, 5_000)
        assert {k: v for k, v in doc.items() if k != "signatures"} == {
            "server_name": "beta.test",
            "valid_until_ts": 5_000,
            "verify_keys": {"ed25519:a_1": {"key": key.verify_key_base64}},
            "old_verify_keys": {"ed25519:old": {"key": "A" * 43, "expired_ts": 1_000}},
        }

    def test_passes_complement_checks(self) -> None:
        """A document with two current keys and one old key passes Complement's checks."""
        keys = [ServerSigningKey.generate("a_1"), ServerSigningKey.generate("a_2")]
        doc = build_key_document("beta.test", keys, OLD, 10_000)
        assert complement_problems(doc, "beta.test", 9_999) == []
        assert set(doc["signatures"]["beta.test"]) == {"ed25519:a_1", "ed25519:a_2"}

    def test_old_keys_do_not_sign(self) -> None:
        """Only current keys sign the document."""
        doc = build_key_document("beta.test", [ServerSigningKey.generate("a_1")], OLD, 1)
        assert list(doc["signatures"]["beta.test"]) == ["ed25519:a_1"]

    def test_needs_a_key(self) -> None:
        """A document without a signing key is refused."""
        with self.assertRaises(ValueError):  # type: ignore[no-untyped-call]
            build_key_document("beta.test", [], {}, 1)


class RebuildTests(SynchronousTestCase):
    def test_needs_rebuild_at_half_validity(self) -> None:
        """A document is rebuilt once less than half of its validity remains."""
        assert not needs_rebuild(now_ms=1_000, built_at_ms=1_000, valid_until_ts=3_000)
        assert not needs_rebuild(now_ms=2_000, built_at_ms=1_000, valid_until_ts=3_000)
        assert needs_rebuild(now_ms=2_001, built_at_ms=1_000, valid_until_ts=3_000)
        assert needs_rebuild(now_ms=999, built_at_ms=1_000, valid_until_ts=3_000)

    def test_source_reuses_then_rebuilds(self) -> None:
        """The source serves one document until half its validity passed, then a new one."""
        clock = Clock()
        clock.advance(1_000)
        source = KeyDocumentSource(
            clock, "beta.test", [ServerSigningKey.generate("a_1")], {}, DAY_MS
        )
        first = source.current()
        assert first["valid_until_ts"] == 1_000_000 + DAY_MS
        clock.advance(DAY_MS / 1000 / 2)
        assert source.current() is first
        clock.advance(1)
        second = source.current()
        assert second["valid_until_ts"] == 1_000_000 + DAY_MS + DAY_MS // 2 + 1_000
        assert complement_problems(second, "beta.test", int(clock.seconds() * 1000)) == []

    def test_encoded_bytes_follow_each_build(self) -> None:
        """The cached JSON bytes are the current document's, before and after a rebuild."""
        clock = Clock()
        clock.advance(1_000)
        source = KeyDocumentSource(
            clock, "beta.test", [ServerSigningKey.generate("a_1")], {}, DAY_MS
        )
        body, encoded = source.current_encoded()
        assert json.loads(encoded) == body
        clock.advance(DAY_MS / 1000 / 2 + 1)
        new_body, new_encoded = source.current_encoded()
        assert new_body["valid_until_ts"] != body["valid_until_ts"]
        assert json.loads(new_encoded) == new_body

    def test_the_answer_is_made_once_per_build(self) -> None:
        """The key endpoint's answer is one object until the document is rebuilt (issue 22:
        no response made per request), and always carries the current document's bytes."""
        clock = Clock()
        clock.advance(1_000)
        source = KeyDocumentSource(
            clock, "beta.test", [ServerSigningKey.generate("a_1")], {}, DAY_MS
        )
        first = source.current_response()
        assert source.current_response() is first
        assert (first.status, first.body, first.encoded) == (200, *source.current_encoded())
        clock.advance(DAY_MS / 1000 / 2 + 1)
        second = source.current_response()
        assert second is not first
        assert (second.status, second.body, second.encoded) == (200, *source.current_encoded())
        assert second.body["valid_until_ts"] != first.body["valid_until_ts"]
