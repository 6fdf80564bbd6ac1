"""The report page: ``GET /`` on a ``report`` listener, the report as a person reads it.

One self-contained HTML document (``report_page.html``, shipped in the package): its
style and script are inline, it loads nothing else, and it asks this same origin for
``/api/report?server_name=NAME``. ``/?server_name=NAME`` fills the form in and runs the
check at once (a link to a report, and what a plain form submission without script
leads to).

The page is sent with a Content-Security-Policy that allows exactly its own inline
style and script (by their SHA-256) and requests to its own origin: a browser then
refuses any other asset or script, whatever a report contains. The page itself writes
report data as text only (``textContent``), never as markup.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from twisted.web.iweb import IRequest

from stubserver.server.router import JsonResponse, Route

PAGE_PATH = "/"
#: The asset's file name inside this package.
PAGE_RESOURCE = "report_page.html"
CONTENT_TYPE_HTML = "text/html; charset=utf-8"

_INLINE_RE = {
    "style": re.compile(r"<style>(.*?)</style>", re.DOTALL),
    "script": re.compile(r"<script>(.*?)</script>", re.DOTALL),
}


@dataclass(frozen=True)
class ReportPage:
    """The page's bytes and the headers it is served with."""

    html: bytes
    headers: Mapping[str, str]


def _inline_hash(kind: str, html: str) -> str:
    """The CSP source for the one inline ``<style>`` or ``<script>`` of ``html``."""
    found = _INLINE_RE[kind].findall(html)
    if len(found) != 1:
        raise ValueError(f"the report page must hold exactly one inline <{kind}>")
    digest = hashlib.sha256(found[0].encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def page_headers(html: str) -> dict[str, str]:
    """The headers of the page (pure): HTML, not cached, and a CSP allowing only itself."""
    csp = "; ".join(
        [
            "default-src 'none'",
            f"style-src {_inline_hash('style', html)}",
            f"script-src {_inline_hash('script', html)}",
            "connect-src 'self'",
            "img-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Type": CONTENT_TYPE_HTML,
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def load_report_page() -> ReportPage:
    """The page as shipped in the package, with its headers."""
    html = resources.files("stubserver.check").joinpath(PAGE_RESOURCE).read_text("utf-8")
    return ReportPage(html=html.encode("utf-8"), headers=page_headers(html))


def page_route(page: ReportPage | None = None) -> Route:
    """``GET /``: the report page (read once, when the route is made)."""
    served = page if page is not None else load_report_page()
    # The router writes a response's headers after its JSON Content-Type, so this one
    # replaces it; ``encoded`` is sent as it is. Observers (the request log) see no body.
    response = JsonResponse(200, None, served.headers, encoded=served.html)

    def handler(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        return response

    return Route("GET", PAGE_PATH, handler)
