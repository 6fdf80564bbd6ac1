"""A client of the control API of a running ``stubserver run``: where it listens (from the
config), one request with the bearer token, and its answer or typed failure.

Contract: DESIGN.md, "Rooms and the control API". The address is the config's first
``control`` listener (a wildcard bind address is reached on loopback) and the token its
``control_token``. The control API is our own, on loopback: a plain synchronous HTTP
client is enough (no reactor). Used by ``stubserver room ...`` and the demo.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from stubserver.config import Config, ConfigError
from stubserver.http_json import HttpEndpoint, TransportError

#: The exit status of a command whose request the control API refused, or that could not
#: be made (1); of bad usage or configuration, including a 400 or 401 (2).
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
#: Time allowed for requests that do not long-poll (a remote join chains several), seconds.
HTTP_TIMEOUT_SECONDS: Final = 300.0
PREFIX: Final = "/_stubserver/v1"
_WILDCARDS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


@dataclass(frozen=True)
class ControlAnswer:
    """An answer of the control API: status and JSON body."""

    status: int
    body: Any


class ControlUnreachable(Exception):
    """The control API could not be reached (or answered something that is not JSON)."""


#: ``transport(method, path_and_query, body, timeout_seconds)`` -> the answer.
Transport = Callable[[str, str, Any, float], ControlAnswer]


@dataclass(frozen=True)
class ControlEndpoint:
    """Where the control API listens and the token it wants."""

    host: str
    port: int
    token: str


def control_endpoint(config: Config) -> ControlEndpoint:
    """The control API of ``config``; ConfigError when it has none or no fixed port."""
    for index, listener in enumerate(config.listeners):
        if not listener.is_control:
            continue
        if listener.port == 0:
            raise ConfigError(
                f"listeners[{index}].port", "the control port is 0 (chosen at start-up): fix one"
            )
        address = listener.bind_addresses[0] if listener.bind_addresses else "127.0.0.1"
        address = _WILDCARDS.get(address, address)
        if config.control_token is None:
            raise ConfigError("control_token", "required when a listener serves control")
        return ControlEndpoint(address, listener.port, config.control_token)
    raise ConfigError("listeners", "no listener serves control: the room commands need one")


def http_transport(endpoint: ControlEndpoint) -> Transport:
    """A :data:`Transport` over ``http.client`` to ``endpoint``."""
    control = HttpEndpoint("http", endpoint.host, endpoint.port, None)

    def send(method: str, path: str, body: Any, timeout: float) -> ControlAnswer:
        headers = {"Authorization": f"Bearer {endpoint.token}"}
        try:
            answer = control.request(method, path, body, headers=headers, timeout=timeout)
        except TransportError as e:
            where = f"{endpoint.host}:{endpoint.port}"
            raise ControlUnreachable(
                f"cannot reach the control API at {where} (is `stubserver run` running?): {e}"
            ) from None
        return ControlAnswer(answer.status, answer.body)

    return send


def for_server(transport: Transport, server_name: str) -> Transport:
    """``transport`` addressing server ``server_name`` of a ``run`` serving several
    (issue 23): every control path moves under ``/_stubserver/v1/servers/{name}``."""
    prefix = f"{PREFIX}/servers/{quote(server_name, safe=':')}"

    def send(method: str, path: str, body: Any, timeout: float) -> ControlAnswer:
        if path.startswith(PREFIX + "/"):
            path = prefix + path[len(PREFIX) :]
        return transport(method, path, body, timeout)

    return send


class CommandFailed(Exception):
    """The control API refused the request: ``answer`` says why; ``status`` is the exit."""

    def __init__(self, answer: ControlAnswer, exit_status: int) -> None:
        super().__init__(describe_error(answer))
        self.answer = answer
        self.exit_status = exit_status


def describe_error(answer: ControlAnswer) -> str:
    """One or two lines for a person: the error, and a remote's answer when there is one."""
    body = answer.body if isinstance(answer.body, dict) else {}
    text = f"{body.get('errcode', 'HTTP ' + str(answer.status))}: {body.get('error', '')}"
    if "remote_status" in body:
        remote = json.dumps(body.get("remote_body"), sort_keys=True)
        text += f"\nremote answered HTTP {body['remote_status']}: {remote}"
    return text


def call(
    transport: Transport,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = HTTP_TIMEOUT_SECONDS,
) -> Any:
    """The JSON answer of one control request; CommandFailed on a non-2xx."""
    answer = transport(method, PREFIX + path, body, timeout)
    if 200 <= answer.status < 300:
        return answer.body
    bad_usage = answer.status in (400, 401)
    raise CommandFailed(answer, EXIT_USAGE if bad_usage else EXIT_FAILED)


def room_path(room: str) -> str:
    """``/rooms/<room>`` with the room ID or alias percent-encoded (``#`` and all)."""
    return "/rooms/" + quote(room, safe="")
