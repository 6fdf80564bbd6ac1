"""One synchronous JSON request over ``http.client`` (no reactor in the test process).

Shared by the control API's clients (``stubserver room`` and ``stubserver.testing``'s Peer,
plain HTTP on loopback) and ``stubserver.testing``'s homeserver client
(HTTPS verified against the system store or a CA file given, or plain HTTP to a loopback
address). Answers are read up to :data:`MAX_ANSWER_BYTES`.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

#: Largest answer read, in bytes.
MAX_ANSWER_BYTES: Final = 64 * 1024 * 1024
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


@dataclass(frozen=True)
class HttpAnswer:
    """A status and the JSON body (None when the body was empty)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        """True for a 2xx."""
        return 200 <= self.status < 300


@dataclass(frozen=True)
class RawAnswer:
    """A status, the headers (names lower-cased; a repeated one: its last value) and the
    body's bytes."""

    status: int
    headers: Mapping[str, str]
    data: bytes


class TransportError(Exception):
    """The request could not be made or its answer read (connection, TLS, timeout, not JSON)."""


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (pure)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HttpEndpoint:
    """Where requests go: scheme, host and port, and the TLS context for https."""

    scheme: str
    host: str
    port: int
    tls: ssl.SSLContext | None

    @classmethod
    def from_url(
        cls, url: str, *, ca_file: str | Path | None = None, allow_plain_http: bool = False
    ) -> HttpEndpoint:
        """Parse ``https://host[:port]`` or ``http://host[:port]``.

        HTTPS is verified against ``ca_file`` when given, else the system's store. Plain
        HTTP is refused (ValueError) unless the host is loopback or ``allow_plain_http``:
        access tokens would cross the network in clear.
        """
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{url!r}: give the base URL only (no path or query)")
        if parts.scheme == "http" and not (is_loopback_host(host) or allow_plain_http):
            raise ValueError(f"{url!r}: plain http is only used to loopback; use https")
        tls = None
        if parts.scheme == "https":
            tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, host, port, tls)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        timeout: float,
    ) -> HttpAnswer:
        """Send ``body`` as JSON (when not None); the answer's status and parsed JSON."""
        all_headers = dict(headers or {})
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        answer = self.exchange(method, path, payload, headers=all_headers, timeout=timeout)
        try:
            parsed = json.loads(answer.data) if answer.data else None
        except ValueError:
            raise TransportError(
                f"{method} {path}: the answer (HTTP {answer.status}) is not JSON: "
                f"{answer.data[:200]!r}"
            ) from None
        return HttpAnswer(answer.status, parsed)

    def exchange(
        self,
        method: str,
        path: str,
        payload: bytes | None = None,
        *,
        headers: dict[str, str] | None = None,
        timeout: float,
    ) -> RawAnswer:
        """Send ``payload`` as it is; the answer's status, headers and bytes (media)."""
        connection: http.client.HTTPConnection
        if self.tls is not None:
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.tls
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=payload, headers=dict(headers or {}))
            response = connection.getresponse()
            data = response.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException) as e:
            raise TransportError(
                f"{method} {self.scheme}://{self.host}:{self.port}{path} failed: {e}"
            ) from None
        finally:
            connection.close()
        if len(data) > MAX_ANSWER_BYTES:
            raise TransportError(f"{method} {path}: the answer is over {MAX_ANSWER_BYTES} bytes")
        names = {name.lower(): value for name, value in response.getheaders()}
        return RawAnswer(response.status, names, data)
