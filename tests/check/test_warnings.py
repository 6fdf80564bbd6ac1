"""The warnings of ``stubserver check`` and the verdicts beside them, in-process: a fake
resolver, a fake prober answering canned results per address and path, no sockets."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from stubserver.check import warning_rules as rules
from stubserver.check.checker import KEY_PATH, FederationChecker
from stubserver.check.hints import describe_bad_m_server, hint_keys
from stubserver.check.prober import ProbeFailed, ProbeResult
from stubserver.check.version_section import VERSION_PATH
from stubserver.check.well_known_section import WELL_KNOWN_PATH
from stubserver.config import FederationSettings
from stubserver.discovery.dns import DnsClients
from stubserver.discovery.resolution import SOURCE_DEFAULT_PORT, Resolution, Target
from stubserver.discovery.well_known import WellKnownResult
from stubserver.signing.keys import ServerSigningKey
from tests.check.fakes import Addresses, FakeProber, FakeResolver, NoSrv, answer
from tests.check.samples import key_checks, signed_keys
from tests.support import FakeReactor, result_now

DAY_MS = 86_400_000
KEY = ServerSigningKey.generate("a1")
VERSION = {"server": {"name": "Synapse", "version": "1.100.0"}}
OTHER_VERSION = {"server": {"name": "Synapse", "version": "1.99.0"}}
WK_URL = "https://a.test/.well-known/matrix/server"


def _target(*addresses: str) -> Target:
    return Target("a.test", 8448, addresses, "a.test", "a.test", SOURCE_DEFAULT_PORT)


def _wk(status: int | None, m_server: str | None = None, error: str | None = None) -> Any:
    return WellKnownResult(WK_URL, status, m_server, error, 3600.0)


def _check(
    resolution: Resolution,
    outcomes: dict[tuple[str, str], list[ProbeResult | ProbeFailed]],
    addresses: tuple[str, ...] = ("10.0.0.1",),
    extra: dict[str, Resolution] | None = None,
) -> dict[str, Any]:
    reactor = FakeReactor()
    checker = FederationChecker(
        reactor,
        FederationSettings(ip_range_allowlist=("10.0.0.0/8",)),
        dns=DnsClients(srv=NoSrv(), addresses=Addresses({"a.test": addresses})),
        prober=FakeProber(outcomes),
        resolver=FakeResolver({"a.test": resolution, **(extra or {})}),
    )
    return result_now(checker.check("a.test")).to_json()


def _healthy(address: str = "10.0.0.1", keys: Any = None, **kw: Any) -> dict[Any, Any]:
    return {
        (address, KEY_PATH): [answer(keys or signed_keys("a.test", KEY, DAY_MS), **kw)],
        (address, VERSION_PATH): [answer(VERSION)],
    }


def _codes(report: dict[str, Any]) -> list[str]:
    return [w["Code"] for w in report["Warnings"]]


class CheckerWarningTests(SynchronousTestCase):
    """What the checker reports as warnings, and that none changes FederationOK."""

    def test_unusable_well_known_with_reachable_fallback_is_federation_ok(self) -> None:
        """A .well-known that answers 200 with a body that is not JSON, while the server
        answers at the fallback, is FederationOK with a WellKnownUnusable warning and no
        hint (the old code said FederationOK=false)."""
        resolution = Resolution(
            "a.test",
            well_known=_wk(200, error="not JSON"),
            targets=(
                _target(
                    "10.0.0.1",
                ),
            ),
        )
        outcomes = {**_healthy(), ("10.0.0.1", WELL_KNOWN_PATH): [answer(b"<html>")]}
        report = _check(resolution, outcomes)
        assert report["FederationOK"] is True, report
        assert _codes(report) == [rules.WELL_KNOWN_UNUSABLE]
        assert report["Warnings"][0]["Hint"]
        assert report["Hints"] == []

    def test_well_known_error_status_is_a_warning(self) -> None:
        """A .well-known answering 500 is a warning; FederationOK stays true."""
        resolution = Resolution(
            "a.test", well_known=_wk(500, error="HTTP 500"), targets=(_target("10.0.0.1"),)
        )
        outcomes = {**_healthy(), ("10.0.0.1", WELL_KNOWN_PATH): [answer({}, status=500)]}
        report = _check(resolution, outcomes)
        assert report["FederationOK"] is True
        assert rules.WELL_KNOWN_UNUSABLE in _codes(report)

    def test_split_brain_follows_each_answer(self) -> None:
        """Two addresses of the name serving different .well-known answers give a
        WellKnownSplitBrain warning that says where each answer leads."""
        resolution = Resolution(
            "a.test",
            well_known=_wk(200, m_server="b.test"),
            delegated_server_name="b.test",
            targets=(Target("b.test", 8448, ("10.0.0.2",), "b.test", "b.test", "default_port"),),
        )
        other = Resolution(
            "c.test",
            targets=(Target("c.test", 8448, ("10.0.0.3",), "c.test", "c.test", "default_port"),),
        )
        outcomes = {
            **_healthy("10.0.0.2"),
            ("10.0.0.1", WELL_KNOWN_PATH): [answer({"m.server": "b.test"})],
            ("10.0.0.4", WELL_KNOWN_PATH): [answer({"m.server": "c.test"})],
        }
        report = _check(
            resolution,
            outcomes,
            addresses=("10.0.0.1", "10.0.0.4"),
            extra={"b.test": resolution, "c.test": other},
        )
        assert report["FederationOK"] is True
        warning = next(w for w in report["Warnings"] if w["Code"] == rules.WELL_KNOWN_SPLIT_BRAIN)
        assert (
            "10.0.0.4: m.server c.test (leads to 10.0.0.3:8448, which did not answer"
            in (warning["Message"])
        )
        assert "serves the keys of a.test" in warning["Message"]

    def test_retry_once_then_warn(self) -> None:
        """A connection that fails once and answers on the retry is no connection error:
        FederationOK, with a ConnectionRetried warning naming the first error."""
        outcomes = _healthy()
        outcomes[("10.0.0.1", KEY_PATH)].insert(0, ProbeFailed("connection reset"))
        report = _check(Resolution("a.test", targets=(_target("10.0.0.1"),)), outcomes)
        assert report["FederationOK"] is True
        assert report["ConnectionErrors"] == {}
        warning = report["Warnings"][0]
        assert warning["Code"] == rules.CONNECTION_RETRIED
        assert "connection reset" in warning["Message"]

    def test_two_failures_are_final(self) -> None:
        """A connection that fails twice is a connection error (one retry, not more)."""
        outcomes = _healthy()
        outcomes[("10.0.0.1", KEY_PATH)] = [ProbeFailed("refused"), ProbeFailed("refused again")]
        report = _check(Resolution("a.test", targets=(_target("10.0.0.1"),)), outcomes)
        assert report["FederationOK"] is False
        assert report["ConnectionErrors"]["10.0.0.1:8448"]["Message"] == "refused again"

    def test_version_asked_on_every_connection(self) -> None:
        """Every connection is asked for the version; different answers are a
        VersionsDiffer warning (a proxy sending some requests to another backend)."""
        outcomes = {**_healthy("10.0.0.1"), **_healthy("10.0.0.2")}
        outcomes[("10.0.0.2", VERSION_PATH)] = [answer(OTHER_VERSION)]
        report = _check(Resolution("a.test", targets=(_target("10.0.0.1", "10.0.0.2"),)), outcomes)
        assert report["FederationOK"] is True
        assert report["Version"] == {"name": "Synapse", "version": "1.100.0"}
        assert _codes(report) == [rules.VERSIONS_DIFFER]
        assert "1.99.0" in report["Warnings"][0]["Message"]

    def test_key_and_version_without_json_content_type(self) -> None:
        """Key and version answers served as text/plain give one NotJSONContentType
        warning each."""
        text = {b"content-type": [b"text/plain"]}
        outcomes = _healthy(headers=text)
        outcomes[("10.0.0.1", VERSION_PATH)] = [answer(VERSION, headers=text)]
        report = _check(Resolution("a.test", targets=(_target("10.0.0.1"),)), outcomes)
        assert report["FederationOK"] is True
        assert _codes(report) == [rules.NOT_JSON_CONTENT_TYPE, rules.NOT_JSON_CONTENT_TYPE]
        assert {
            KEY_PATH in w["Message"] or VERSION_PATH in w["Message"] for w in report["Warnings"]
        } == {True}

    def test_key_valid_more_than_seven_days(self) -> None:
        """A key document valid 30 days ahead gives KeyValidTooLong; 7 days does not."""
        long_keys = signed_keys("a.test", KEY, 30 * DAY_MS)
        report = _check(
            Resolution("a.test", targets=(_target("10.0.0.1"),)), _healthy(keys=long_keys)
        )
        assert report["FederationOK"] is True
        assert _codes(report) == [rules.KEY_VALID_TOO_LONG]
        week = signed_keys("a.test", KEY, 7 * DAY_MS)
        report = _check(Resolution("a.test", targets=(_target("10.0.0.1"),)), _healthy(keys=week))
        assert report["Warnings"] == []

    def test_old_tls(self) -> None:
        """A connection that negotiated TLS 1.1 gives OldTLS."""
        report = _check(
            Resolution("a.test", targets=(_target("10.0.0.1"),)), _healthy(tls_version="TLS 1.1")
        )
        assert report["FederationOK"] is True
        assert _codes(report) == [rules.OLD_TLS]

    def test_healthy_has_no_warning(self) -> None:
        """A healthy server has no warning."""
        report = _check(Resolution("a.test", targets=(_target("10.0.0.1"),)), _healthy())
        assert report["FederationOK"] is True
        assert report["Warnings"] == []


class WarningRuleTests(SynchronousTestCase):
    """The pure warning rules."""

    def test_json_content_types(self) -> None:
        """application/json (with parameters, any case) and +json types are JSON."""
        for values, expected in [
            ([b"application/json"], True),
            ([b"Application/JSON; charset=utf-8"], True),
            ([b"application/problem+json"], True),
            ([b"text/plain"], False),
            ([b"text/html; charset=utf-8"], False),
            (None, False),
            ([], False),
        ]:
            assert rules.is_json_content_type(values) is expected, values

    def test_srv_target_cname(self) -> None:
        """An SRV target CNAME warning names the record, the target and the real name."""
        w = rules.srv_target_cname("_matrix-fed._tcp.a.test", "alias.test.", "real.test.")
        assert w.code == rules.SRV_TARGET_CNAME
        assert "alias.test." in w.message and "real.test." in w.hint

    def test_old_tls_versions(self) -> None:
        """TLS 1.0 and 1.1 warn; 1.2 and 1.3 do not."""
        assert rules.old_tls("x", "TLS 1.0") is not None
        assert rules.old_tls("x", "TLS 1.1") is not None
        assert rules.old_tls("x", "TLS 1.2") is None
        assert rules.old_tls("x", "TLS 1.3") is None

    def test_not_found_well_known_is_no_warning(self) -> None:
        """A 404 .well-known (no delegation) and an unreachable one are not warnings."""
        assert rules.well_known_unusable(_wk(404, error="HTTP 404"), None) is None
        assert rules.well_known_unusable(_wk(None, error="refused"), None) is None


class NoReprTests(SynchronousTestCase):
    """Messages never show Python reprs."""

    def test_bad_m_server_is_quoted_as_json(self) -> None:
        """An m.server value is quoted as JSON, not as a Python string."""
        assert describe_bad_m_server("https://b.test") == (
            'm.server "https://b.test" has a scheme; it must be host[:port]'
        )

    def test_key_hint_names_without_repr(self) -> None:
        """A key hint for a missing server_name says null, never None or quotes 'x'."""
        checks = key_checks()
        from dataclasses import replace

        hint = hint_keys(
            "1.2.3.4:8448", replace(checks, matching_server_name=False), "a.test", None
        )
        assert hint.problem == '1.2.3.4:8448: the keys are for null, not "a.test"'

    def test_certificate_name_mismatch_has_no_bytes_repr(self) -> None:
        """A certificate name mismatch names the host, not b'host'."""
        from service_identity import VerificationError
        from service_identity.exceptions import DNSMismatch
        from service_identity.hazmat import DNS_ID

        from stubserver.client.body import describe_failure

        error = VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("mu.test"))])
        text, _ = describe_failure(error)
        assert text == "TLS: the certificate is not valid for mu.test"
