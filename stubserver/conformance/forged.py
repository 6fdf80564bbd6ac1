"""Federation requests the suite forges itself: signed with a wrong key, for another
destination, or not signed at all (Server-Server API, "Request Authentication").

The peer's own client always signs correctly, so these are made here: the homeserver is
resolved with ``stubserver resolve NAME --json -c CONFIG`` (the spec's resolution, as
the peer does it), then one HTTPS request goes to the first target's address with the
target's SNI and Host header, trusting the config's CAs (and any ``--ca-file``), with an
X-Matrix header from the peer's signing key (or a wrong one, or none).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from stubserver.auth.xmatrix import sign_request
from stubserver.signing.keys import ServerSigningKey

#: Time allowed for ``stubserver resolve`` and for one forged request, in seconds.
RESOLVE_TIMEOUT_SECONDS: Final = 60.0
REQUEST_TIMEOUT_SECONDS: Final = 30.0
#: Largest answer read, in bytes.
MAX_ANSWER_BYTES: Final = 1024 * 1024


class ResolveFailed(Exception):
    """``stubserver resolve`` gave no usable target."""


@dataclass(frozen=True)
class Target:
    """Where the homeserver's federation API is: what to dial and what to say."""

    address: str
    port: int
    host_header: str
    tls_server_name: str


def resolve(name: str, config_path: Path, ca_files: Sequence[Path] = ()) -> Target:
    """Resolve ``name`` with ``stubserver resolve --json`` as the peer would."""
    argv = [sys.executable, "-m", "stubserver", "resolve", name, "--json", "-c", str(config_path)]
    for ca in ca_files:
        argv += ["--ca-file", str(ca)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise ResolveFailed(
            f"stubserver resolve {name}: no answer in {RESOLVE_TIMEOUT_SECONDS:g} s"
        ) from None
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise ResolveFailed(f"stubserver resolve {name}: {done.stderr.strip()[-500:]}") from None
    targets = [t for t in answer.get("targets") or [] if t.get("addresses")]
    if not targets:
        raise ResolveFailed(f"stubserver resolve {name}: no target ({answer.get('error')})")
    first = targets[0]
    return Target(
        str(first["addresses"][0]),
        int(first["port"]),
        str(first["host_header"]),
        str(first["tls_server_name"]),
    )


def tls_context(ca_files: Sequence[Path]) -> ssl.SSLContext:
    """Verify against the system store and ``ca_files``."""
    context = ssl.create_default_context()
    for ca in ca_files:
        context.load_verify_locations(cafile=str(ca))
    return context


class _TargetConnection(http.client.HTTPSConnection):
    """HTTPS to an address, with the SNI and certificate name of the target."""

    def __init__(self, target: Target, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(target.address, target.port, timeout=timeout, context=context)
        self._target = target
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._target.address, self._target.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self._target.tls_server_name)


def authorization(
    method: str,
    path: str,
    *,
    origin: str,
    destination: str,
    key: ServerSigningKey | None,
    content: Any = None,
) -> dict[str, str]:
    """The Authorization header for a request (none when ``key`` is None) (pure)."""
    if key is None:
        return {}
    header = sign_request(
        method, path, origin=origin, destination=destination, key=key, content=content
    )
    return {"Authorization": header.decode("ascii")}


def exchange(
    target: Target,
    context: ssl.SSLContext,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    body: Any = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> tuple[int, str, bytes]:
    """One request; its status, Content-Type and body bytes (at most
    :data:`MAX_ANSWER_BYTES`). OSError or http.client.HTTPException when no answer came
    within ``timeout`` s."""
    connection = _TargetConnection(target, context, timeout)
    all_headers = {"Host": target.host_header, **headers}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode("utf-8")
        all_headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        data = response.read(MAX_ANSWER_BYTES)
    finally:
        connection.close()
    return response.status, response.getheader("Content-Type") or "", data


def send(
    target: Target,
    context: ssl.SSLContext,
    method: str,
    path: str,
    *,
    headers: dict[str, str],
    body: Any = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> tuple[int, Any]:
    """One request; its status and JSON body (None when not JSON). OSError or
    http.client.HTTPException when no answer came within ``timeout`` s."""
    status, _, data = exchange(
        target, context, method, path, headers=headers, body=body, timeout=timeout
    )
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, None
