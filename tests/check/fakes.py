"""In-process fakes for the checker: a prober answering canned results per address and
path, a resolver answering a canned resolution, and DNS without SRV or CNAME."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.names import error as dns_error
from twisted.web.http_headers import Headers

from stubserver.check.prober import ProbeFailed, ProbeResult
from stubserver.discovery.resolution import Resolution

JSON_HEADERS = {b"content-type": [b"application/json"]}


def answer(
    body: Any,
    *,
    status: int = 200,
    headers: dict[bytes, list[bytes]] | None = None,
    tls_version: str = "TLS 1.3",
) -> ProbeResult:
    """A probe answer with ``body`` as JSON (bytes pass through)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ProbeResult(
        status=status,
        body=raw,
        headers=Headers(JSON_HEADERS if headers is None else headers),
        certificates=(),
        tls_version=tls_version,
        cipher_suite="TLS_AES_128_GCM_SHA256",
        verify_errors=(),
        name_error=None,
    )


class FakeProber:
    """Answers ``(address, path)`` from a list of outcomes, one per call (the last one
    repeats); records every call."""

    def __init__(self, outcomes: dict[tuple[str, str], list[ProbeResult | ProbeFailed]]):
        self._outcomes = outcomes
        self.calls: list[tuple[str, int, str, str, str]] = []

    def probe(
        self, address: str, port: int, *, tls_server_name: str, host_header: str, path: str
    ) -> Deferred[ProbeResult]:
        self.calls.append((address, port, tls_server_name, host_header, path))
        queue = self._outcomes.get((address, path))
        if not queue:
            return fail(ProbeFailed("connection refused"))
        outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(outcome, ProbeFailed):
            return fail(outcome)
        return succeed(outcome)


class FakeResolver:
    """Answers a canned resolution per server name."""

    def __init__(self, resolutions: dict[str, Resolution]):
        self._resolutions = resolutions

    def resolve(self, server_name: str) -> Deferred[Resolution]:
        return succeed(self._resolutions.get(server_name, Resolution(server_name, error="none")))


class NoSrv:
    """No SRV record and no CNAME for any name."""

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return fail(dns_error.DNSNameError(name))

    def lookupCanonicalName(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return fail(dns_error.DNSNameError(name))


class Addresses:
    """Answers each host from a table (no entry: no address)."""

    def __init__(self, table: dict[str, tuple[str, ...]]):
        self._table = table

    def resolve_addresses(self, host: str) -> Deferred[tuple[str, ...]]:
        return succeed(self._table.get(host, ()))
