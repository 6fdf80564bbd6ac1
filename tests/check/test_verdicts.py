"""The pure verdicts of ``check``: key checks, the signed request, the way back, the notary."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from stubserver.check.hints import (
    HINT_AUTH_STRIPPED,
    HINT_CANNOT_FETCH_OUR_KEYS,
    HINT_URI_REWRITTEN,
)
from stubserver.check.verdicts import (
    check_keys,
    judge_signed_response,
    judge_way_back,
    notary_query,
)
from stubserver.outbound.signed_request import FederationIdentity
from stubserver.signing.keys import ServerSigningKey
from tests.check.samples import NOW_MS, signed_keys


class CheckKeysTests(SynchronousTestCase):
    """``check_keys`` computes gomatrixserverlib's KeyChecks and the tester's certificate rule."""

    def setUp(self) -> None:
        self.key = ServerSigningKey.generate("a1")

    def test_valid(self) -> None:
        """A self-signed, current response for the right name passes every check."""
        checks, verify_keys = check_keys(
            "beta.test", NOW_MS, signed_keys("beta.test", self.key), valid_certificates=True
        )
        assert checks.all_checks_ok
        assert checks.all_ed25519_checks_ok is True
        assert verify_keys == {"ed25519:a1": self.key.verify_key_base64}
        assert checks.to_json()["Ed25519Checks"] == {
            "ed25519:a1": {"ValidEd25519": True, "MatchingSignature": True}
        }

    def test_table(self) -> None:
        """Each failing condition turns exactly its own check off."""
        other = ServerSigningKey.generate("b2")
        tampered = dict(signed_keys("beta.test", self.key))
        tampered["valid_until_ts"] = NOW_MS + 1
        wrong_sig = signed_keys("beta.test", self.key)
        wrong_sig["verify_keys"] = {other.key_id: {"key": other.verify_key_base64}}
        cases: list[tuple[str, object, bool, dict[str, object], bool]] = [
            # (name, response, certificates ok, expected fields, verify keys given)
            (
                "wrong name",
                signed_keys("gamma.test", self.key),
                True,
                {"AllChecksOK": False, "MatchingServerName": False, "FutureValidUntilTS": True},
                False,
            ),
            (
                "expired",
                signed_keys("beta.test", self.key, valid_until=NOW_MS - 1),
                True,
                {"AllChecksOK": False, "FutureValidUntilTS": False, "MatchingServerName": True},
                False,
            ),
            (
                "tampered",
                tampered,
                True,
                {"AllChecksOK": False, "AllEd25519ChecksOK": False},
                False,
            ),
            (
                "signature by another key",
                wrong_sig,
                True,
                {"AllChecksOK": False, "AllEd25519ChecksOK": False, "HasEd25519Key": True},
                False,
            ),
            (
                "no keys",
                {"server_name": "beta.test", "valid_until_ts": NOW_MS + 10, "verify_keys": {}},
                True,
                {"AllChecksOK": False, "HasEd25519Key": False, "AllEd25519ChecksOK": None},
                False,
            ),
            (
                "bad certificate only",
                signed_keys("beta.test", self.key),
                False,
                {"AllChecksOK": False, "ValidCertificates": False, "AllEd25519ChecksOK": True},
                True,
            ),
            (
                "not an object",
                [1, 2],
                True,
                {"AllChecksOK": False, "MatchingServerName": False, "HasEd25519Key": False},
                False,
            ),
        ]
        for name, response, certs_ok, expected, keys_given in cases:
            checks, verify_keys = check_keys(
                "beta.test", NOW_MS, response, valid_certificates=certs_ok
            )
            got = checks.to_json()
            for field, value in expected.items():
                assert got[field] == value, f"{name}: {field}"
            assert (verify_keys is not None) == keys_given, name


class SignedRequestVerdictTests(SynchronousTestCase):
    """The answer to our signed request names what broke on the way."""

    def test_table(self) -> None:
        """Each kind of answer maps to its verdict and hint (Synapse's and our messages)."""
        cases: list[tuple[int, object, bool, str | None]] = [
            (200, {"displayname": "x"}, True, None),
            (404, {"errcode": "M_UNRECOGNIZED"}, True, None),
            (403, {"errcode": "M_FORBIDDEN"}, True, None),
            (
                401,
                {"errcode": "M_UNAUTHORIZED", "error": "Missing Authorization headers"},
                False,
                HINT_AUTH_STRIPPED,
            ),
            (
                401,
                {
                    "errcode": "M_UNAUTHORIZED",
                    "error": "Invalid signature for server check.test with key ed25519:a",
                },
                False,
                HINT_URI_REWRITTEN,
            ),
            (
                401,
                {"errcode": "M_UNAUTHORIZED", "error": "Failed to find any key to satisfy"},
                False,
                HINT_CANNOT_FETCH_OUR_KEYS,
            ),
            (401, "<html>401</html>", False, HINT_URI_REWRITTEN),
        ]
        for status, body, ok, hint in cases:
            verdict = judge_signed_response(status, body)
            assert (verdict.ok, verdict.hint, verdict.status) == (ok, hint, status)
            assert not verdict.skipped


class WayBackVerdictTests(SynchronousTestCase):
    """The notary's answer tells whether the server reached us."""

    def test_table(self) -> None:
        """Only an entry for our name with one of our key IDs is success."""
        ours = {"server_name": "us.test", "verify_keys": {"ed25519:k": {"key": "x"}}}
        cases: list[tuple[int, object, bool]] = [
            (200, {"server_keys": [ours]}, True),
            (200, {"server_keys": []}, False),
            (200, {"server_keys": [{"server_name": "other", "verify_keys": {}}]}, False),
            (200, {"server_keys": [{"server_name": "us.test", "verify_keys": {}}]}, False),
            (200, {}, False),
            (500, {"error": "boom"}, False),
            (404, {"errcode": "M_UNRECOGNIZED"}, False),
        ]
        for status, body, ok in cases:
            verdict = judge_way_back("them.test", "us.test", ["ed25519:k"], status, body)
            assert verdict.ok == ok, body
            assert (verdict.hint is None) == ok, body
        missing = judge_way_back("them.test", "us.test", ["ed25519:k"], 404, {})
        assert missing.hint is not None
        assert "no notary endpoint" in missing.hint


class NotaryQueryTests(SynchronousTestCase):
    """The way back asks for our keys the way Synapse's notary fetches them."""

    def test_names_every_key_id_with_a_minimum(self) -> None:
        """Each of our key IDs is named, keys valid from now on (Synapse needs both)."""
        key = ServerSigningKey.generate("k1")
        query = notary_query(FederationIdentity("us.test", key), NOW_MS)
        assert query == {
            "server_keys": {"us.test": {"ed25519:k1": {"minimum_valid_until_ts": NOW_MS}}}
        }
