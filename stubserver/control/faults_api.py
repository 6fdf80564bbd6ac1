"""The control API's fault injection: ``/_stubserver/v1/faults`` (issue 23).

``GET`` answers the server's faults, what they did and whether its listeners listen::

    {"faults": {"down": false, "latency_ms": 0, "drop_share": 0.0, "fail": null},
     "counters": {"connections_refused": 0, "connections_closed": 0,
                  "requests_dropped": 0, "requests_failed": 0, "requests_delayed": 0},
     "listening": true}

``PUT`` replaces the faults with its body (keys left out are no fault) and answers as
``GET`` once they hold; ``DELETE`` clears them (the counters run on from start-up). The
body, checked strictly (400 ``M_BAD_JSON`` for an unknown key, ``M_INVALID_PARAM`` for
a value of the wrong type or out of range, naming the key)::

    {"down": false | true | "reset",
     "latency_ms": 0 .. 60000,
     "drop_share": 0 .. 1,
     "fail": {"status": 400 .. 599, "routes"?: ["/_matrix/federation/v1/send/*", ...],
              "share"?: 0 .. 1 (default 1), "errcode"?: "M_NOT_FOUND" (default M_UNKNOWN)},
     "seed"?: integer}

``seed`` restarts the share draws from that value (deterministic tests); ``routes``
(globs over the path, at most :data:`~stubserver.server.faults.MAX_FAIL_ROUTES` of at
most :data:`~stubserver.server.faults.MAX_ROUTE_GLOB_CHARS` characters, each starting
with ``/``) left out means every request; ``errcode`` (letters, digits, ``_`` and ``.``,
at most :data:`~stubserver.server.faults.MAX_ERRCODE_CHARS`) is the answer's. What each fault does:
:mod:`stubserver.server.faults`. A server whose listeners cannot listen again on
recovery stays down and answers 500 ``M_UNKNOWN``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from stubserver.control.api import PREFIX, JsonObject, check_bearer
from stubserver.server.faults import (
    FAIL_STATUSES,
    INJECTED_ERRCODE,
    MAX_ERRCODE_CHARS,
    MAX_FAIL_ROUTES,
    MAX_LATENCY_MS,
    MAX_ROUTE_GLOB_CHARS,
    NO_FAULTS,
    FailRule,
    FaultSettings,
    ListenerReopenFailed,
    ServerFaults,
)
from stubserver.server.router import HandlerResult, JsonResponse, MatrixError, Route, read_json_body

#: The keys of a ``PUT`` body and of its ``fail`` object.
SETTINGS_KEYS: Final = frozenset({"down", "latency_ms", "drop_share", "fail", "seed"})
FAIL_KEYS: Final = frozenset({"status", "routes", "share", "errcode"})
#: What a ``fail.errcode`` may be (the spec's errcodes and namespaced ones).
ERRCODE: Final = re.compile(r"[A-Za-z0-9_.]+")
#: Largest ``seed`` (JSON's safe integers).
MAX_SEED: Final = 2**53 - 1
#: The ``down`` mode that keeps listening and resets every connection.
RESET: Final = "reset"


def _invalid(key: str, what: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", f"{key!r} must be {what}")


def _int_in(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(key, f"an integer from {low} to {high}")
    return value


def _share(value: Any, key: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise _invalid(key, "a number from 0 to 1")
    return float(value)


def _routes(value: Any) -> tuple[str, ...]:
    key = "fail.routes"
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_FAIL_ROUTES
        or not all(
            isinstance(glob, str) and glob.startswith("/") and len(glob) <= MAX_ROUTE_GLOB_CHARS
            for glob in value
        )
    ):
        raise _invalid(
            key,
            f"a list of 1 to {MAX_FAIL_ROUTES} path globs starting with '/',"
            f" each at most {MAX_ROUTE_GLOB_CHARS} characters (leave it out for every path)",
        )
    return tuple(value)


def _errcode(value: Any) -> str:
    if (
        not isinstance(value, str)
        or len(value) > MAX_ERRCODE_CHARS
        or ERRCODE.fullmatch(value) is None
    ):
        raise _invalid(
            "fail.errcode",
            f"a string of 1 to {MAX_ERRCODE_CHARS} letters, digits, '_' or '.' (M_NOT_FOUND)",
        )
    return value


def _fail_rule(value: Any) -> FailRule:
    if not isinstance(value, dict):
        raise _invalid("fail", "an object or null")
    unknown = sorted(str(k) for k in value if k not in FAIL_KEYS)
    if unknown:
        raise MatrixError(400, "M_BAD_JSON", f"unknown key 'fail.{unknown[0]}'")
    if "status" not in value:
        raise MatrixError(400, "M_MISSING_PARAM", "'fail.status' is required")
    status = _int_in(value["status"], "fail.status", FAIL_STATUSES.start, FAIL_STATUSES.stop - 1)
    routes = _routes(value["routes"]) if "routes" in value else ()
    share = _share(value["share"], "fail.share") if "share" in value else 1.0
    errcode = _errcode(value["errcode"]) if "errcode" in value else INJECTED_ERRCODE
    return FailRule(status, routes, share, errcode)


def parse_settings(body: Any) -> tuple[FaultSettings, int | None]:
    """The faults a ``PUT`` body asks for, and its ``seed`` (None when absent); a
    MatrixError 400 naming the key at the first fault (pure)."""
    checked = JsonObject(body, SETTINGS_KEYS)
    down = checked.raw("down")
    if down is None:
        down = False
    if not isinstance(down, bool) and down != RESET:
        raise _invalid("down", 'true, false or "reset"')
    latency = checked.raw("latency_ms")
    drop = checked.raw("drop_share")
    fail = checked.raw("fail")
    seed = checked.raw("seed")
    settings = FaultSettings(
        down=down,
        latency_ms=0 if latency is None else _int_in(latency, "latency_ms", 0, MAX_LATENCY_MS),
        drop_share=0.0 if drop is None else _share(drop, "drop_share"),
        fail=None if fail is None else _fail_rule(fail),
    )
    return settings, None if seed is None else _int_in(seed, "seed", 0, MAX_SEED)


def fault_routes(faults: ServerFaults, token: str, prefix: str = PREFIX) -> list[Route]:
    """``GET``, ``PUT`` and ``DELETE`` ``<prefix>/faults`` over ``faults``, guarded by
    ``token`` (the control API's bearer token). ``prefix``: where one server's control
    routes start (``/_stubserver/v1``, or a virtual server's own prefix)."""
    token_bytes = token.encode("utf-8")

    def answer(_: object = None) -> JsonResponse:
        return JsonResponse(200, faults.to_json())

    def still_down(failure: Failure) -> JsonResponse | Failure:
        if not isinstance(failure.value, ListenerReopenFailed):
            return failure
        return JsonResponse(
            500, {"errcode": "M_UNKNOWN", "error": str(failure.value), **faults.to_json()}
        )

    def get(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        check_bearer(request, token_bytes)
        return answer()

    def put(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        check_bearer(request, token_bytes)
        settings, seed = parse_settings(read_json_body(request))
        if seed is not None:
            faults.seed(seed)
        return faults.apply(settings).addCallbacks(answer, still_down)

    def delete(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        check_bearer(request, token_bytes)
        return faults.apply(NO_FAULTS).addCallbacks(answer, still_down)

    path = f"{prefix}/faults"
    return [Route("GET", path, get), Route("PUT", path, put), Route("DELETE", path, delete)]
