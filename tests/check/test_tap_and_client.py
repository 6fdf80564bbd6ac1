"""``--format tap`` and the client checks (``--client``), in-process."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from stubserver.check.checker import with_this_host_blocked
from stubserver.check.client_section import (
    CLIENT_VERSIONS_PATH,
    CLIENT_WELL_KNOWN_PATH,
    HINT_CORS,
    check_client,
)
from stubserver.check.report import CheckReport, CheckWarning, ClientReport, ClientStep
from stubserver.check.tap import render_tap
from stubserver.client.blocklist import IPBlocklist
from stubserver.config import FederationSettings
from stubserver.discovery.server_name import parse_server_name
from tests.check.fakes import Addresses, FakeProber, answer
from tests.check.samples import connection_report
from tests.support import result_now

CORS_JSON = {b"content-type": [b"application/json"], b"access-control-allow-origin": [b"*"]}
JSON_ONLY = {b"content-type": [b"application/json"]}


def _client(outcomes: dict[Any, Any]) -> ClientReport:
    settings = with_this_host_blocked(FederationSettings(ip_range_allowlist=("10.0.0.0/8",)))
    blocklist = IPBlocklist.from_settings(settings.ip_range_blocklist, settings.ip_range_allowlist)
    addresses = Addresses({"a.test": ("10.0.0.1",), "matrix.a.test": ("10.0.0.2",)})
    return result_now(
        Deferred.fromCoroutine(
            check_client(FakeProber(outcomes), addresses, blocklist, parse_server_name("a.test"))
        )
    )


WELL_KNOWN = {"m.homeserver": {"base_url": "https://matrix.a.test"}}
VERSIONS = {"versions": ["v1.11", "v1.12"]}


class ClientCheckTests(SynchronousTestCase):
    """The client-side discovery checks."""

    def test_healthy_client_discovery(self) -> None:
        """A client .well-known with base_url and CORS, and a versions answer with CORS,
        pass, listing the spec versions."""
        report = _client(
            {
                ("10.0.0.1", CLIENT_WELL_KNOWN_PATH): [answer(WELL_KNOWN, headers=CORS_JSON)],
                ("10.0.0.2", CLIENT_VERSIONS_PATH): [answer(VERSIONS, headers=CORS_JSON)],
            }
        )
        assert report.ok
        assert report.base_url == "https://matrix.a.test"
        assert report.spec_versions == ("v1.11", "v1.12")

    def test_missing_cors_on_well_known(self) -> None:
        """A client .well-known without Access-Control-Allow-Origin fails with the CORS
        hint (web clients cannot read it)."""
        report = _client(
            {
                ("10.0.0.1", CLIENT_WELL_KNOWN_PATH): [answer(WELL_KNOWN, headers=JSON_ONLY)],
                ("10.0.0.2", CLIENT_VERSIONS_PATH): [answer(VERSIONS, headers=CORS_JSON)],
            }
        )
        assert not report.ok
        assert report.well_known.cors is False
        assert report.well_known.hint == HINT_CORS

    def test_missing_cors_on_versions(self) -> None:
        """A versions answer without CORS fails with the CORS hint."""
        report = _client(
            {
                ("10.0.0.1", CLIENT_WELL_KNOWN_PATH): [answer(WELL_KNOWN, headers=CORS_JSON)],
                ("10.0.0.2", CLIENT_VERSIONS_PATH): [answer(VERSIONS, headers=JSON_ONLY)],
            }
        )
        assert not report.ok
        assert report.versions is not None and report.versions.hint == HINT_CORS

    def test_no_base_url(self) -> None:
        """A client .well-known without m.homeserver.base_url fails with its shape."""
        report = _client(
            {("10.0.0.1", CLIENT_WELL_KNOWN_PATH): [answer({"m.server": "x"}, headers=CORS_JSON)]}
        )
        assert not report.ok
        assert report.versions is None
        assert "base_url" in (report.well_known.error or "")

    def test_versions_unreachable(self) -> None:
        """A base_url that does not answer fails the versions step with a hint."""
        report = _client(
            {("10.0.0.1", CLIENT_WELL_KNOWN_PATH): [answer(WELL_KNOWN, headers=CORS_JSON)]}
        )
        assert report.well_known.ok
        assert report.versions is not None and not report.versions.ok
        assert "no answer" in (report.versions.error or "")

    def test_client_changes_all_ok_not_federation_ok(self) -> None:
        """A failed client check makes AllOK false and leaves FederationOK true."""
        report = CheckReport(
            "a.test",
            connection_reports={"1.2.3.4:8448": connection_report()},
            client=ClientReport(well_known=ClientStep(ok=False, error="x", hint="y")),
        )
        assert report.federation_ok is True
        assert report.all_ok is False
        assert report.to_json()["Client"]["OK"] is False


class TapTests(SynchronousTestCase):
    """``--format tap``."""

    def test_tap_output(self) -> None:
        """TAP version 13 with a plan, one named test per check, a YAML block for each
        failure and warnings as comments."""
        report = CheckReport(
            "a.test",
            connection_reports={"1.2.3.4:8448": connection_report()},
            connection_errors={"[::1]:8448": 'refused "now"'},
            warnings=(CheckWarning("OldTLS", "1.2.3.4:8448: TLS 1.1", "upgrade"),),
        )
        from dataclasses import replace

        from stubserver.check.tester_fields import DNSReport, VersionReport

        report = replace(
            report,
            dns=DNSReport(addrs=("1.2.3.4:8448", "[::1]:8448")),
            version=VersionReport(error="timed out"),
        )
        lines = render_tap(report).splitlines()
        assert lines[:2] == ["TAP version 13", "1..4"]
        assert lines[2] == "ok 1 - connection 1.2.3.4:8448"
        assert lines[3] == "not ok 2 - connection [::1]:8448"
        assert lines[4:7] == ["  ---", '  message: "refused \\"now\\""', "  ..."]
        assert "not ok 3 - version" in lines
        assert "not ok 4 - FederationOK" in lines
        assert lines[-1] == "# warning OldTLS: 1.2.3.4:8448: TLS 1.1"
