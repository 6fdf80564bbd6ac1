"""The control API's fault injection (stubserver.control.faults_api): a real router over
a real ServerFaults, reached by StubTreq."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from twisted.internet.task import Clock

from stubserver.control.faults_api import fault_routes, parse_settings
from stubserver.server.faults import (
    MAX_ERRCODE_CHARS,
    MAX_FAIL_ROUTES,
    MAX_LATENCY_MS,
    MAX_ROUTE_GLOB_CHARS,
    FailRule,
    FaultSettings,
    ServerFaults,
)
from stubserver.server.router import FederationRouter, MatrixError
from tests.support import result_now, stub_treq

TOKEN = "the-token"
URL = "http://127.0.0.1:8009/_stubserver/v1/faults"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEND_GLOB = "/_matrix/federation/v1/send/*"
MAKE_JOIN_GLOB = "/_matrix/federation/v1/make_join/*"
NO_COUNTS = {
    "connections_refused": 0,
    "connections_closed": 0,
    "requests_dropped": 0,
    "requests_failed": 0,
    "requests_delayed": 0,
}


class Harness:
    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.faults = ServerFaults(Clock(), self.rng)
        self.stub = stub_treq(FederationRouter(fault_routes(self.faults, TOKEN)))

    def call(
        self, method: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        d = self.stub.request(method, URL, data=data, headers=AUTH if headers is None else headers)
        self.stub.flush()
        response = result_now(d)
        return response.code, result_now(self.stub.json_content(response))


@pytest.mark.parametrize(
    ("body", "errcode", "named"),
    [
        ([], "M_BAD_JSON", "object"),
        ({"downn": True}, "M_BAD_JSON", "downn"),
        ({"down": "yes"}, "M_INVALID_PARAM", "down"),
        ({"down": 1}, "M_INVALID_PARAM", "down"),
        ({"latency_ms": -1}, "M_INVALID_PARAM", "latency_ms"),
        ({"latency_ms": MAX_LATENCY_MS + 1}, "M_INVALID_PARAM", "latency_ms"),
        ({"latency_ms": 1.5}, "M_INVALID_PARAM", "latency_ms"),
        ({"latency_ms": True}, "M_INVALID_PARAM", "latency_ms"),
        ({"drop_share": 1.01}, "M_INVALID_PARAM", "drop_share"),
        ({"drop_share": -0.1}, "M_INVALID_PARAM", "drop_share"),
        ({"drop_share": "0.5"}, "M_INVALID_PARAM", "drop_share"),
        ({"drop_share": False}, "M_INVALID_PARAM", "drop_share"),
        ({"fail": 502}, "M_INVALID_PARAM", "fail"),
        ({"fail": {}}, "M_MISSING_PARAM", "fail.status"),
        ({"fail": {"status": 502, "route": []}}, "M_BAD_JSON", "fail.route"),
        ({"fail": {"status": 399}}, "M_INVALID_PARAM", "fail.status"),
        ({"fail": {"status": 404, "errcode": 7}}, "M_INVALID_PARAM", "fail.errcode"),
        ({"fail": {"status": 404, "errcode": ""}}, "M_INVALID_PARAM", "fail.errcode"),
        ({"fail": {"status": 404, "errcode": "M NOT"}}, "M_INVALID_PARAM", "fail.errcode"),
        (
            {"fail": {"status": 404, "errcode": "M" * (MAX_ERRCODE_CHARS + 1)}},
            "M_INVALID_PARAM",
            "fail.errcode",
        ),
        ({"fail": {"status": 600}}, "M_INVALID_PARAM", "fail.status"),
        ({"fail": {"status": "502"}}, "M_INVALID_PARAM", "fail.status"),
        ({"fail": {"status": 502, "share": 2}}, "M_INVALID_PARAM", "fail.share"),
        ({"fail": {"status": 502, "routes": []}}, "M_INVALID_PARAM", "fail.routes"),
        ({"fail": {"status": 502, "routes": "/x"}}, "M_INVALID_PARAM", "fail.routes"),
        ({"fail": {"status": 502, "routes": ["no/slash"]}}, "M_INVALID_PARAM", "fail.routes"),
        ({"fail": {"status": 502, "routes": [7]}}, "M_INVALID_PARAM", "fail.routes"),
        (
            {"fail": {"status": 502, "routes": ["/" + "x" * MAX_ROUTE_GLOB_CHARS]}},
            "M_INVALID_PARAM",
            "fail.routes",
        ),
        (
            {"fail": {"status": 502, "routes": ["/x"] * (MAX_FAIL_ROUTES + 1)}},
            "M_INVALID_PARAM",
            "fail.routes",
        ),
        ({"seed": -1}, "M_INVALID_PARAM", "seed"),
        ({"seed": "7"}, "M_INVALID_PARAM", "seed"),
    ],
)
def test_bad_bodies_are_refused_naming_the_key(body: Any, errcode: str, named: str) -> None:
    """Every fault of a PUT body is a 400 with the errcode of its kind, naming the key."""
    with pytest.raises(MatrixError) as caught:
        parse_settings(body)
    assert (caught.value.status, caught.value.errcode) == (400, errcode)
    assert named in caught.value.message


@pytest.mark.parametrize(
    ("body", "settings", "seed"),
    [
        ({}, FaultSettings(), None),
        ({"down": None}, FaultSettings(), None),
        ({"down": True}, FaultSettings(down=True), None),
        ({"down": "reset"}, FaultSettings(down="reset"), None),
        ({"latency_ms": MAX_LATENCY_MS}, FaultSettings(latency_ms=MAX_LATENCY_MS), None),
        ({"drop_share": 1}, FaultSettings(drop_share=1.0), None),
        (
            {"fail": {"status": 502, "routes": [SEND_GLOB], "share": 0.25}, "seed": 9},
            FaultSettings(fail=FailRule(502, (SEND_GLOB,), 0.25)),
            9,
        ),
        ({"fail": {"status": 599}}, FaultSettings(fail=FailRule(599)), None),
        (
            {"fail": {"status": 404, "routes": [MAKE_JOIN_GLOB], "errcode": "M_NOT_FOUND"}},
            FaultSettings(fail=FailRule(404, (MAKE_JOIN_GLOB,), errcode="M_NOT_FOUND")),
            None,
        ),
        ({"fail": {"status": 400}}, FaultSettings(fail=FailRule(400)), None),
    ],
)
def test_good_bodies(body: Any, settings: FaultSettings, seed: int | None) -> None:
    """Good bodies give the settings they say (keys left out: no fault) and the seed."""
    assert parse_settings(body) == (settings, seed)


def test_get_put_delete() -> None:
    """GET answers no faults at first; PUT replaces the faults and answers them; GET
    then shows them; DELETE clears them. Each answer carries the counters and whether
    the listeners listen."""
    h = Harness()
    none: dict[str, Any] = {"down": False, "latency_ms": 0, "drop_share": 0.0, "fail": None}
    quiet = {
        "faults": none,
        "counters": NO_COUNTS,
        "listening": True,
    }
    assert h.call("GET") == (200, quiet)
    failing = {"status": 502, "routes": [SEND_GLOB], "share": 1.0}
    status, answer = h.call("PUT", {"latency_ms": 20, "fail": failing})
    assert status == 200
    assert answer["faults"] == {"down": False, "latency_ms": 20, "drop_share": 0.0, "fail": failing}
    assert h.call("GET") == (200, answer)
    status, replaced = h.call("PUT", {"drop_share": 0.5})
    assert replaced["faults"] == {**none, "drop_share": 0.5}
    assert h.call("DELETE") == (200, quiet)
    assert h.faults.settings == FaultSettings()


def test_get_answer_is_a_put_body() -> None:
    """The faults GET shows can be PUT back as they are (to restore them), an errcode
    other than the default included."""
    h = Harness()
    h.call("PUT", {"down": "reset", "fail": {"status": 500, "share": 0.5}})
    _, shown = h.call("GET")
    assert parse_settings(shown["faults"]) == (h.faults.settings, None)
    h.call("PUT", {"fail": {"status": 404, "errcode": "M_NOT_FOUND"}})
    _, shown = h.call("GET")
    assert shown["faults"]["fail"] == {"status": 404, "share": 1.0, "errcode": "M_NOT_FOUND"}
    assert parse_settings(shown["faults"]) == (h.faults.settings, None)


def test_seed_restarts_the_draws() -> None:
    """A PUT with a seed restarts the share draws from it."""
    h = Harness()
    h.call("PUT", {"drop_share": 0.5, "seed": 42})
    first = [h.rng.random() for _ in range(3)]
    h.call("PUT", {"drop_share": 0.5, "seed": 42})
    assert [h.rng.random() for _ in range(3)] == first


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_token_required(method: str) -> None:
    """Without the control token every method is 401 M_UNKNOWN_TOKEN, and nothing changes."""
    h = Harness()
    status, body = h.call(method, {"down": True}, headers={"Authorization": "Bearer wrong"})
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    assert h.faults.settings == FaultSettings()


def test_bad_put_changes_nothing() -> None:
    """A refused PUT leaves the faults as they were."""
    h = Harness()
    h.call("PUT", {"latency_ms": 5})
    status, body = h.call("PUT", {"latency_ms": 5, "drop_share": 3})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    assert h.faults.settings == FaultSettings(latency_ms=5)
