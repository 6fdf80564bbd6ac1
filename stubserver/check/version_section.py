"""The ``Version`` section of the ``check`` report: every connection is asked for
``GET /_matrix/federation/v1/version`` (a proxy sending some requests to another backend
shows as different versions), and the report shows the first connection's answer.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence

from stubserver.check.prober import ProbeFailed, Prober, json_or_none, probe_with_retry
from stubserver.check.report import CheckWarning
from stubserver.check.tester_fields import VersionReport
from stubserver.check.warning_rules import connection_retried, not_json_content_type
from stubserver.discovery.resolution import Target

VERSION_PATH = "/_matrix/federation/v1/version"


async def probe_version(
    prober: Prober,
    target: Target,
    address: str,
    joined: str,
    *,
    versions: MutableMapping[str, str],
    version_names: MutableMapping[str, tuple[str, str]],
    version_errors: MutableMapping[str, str],
    warnings: list[CheckWarning],
) -> None:
    """Ask one connection (``joined``, its ``ip:port``) for the version: its answer goes
    to ``versions`` ("name version") and ``version_names``, its failure to
    ``version_errors``, what is fragile about it to ``warnings``."""
    try:
        probe, first_error = await probe_with_retry(
            prober,
            address,
            target.port,
            tls_server_name=target.tls_server_name,
            host_header=target.host_header,
            path=VERSION_PATH,
        )
    except ProbeFailed as e:
        version_errors[joined] = str(e)
        return
    if first_error is not None:
        warnings.append(connection_retried(joined, first_error))
    body = json_or_none(probe.body)
    server = body.get("server") if isinstance(body, dict) else None
    if probe.status != 200 or not isinstance(server, dict):
        version_errors[joined] = f"GET {VERSION_PATH} answered {probe.status}"
        return
    content_type = not_json_content_type(
        joined, VERSION_PATH, probe.headers.getRawHeaders(b"content-type")
    )
    if content_type is not None:
        warnings.append(content_type)
    name, version = str(server.get("name", "")), str(server.get("version", ""))
    versions[joined] = f"{name} {version}".strip()
    version_names[joined] = (name, version)


def version_report(
    addresses: Sequence[str],
    version_names: Mapping[str, tuple[str, str]],
    version_errors: Mapping[str, str],
    connection_errors: Mapping[str, str],
) -> VersionReport:
    """``Version``: the first connection's answer (in the order of ``DNSResult.Addrs``),
    else the first error."""
    for joined in addresses:
        if joined in version_names:
            name, version = version_names[joined]
            return VersionReport(name=name, version=version)
    for joined in addresses:
        if joined in version_errors:
            return VersionReport(error=version_errors[joined])
    for joined in addresses:
        if joined in connection_errors:
            return VersionReport(error=connection_errors[joined])
    return VersionReport(error="no address answered")
