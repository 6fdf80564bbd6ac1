"""The ``Client`` section of the ``check`` report (``--client``): what a user's app goes
through to log in. ``GET https://NAME/.well-known/matrix/client`` (JSON, with
``m.homeserver.base_url`` and the CORS header ``Access-Control-Allow-Origin``), then
``GET {base_url}/_matrix/client/versions`` (reachable, JSON, CORS). Spec: Client-Server
API, "Server Discovery" and "Web Browser Clients". The judgements are pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError
from twisted.web.http_headers import Headers

from stubserver.check.prober import ProbeFailed, Prober
from stubserver.check.report import ClientReport, ClientStep
from stubserver.check.warning_rules import is_json_content_type
from stubserver.client.blocklist import BlockedAddress, IPBlocklist
from stubserver.discovery.dns import AddressLookupError, AddressResolver
from stubserver.discovery.server_name import ServerName
from stubserver.signing.canonical_json import BadJson, parse_json_bytes

CLIENT_WELL_KNOWN_PATH = "/.well-known/matrix/client"
CLIENT_VERSIONS_PATH = "/_matrix/client/versions"
HTTPS_PORT = 443

HINT_CORS = (
    "Web clients (Element Web, ...) can read it only with the header"
    " `Access-Control-Allow-Origin: *`: add it for this path in the web server or reverse"
    " proxy (nginx: `add_header Access-Control-Allow-Origin * always;`)."
)


def _json(body: bytes) -> object:
    try:
        return parse_json_bytes(body)
    except BadJson:
        return None


def has_cors(headers: Headers) -> bool:
    """True when ``Access-Control-Allow-Origin`` lets any web page read the answer."""
    values = headers.getRawHeaders(b"access-control-allow-origin") or []
    return any(v.strip() == b"*" for v in values)


def judge_client_well_known(
    server_name: str, status: int, headers: Headers, body: bytes
) -> tuple[ClientStep, str | None]:
    """The client ``.well-known``: the step's verdict and the ``base_url`` found."""
    url = f"https://{server_name}{CLIENT_WELL_KNOWN_PATH}"
    cors = has_cors(headers)
    if status != 200:
        return ClientStep(
            ok=False,
            status=status,
            cors=cors,
            error=f"{url} answered {status}",
            hint=f"Serve {url} with status 200 and"
            ' {"m.homeserver": {"base_url": "https://matrix.example.org"}} so that apps'
            " find the homeserver from the user ID alone.",
        ), None
    document = _json(body)
    homeserver = document.get("m.homeserver") if isinstance(document, dict) else None
    base_url = homeserver.get("base_url") if isinstance(homeserver, dict) else None
    if not isinstance(document, dict):
        error = f"{url} is not a JSON object"
    elif not isinstance(base_url, str) or not base_url:
        error = f'{url} has no "m.homeserver": {{"base_url": ...}} string'
    elif urlsplit(base_url).scheme not in ("https", "http") or not urlsplit(base_url).hostname:
        error = f"m.homeserver.base_url {base_url} is not an http(s) URL"
    else:
        error = None
    if error is not None:
        return ClientStep(
            ok=False,
            status=status,
            cors=cors,
            error=error,
            hint='The file must be JSON: {"m.homeserver": {"base_url":'
            ' "https://matrix.example.org"}} (the URL apps use, without /_matrix).',
        ), None
    if not cors:
        return ClientStep(
            ok=False,
            status=status,
            cors=False,
            error=f"{url} has no Access-Control-Allow-Origin header",
            hint=HINT_CORS,
        ), base_url
    if not is_json_content_type(headers.getRawHeaders(b"content-type")):
        return ClientStep(
            ok=False,
            status=status,
            cors=True,
            error=f"{url} is not served as application/json",
            hint="Serve it with `Content-Type: application/json`.",
        ), base_url
    return ClientStep(ok=True, status=status, cors=True), base_url


def judge_client_versions(
    url: str, status: int, headers: Headers, body: bytes
) -> tuple[ClientStep, tuple[str, ...]]:
    """``GET {base_url}/_matrix/client/versions``: the verdict and the versions listed."""
    cors = has_cors(headers)
    document = _json(body)
    versions = document.get("versions") if isinstance(document, dict) else None
    if status != 200 or not isinstance(versions, list):
        return ClientStep(
            ok=False,
            status=status,
            cors=cors,
            error=f"{url} answered {status}"
            + ("" if isinstance(versions, list) else " without a versions list"),
            hint="base_url must point at the homeserver's client API: route /_matrix/client"
            " to it in the reverse proxy, and check that base_url has no path the proxy"
            " does not serve.",
        ), ()
    listed = tuple(v for v in versions if isinstance(v, str))
    if not cors:
        return ClientStep(
            ok=False,
            status=status,
            cors=False,
            error=f"{url} has no Access-Control-Allow-Origin header",
            hint=HINT_CORS,
        ), listed
    return ClientStep(ok=True, status=status, cors=True), listed


async def _get(
    prober: Prober,
    addresses: AddressResolver,
    blocklist: IPBlocklist,
    *,
    host: str,
    port: int,
    path: str,
) -> tuple[int, Headers, bytes]:
    """GET over HTTPS from the first usable address of ``host``; ProbeFailed otherwise."""
    try:
        found: Sequence[str] = await addresses.resolve_addresses(host)
    except CancelledError:
        raise
    except AddressLookupError as e:
        raise ProbeFailed(str(e)) from None
    usable = [a for a in found if not blocklist.is_blocked(a)]
    if not usable:
        raise ProbeFailed(
            str(BlockedAddress(found[0], host)) if found else f"{host} has no address"
        )
    host_header = host if port == HTTPS_PORT else f"{host}:{port}"
    last: ProbeFailed | None = None
    for address in usable:
        try:
            probe = await prober.probe(
                address, port, tls_server_name=host, host_header=host_header, path=path
            )
        except ProbeFailed as e:
            last = e
            continue
        if probe.certificate_errors:
            raise ProbeFailed("TLS: " + "; ".join(probe.certificate_errors))
        return probe.status, probe.headers, probe.body
    assert last is not None
    raise last


async def check_client(
    prober: Prober,
    addresses: AddressResolver,
    blocklist: IPBlocklist,
    name: ServerName,
    *,
    https_port: int = HTTPS_PORT,
) -> ClientReport:
    """The ``Client`` section for the server name ``name``.

    ``https_port`` is where ``https://NAME`` answers: 443 (the spec's), or the
    ``federation_well_known_port`` of a private test federation, which serves both
    ``.well-known`` files on the same HTTPS origin.
    """
    origin = name.host if https_port == HTTPS_PORT else f"{name.host}:{https_port}"
    url = f"https://{origin}{CLIENT_WELL_KNOWN_PATH}"
    try:
        status, headers, body = await _get(
            prober,
            addresses,
            blocklist,
            host=name.host,
            port=https_port,
            path=CLIENT_WELL_KNOWN_PATH,
        )
    except ProbeFailed as e:
        return ClientReport(
            well_known=ClientStep(
                ok=False,
                error=f"{url}: no answer: {e}",
                hint=f"Apps look up {url} over HTTPS on port {https_port}: serve it there with a"
                " certificate valid for the server name.",
            )
        )
    step, base_url = judge_client_well_known(origin, status, headers, body)
    if base_url is None:
        return ClientReport(well_known=step)
    parts = urlsplit(base_url)
    versions_url = base_url.rstrip("/") + CLIENT_VERSIONS_PATH
    if parts.scheme != "https" or parts.hostname is None:
        return ClientReport(
            well_known=step,
            base_url=base_url,
            versions=ClientStep(
                ok=False,
                error=f"{versions_url} is not HTTPS",
                hint="base_url must be an https:// URL: apps refuse plain HTTP.",
            ),
        )
    try:
        v_status, v_headers, v_body = await _get(
            prober,
            addresses,
            blocklist,
            host=parts.hostname,
            port=parts.port or HTTPS_PORT,
            path=parts.path.rstrip("/") + CLIENT_VERSIONS_PATH,
        )
    except ProbeFailed as e:
        return ClientReport(
            well_known=step,
            base_url=base_url,
            versions=ClientStep(
                ok=False,
                error=f"{versions_url}: no answer: {e}",
                hint="base_url must be reachable over HTTPS with a trusted certificate for"
                " its host: check the DNS record, the reverse proxy and the certificate.",
            ),
        )
    versions, listed = judge_client_versions(versions_url, v_status, v_headers, v_body)
    return ClientReport(well_known=step, base_url=base_url, versions=versions, spec_versions=listed)
