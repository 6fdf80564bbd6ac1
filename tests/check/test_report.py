"""The report model of ``check``: FederationOK and AllOK, and the JSON shapes."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from stubserver.check.report import (
    CheckReport,
    FamilyWellKnown,
    SignedRequestReport,
    WayBackReport,
    WellKnownAttempt,
    all_ok,
)
from stubserver.check.tester_fields import DNSReport, WellKnownReport
from tests.check.samples import connection_report


class VerdictTests(SynchronousTestCase):
    """FederationOK and AllOK combine the steps as documented."""

    def test_federation_ok_table(self) -> None:
        """FederationOK fails on any error, failed check or missing address; an unusable
        .well-known and a .well-known that differs between addresses do not change it (both
        testers' meaning: they are warnings)."""
        split = {
            "IPv4": FamilyWellKnown({"1.2.3.4": WellKnownAttempt(server="a.test")}),
            "IPv6": FamilyWellKnown({"::1": WellKnownAttempt(result="connection refused")}),
        }
        same = {
            "IPv4": FamilyWellKnown({"1.2.3.4": WellKnownAttempt(server="a.test")}),
            "IPv6": FamilyWellKnown({"::1": WellKnownAttempt(server="a.test")}),
        }
        good = {"1.2.3.4:8448": connection_report()}
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
                CheckReport(
                    "a.test", connection_reports={"1.2.3.4:8448": connection_report(False)}
                ),
                False,
            ),
            (
                "invalid well-known",
                CheckReport("a.test", connection_reports=good, well_known_invalid=True),
                True,
            ),
            (
                "families split",
                CheckReport("a.test", connection_reports=good, well_known_by_family=split),
                True,
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
            "Warnings",
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
