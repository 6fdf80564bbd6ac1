"""``/api/report`` and ``/api/federation-ok``: the report API of ``stubserver run``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from stubserver.check.api import ReportService, report_routes
from stubserver.check.report import (
    CheckReport,
)
from stubserver.config import REPORT_DEFAULT_BIND_ADDRESSES, config_from_dict
from stubserver.server.router import FederationRouter
from stubserver.signing.keys import ServerSigningKey
from tests.check.samples import connection_report
from tests.support import has_fired, stub_treq


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
        report = CheckReport("a.test", connection_reports={"1.2.3.4:8448": connection_report()})
        stub = self._stub(report)
        response = self.successResultOf(
            stub.get("https://r.test/api/report?server_name=a.test%3A8448")
        )
        assert response.code == 200
        assert response.headers.getRawHeaders(b"access-control-allow-origin") == [b"*"]
        assert self.successResultOf(stub.json_content(response)) == report.to_json()
        assert self.asked == ["a.test:8448"]

    def test_federation_ok_table(self) -> None:
        """federation-ok answers plain text GOOD exactly when FederationOK, else BAD, at our
        path and at the Rust tester's."""
        for report, expected in [
            (
                CheckReport("a.test", connection_reports={"1.2.3.4:8448": connection_report()}),
                b"GOOD",
            ),
            (CheckReport("a.test"), b"BAD"),
        ]:
            for path in ("/api/federation-ok", "/api/federation/federation-ok"):
                stub = self._stub(report)
                response = self.successResultOf(
                    stub.get(f"https://r.test{path}?server_name=a.test")
                )
                assert response.code == 200
                assert self.successResultOf(stub.content(response)) == expected
                content_type = response.headers.getRawHeaders(b"content-type")
                assert content_type == [b"text/plain; charset=utf-8"], path

    def test_rust_tester_report_path(self) -> None:
        """/api/federation/report answers the same JSON as /api/report."""
        report = CheckReport("a.test", connection_reports={"1.2.3.4:8448": connection_report()})
        stub = self._stub(report)
        response = self.successResultOf(
            stub.get("https://r.test/api/federation/report?server_name=a.test")
        )
        assert response.code == 200
        assert self.successResultOf(stub.json_content(response)) == report.to_json()

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
