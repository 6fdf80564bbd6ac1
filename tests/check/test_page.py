"""``GET /`` on a ``report`` listener: the self-contained report page."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from stubserver.check.api import ReportService, report_routes
from stubserver.check.page import (
    CONTENT_TYPE_HTML,
    PAGE_RESOURCE,
    load_report_page,
    page_headers,
)
from stubserver.check.report import CheckReport
from stubserver.server.router import FederationRouter
from tests.support import stub_treq

#: An attribute that loads or links to another origin (scheme or protocol-relative).
_EXTERNAL_ATTRIBUTE = re.compile(r"""\b(?:src|href|action)\s*=\s*["']?\s*(?:[a-z]+:)?//""", re.I)


class _NeverChecker:
    def check(self, server_name: str) -> Deferred[CheckReport]:
        raise AssertionError("the page does not run a check")


def _router() -> Any:
    return stub_treq(FederationRouter(report_routes(ReportService(_NeverChecker))))


def _csp_sources(csp: str, directive: str) -> list[str]:
    for part in csp.split(";"):
        words = part.split()
        if words and words[0] == directive:
            return words[1:]
    raise AssertionError(f"no {directive} in {csp!r}")


def _sha256_source(content: str) -> str:
    digest = base64.b64encode(hashlib.sha256(content.encode("utf-8")).digest()).decode()
    return f"'sha256-{digest}'"


class ReportPageRouteTests(SynchronousTestCase):
    """The report listener answers ``/`` with the page."""

    def test_root_is_the_html_page(self) -> None:
        """GET / answers 200 with Content-Type text/html; charset=utf-8 and the page."""
        stub = _router()
        response = self.successResultOf(stub.get("https://r.test/"))
        assert response.code == 200
        assert response.headers.getRawHeaders(b"content-type") == [CONTENT_TYPE_HTML.encode()]
        body = self.successResultOf(stub.content(response))
        assert body == load_report_page().html
        assert body.startswith(b"<!doctype html>")

    def test_root_with_a_query_is_the_page(self) -> None:
        """GET /?server_name=NAME is the same page (it fills the form in and runs it)."""
        stub = _router()
        response = self.successResultOf(stub.get("https://r.test/?server_name=a.test"))
        assert response.code == 200
        assert self.successResultOf(stub.content(response)) == load_report_page().html

    def test_page_has_no_external_url(self) -> None:
        """No src, href or action of the page points at another origin."""
        html = load_report_page().html.decode("utf-8")
        assert not _EXTERNAL_ATTRIBUTE.findall(html)
        assert "<link" not in html.lower()
        assert re.search(r"<script\s+src", html, re.I) is None

    def test_page_reads_the_report_from_its_own_origin(self) -> None:
        """The page fetches the relative /api/report with the encoded server name."""
        html = load_report_page().html.decode("utf-8")
        assert 'fetch("/api/report?server_name=" + encodeURIComponent(name)' in html

    def test_page_never_writes_report_data_as_markup(self) -> None:
        """The script has no innerHTML, outerHTML, insertAdjacentHTML or document.write."""
        html = load_report_page().html.decode("utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in html, sink

    def test_page_is_usable_on_a_phone_and_by_keyboard(self) -> None:
        """The page has a viewport, a real labelled form field and a live status line."""
        html = load_report_page().html.decode("utf-8")
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
        assert '<form id="check-form" method="get" action="/"' in html
        assert '<label for="server-name">' in html
        assert 'id="server-name" name="server_name"' in html
        assert 'role="status" aria-live="polite"' in html
        assert ":focus-visible" in html
        assert "<details>" in html or 'el("details"' in html


class ReportPageHeadersTests(SynchronousTestCase):
    """The page's Content-Security-Policy allows exactly its own inline code."""

    def test_csp_allows_exactly_the_inline_style_and_script(self) -> None:
        """style-src and script-src hold the SHA-256 of the page's one style and script."""
        page = load_report_page()
        html = page.html.decode("utf-8")
        style = re.search(r"<style>(.*?)</style>", html, re.DOTALL)
        script = re.search(r"<script>(.*?)</script>", html, re.DOTALL)
        assert style is not None
        assert script is not None
        csp = page.headers["Content-Security-Policy"]
        assert _csp_sources(csp, "style-src") == [_sha256_source(style.group(1))]
        assert _csp_sources(csp, "script-src") == [_sha256_source(script.group(1))]
        assert _csp_sources(csp, "default-src") == ["'none'"]
        assert _csp_sources(csp, "connect-src") == ["'self'"]

    def test_csp_is_sent(self) -> None:
        """The served page carries its CSP and nosniff."""
        stub = _router()
        response = self.successResultOf(stub.get("https://r.test/"))
        csp = response.headers.getRawHeaders(b"content-security-policy")
        assert csp == [load_report_page().headers["Content-Security-Policy"].encode()]
        assert response.headers.getRawHeaders(b"x-content-type-options") == [b"nosniff"]

    def test_a_second_inline_script_is_refused(self) -> None:
        """A page with two inline scripts has no single hash to allow: ValueError."""
        html = "<style>a{}</style><script>1</script><script>2</script>"
        with pytest.raises(ValueError, match="exactly one inline <script>"):
            page_headers(html)

    def test_asset_is_a_package_file(self) -> None:
        """The page is a file inside the stubserver.check package (shipped in the wheel)."""
        from importlib import resources

        assert resources.files("stubserver.check").joinpath(PAGE_RESOURCE).is_file()
