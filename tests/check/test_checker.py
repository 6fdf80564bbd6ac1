"""The pure parts of ``stubserver check``: report shapes, key checks, verdicts and hints."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from stubserver.check.api import ReportService, report_routes
from stubserver.check.hints import (
    HINT_AUTH_STRIPPED,
    HINT_CANNOT_FETCH_OUR_KEYS,
    HINT_URI_REWRITTEN,
    describe_bad_m_server,
    hint_certificate,
    hint_family,
    hint_m_server,
    order_hints,
)
from stubserver.check.render import render_text
from stubserver.check.report import (
    STEP_CONNECTION,
    STEP_DNS,
    STEP_KEYS,
    STEP_WELL_KNOWN,
    CheckReport,
    ConnectionReport,
    DNSReport,
    FamilyWellKnown,
    Hint,
    KeyChecks,
    SignedRequestReport,
    WayBackReport,
    WellKnownAttempt,
    WellKnownReport,
    all_ok,
)
from stubserver.check.verdicts import (
    check_keys,
    judge_signed_response,
    judge_way_back,
    notary_query,
)
from stubserver.client.signed_request import FederationIdentity
from stubserver.config import REPORT_DEFAULT_BIND_ADDRESSES, config_from_dict
from stubserver.server.router import FederationRouter
from stubserver.signing.keys import ServerSigningKey, sign_json
from tests.support import has_fired, stub_treq

NOW_MS = 1_700_000_000_000


def _keys(name: str, key: ServerSigningKey, valid_until: int = NOW_MS + 86_400_000) -> Any:
    return sign_json(
        {
            "server_name": name,
            "valid_until_ts": valid_until,
            "verify_keys": {key.key_id: {"key": key.verify_key_base64}},
            "old_verify_keys": {},
        },
        name,
        key,
    )


def _checks(ok: bool = True) -> KeyChecks:
    return KeyChecks(
        all_checks_ok=ok,
        matching_server_name=True,
        future_valid_until_ts=True,
        has_ed25519_key=True,
        all_ed25519_checks_ok=True,
        ed25519_checks={},
        valid_certificates=ok,
    )


def _connection(ok: bool = True) -> ConnectionReport:
    return ConnectionReport(
        certificates=(),
        cipher_version="TLS 1.3",
        cipher_suite="TLS_AES_128_GCM_SHA256",
        checks=_checks(ok),
        errors=(),
        ed25519_verify_keys={},
        keys={},
    )


class CheckKeysTests(SynchronousTestCase):
    """``check_keys`` computes gomatrixserverlib's KeyChecks and the tester's certificate rule."""

    def setUp(self) -> None:
        self.key = ServerSigningKey.generate("a1")

    def test_valid(self) -> None:
        """A self-signed, current response for the right name passes every check."""
        checks, verify_keys = check_keys(
            "beta.test", NOW_MS, _keys("beta.test", self.key), valid_certificates=True
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
        tampered = dict(_keys("beta.test", self.key))
        tampered["valid_until_ts"] = NOW_MS + 1
        wrong_sig = _keys("beta.test", self.key)
        wrong_sig["verify_keys"] = {other.key_id: {"key": other.verify_key_base64}}
        cases: list[tuple[str, object, bool, dict[str, object], bool]] = [
            # (name, response, certificates ok, expected fields, verify keys given)
            (
                "wrong name",
                _keys("gamma.test", self.key),
                True,
                {"AllChecksOK": False, "MatchingServerName": False, "FutureValidUntilTS": True},
                False,
            ),
            (
                "expired",
                _keys("beta.test", self.key, valid_until=NOW_MS - 1),
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
                _keys("beta.test", self.key),
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


class VerdictTests(SynchronousTestCase):
    """FederationOK and AllOK combine the steps as documented."""

    def test_federation_ok_table(self) -> None:
        """FederationOK fails on any error, failed check, unusable .well-known or split family."""
        split = {
            "IPv4": FamilyWellKnown({"1.2.3.4": WellKnownAttempt(server="a.test")}),
            "IPv6": FamilyWellKnown({"::1": WellKnownAttempt(result="connection refused")}),
        }
        same = {
            "IPv4": FamilyWellKnown({"1.2.3.4": WellKnownAttempt(server="a.test")}),
            "IPv6": FamilyWellKnown({"::1": WellKnownAttempt(server="a.test")}),
        }
        good = {"1.2.3.4:8448": _connection()}
        cases: list[tuple[str, CheckReport, bool]] = [
            ("healthy", CheckReport("a.test", connection_reports=good), True),
            ("no address", CheckReport("a.test"), False),
            ("error", CheckReport("a.test", error="Invalid server name"), False),
            (
                "connection error",
                CheckReport(
                    "a.test", connection_reports=good, connection_errors={"[::1]:8448": "refused"}
                ),
                False,
            ),
            (
                "failed checks",
                CheckReport("a.test", connection_reports={"1.2.3.4:8448": _connection(False)}),
                False,
            ),
            (
                "invalid well-known",
                CheckReport("a.test", connection_reports=good, well_known_invalid=True),
                False,
            ),
            (
                "families split",
                CheckReport("a.test", connection_reports=good, well_known_by_family=split),
                False,
            ),
            (
                "families agree",
                CheckReport("a.test", connection_reports=good, well_known_by_family=same),
                True,
            ),
        ]
        for name, report, expected in cases:
            assert report.federation_ok == expected, name
            assert report.to_json()["FederationOK"] == expected, name

    def test_all_ok_table(self) -> None:
        """AllOK is FederationOK unless the signed request or the way back failed."""
        skipped_sr = SignedRequestReport(skipped=True, ok=False)
        ok_sr = SignedRequestReport(skipped=False, ok=True, status=404)
        bad_sr = SignedRequestReport(skipped=False, ok=False, status=401)
        skipped_wb = WayBackReport(skipped=True, ok=False)
        ok_wb = WayBackReport(skipped=False, ok=True)
        bad_wb = WayBackReport(skipped=False, ok=False)
        cases = [
            (True, skipped_sr, skipped_wb, True),
            (True, ok_sr, ok_wb, True),
            (True, bad_sr, ok_wb, False),
            (True, ok_sr, bad_wb, False),
            (False, ok_sr, ok_wb, False),
        ]
        for fed_ok, sr, wb, expected in cases:
            assert (all_ok(fed_ok, sr, wb)) == expected


class JsonShapeTests(SynchronousTestCase):
    """The JSON carries the tester's names and Go zero values."""

    def test_empty_report(self) -> None:
        """An empty report has every tester field with Go's zero values, then ours."""
        got = CheckReport("a.test").to_json()
        assert list(got) == [
            "WellKnownResult",
            "DNSResult",
            "ConnectionReports",
            "ConnectionErrors",
            "Version",
            "FederationOK",
            "SignedRequest",
            "WayBack",
            "WellKnownByFamily",
            "Hints",
            "AllOK",
        ]
        assert got["WellKnownResult"] == {"m.server": "", "CacheExpiresAt": 0}
        assert got["DNSResult"] == {
            "SRVSkipped": False,
            "SRVCName": "",
            "SRVRecords": None,
            "SRVError": None,
            "Hosts": {},
            "Addrs": None,
        }
        assert got["Version"] == {}
        assert got["SignedRequest"]["Skipped"] is True

    def test_error_and_results(self) -> None:
        """``Error`` appears only when set; errors are ``{"Message": ...}`` objects."""
        got = CheckReport(
            "a.test",
            error="Invalid server name 'x:'",
            well_known=WellKnownReport(result="No .well-known found"),
            dns=DNSReport(srv_error="no such name"),
            connection_errors={"[::1]:8448": "connection refused"},
        ).to_json()
        assert got["Error"] == "Invalid server name 'x:'"
        assert got["WellKnownResult"]["result"] == "No .well-known found"
        assert got["DNSResult"]["SRVError"] == {"Message": "no such name"}
        assert got["ConnectionErrors"] == {"[::1]:8448": {"Message": "connection refused"}}


class HintTests(SynchronousTestCase):
    """Every failure comes with a hint pointing at the fix."""

    def test_m_server_table(self) -> None:
        """A scheme, a path or junk in m.server is named, and the fix shows the right value."""
        cases = [
            ("https://matrix.example.org", "scheme", '"m.server": "matrix.example.org"'),
            ("https://matrix.example.org:443/", "scheme", '"m.server": "matrix.example.org:443"'),
            ("matrix.example.org/", "path", '"m.server": "matrix.example.org"'),
        ]
        for value, problem, fix in cases:
            assert problem in describe_bad_m_server(value)
            assert fix in hint_m_server(value)
        assert "not a string" in describe_bad_m_server(42)

    def test_certificate_for_srv_target(self) -> None:
        """A certificate for the SRV target is named as such and the right name is given."""
        text = hint_certificate(
            "example.org",
            ["matrix.example.org"],
            server_name="example.org",
            delegated_name=None,
            srv_target="matrix.example.org.",
            verify_error=None,
        )
        assert "must be valid for the server name example.org" in text
        assert "SRV target matrix.example.org does not count" in text

    def test_certificate_for_delegated_name(self) -> None:
        """With delegation the certificate must be for the delegated name."""
        text = hint_certificate(
            "fed.example.org",
            ["example.org"],
            server_name="example.org",
            delegated_name="fed.example.org",
            srv_target=None,
            verify_error=None,
        )
        assert "the delegated name fed.example.org" in text

    def test_certificate_untrusted(self) -> None:
        """A certificate for the right name that does not verify is a chain problem."""
        text = hint_certificate(
            "example.org",
            ["example.org"],
            server_name="example.org",
            delegated_name=None,
            srv_target=None,
            verify_error="self-signed certificate",
        )
        assert "full chain" in text
        assert "self-signed certificate" in text

    def test_family_hint(self) -> None:
        """A .well-known answered over IPv4 only is named with both answers."""
        hint = hint_family(
            {
                "IPv4": FamilyWellKnown({"1.2.3.4": WellKnownAttempt(server="a.test")}),
                "IPv6": FamilyWellKnown({"::1": WellKnownAttempt(result="connection refused")}),
            }
        )
        assert hint is not None
        assert hint.step == STEP_WELL_KNOWN
        assert "IPv6 ::1: connection refused" in hint.problem
        assert (
            hint_family({"IPv4": FamilyWellKnown({"1.2.3.4": WellKnownAttempt(server="a")})})
        ) is None

    def test_order(self) -> None:
        """Hints come earliest step first, duplicates once."""
        later = Hint(STEP_KEYS, "k", "f")
        earlier = Hint(STEP_DNS, "d", "f")
        middle = Hint(STEP_CONNECTION, "c", "f")
        assert (order_hints([later, middle, earlier, later])) == (earlier, middle, later)

    def test_text_failing_step_first(self) -> None:
        """The text report opens with the verdict and then the earliest failing step."""
        report = CheckReport(
            "a.test",
            hints=order_hints([Hint(STEP_KEYS, "keys bad", "fix k"), Hint(STEP_DNS, "dns", "d")]),
        )
        lines = render_text(report).splitlines()
        assert lines[0] == "a.test: federation FAILED"
        assert lines[2] == "[DNS] dns"


class _CannedChecker:
    """A checker answering a fixed report, or waiting forever when ``pending``."""

    def __init__(self, report: CheckReport, asked: list[str], *, pending: bool = False):
        self._report = report
        self._asked = asked
        self._pending = pending

    def check(self, server_name: str) -> Deferred[CheckReport]:
        self._asked.append(server_name)
        if self._pending:
            return Deferred()
        return succeed(self._report)


class ReportRoutesTests(SynchronousTestCase):
    """``/api/report`` and ``/api/federation-ok`` serve the check's report."""

    def _stub(self, report: CheckReport, *, pending: bool = False, limit: int = 4) -> Any:
        self.asked: list[str] = []
        service = ReportService(
            lambda: _CannedChecker(report, self.asked, pending=pending), max_concurrent=limit
        )
        return stub_treq(FederationRouter(report_routes(service)))

    def test_report_is_the_check_json(self) -> None:
        """The report endpoint answers the report's JSON for the name asked, with CORS."""
        report = CheckReport("a.test", connection_reports={"1.2.3.4:8448": _connection()})
        stub = self._stub(report)
        response = self.successResultOf(
            stub.get("https://r.test/api/report?server_name=a.test%3A8448")
        )
        assert response.code == 200
        assert response.headers.getRawHeaders(b"access-control-allow-origin") == [b"*"]
        assert self.successResultOf(stub.json_content(response)) == report.to_json()
        assert self.asked == ["a.test:8448"]

    def test_federation_ok_table(self) -> None:
        """federation-ok answers GOOD exactly when FederationOK."""
        for report, expected in [
            (CheckReport("a.test", connection_reports={"1.2.3.4:8448": _connection()}), "GOOD"),
            (CheckReport("a.test"), "BAD"),
        ]:
            stub = self._stub(report)
            response = self.successResultOf(
                stub.get("https://r.test/api/federation-ok?server_name=a.test")
            )
            assert self.successResultOf(stub.json_content(response)) == expected

    def test_missing_server_name(self) -> None:
        """Without server_name the answer is 400 M_MISSING_PARAM and nothing is checked."""
        stub = self._stub(CheckReport("a.test"))
        response = self.successResultOf(stub.get("https://r.test/api/report"))
        assert response.code == 400
        body = self.successResultOf(stub.json_content(response))
        assert body["errcode"] == "M_MISSING_PARAM"
        assert self.asked == []

    def test_concurrency_is_bounded(self) -> None:
        """Past the limit of running reports, a request answers 429."""
        stub = self._stub(CheckReport("a.test"), pending=True, limit=1)
        first = stub.get("https://r.test/api/report?server_name=a.test")
        second = self.successResultOf(stub.get("https://r.test/api/report?server_name=b.test"))
        assert second.code == 429
        assert self.asked == ["a.test"]
        assert not has_fired(first)
        first.addErrback(lambda _: None)
        first.cancel()

    def test_report_listener_binds_to_loopback_by_default(self) -> None:
        """A listener serving report without bind_addresses binds to loopback only."""
        key = ServerSigningKey.generate("a1")
        folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, folder)
        (folder / "k").write_text(key.to_line())
        raw = {
            "server_name": "a.test",
            "signing_key_path": "k",
            "tls_certificate_path": "c",
            "tls_private_key_path": "p",
            "listeners": [
                {"port": 1, "resources": ["report"]},
                {"port": 2, "resources": ["federation"]},
            ],
        }
        config = config_from_dict(raw, folder)
        assert config.listeners[0].bind_addresses == REPORT_DEFAULT_BIND_ADDRESSES
        assert "0.0.0.0" in config.listeners[1].bind_addresses
